"""TriPlaneNet training losses (``tpn:training/coach.py``, ``tpn:training/coach_v2.py``, ``tpn:criteria/``).

Every loss returns ``(total, terms)``: ``total`` is the scalar tensor to back-propagate, ``terms`` a
dict of plain floats for logging (the official names: ``loss_l2_psp``, ``loss_lpips_triplane``, ...,
plus the branch total ``loss_psp`` / ``loss_triplane``). A term whose weight is 0 is not computed. A
term whose network is absent (``LossNets.lpips`` / ``.arcface`` / the discriminator is None) is skipped
and reported as ``skipped_<name>: <weight>``, so tiny runs work without the LPIPS and ArcFace files.

Images are [B, 3, 256, 256] in [-1, 1] (renders resized to 256, like the official ``y_hat_resized``).

v1:  pSp      = 1.0 MSE + 0.8 LPIPS + 0.1 ID
     tri-plane = 1.0 smooth-L1 (beta 1) + 0.1 LPIPS + 0.1 ID
v2:  each branch adds ``mirror_lambda`` x its mirror loss (render at the mirrored camera vs the flipped
     input; pixel terms averaged over channels, divided by (confidence + 1), then averaged); the
     tri-plane branch may add the non-saturating GAN loss; the discriminator uses the logistic loss
     and a lazy R1 penalty.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

from vidtriplane.models.arcface import FaceEmbedder
from vidtriplane.models.lpips import LPIPS
from vidtriplane.config.train import LossConfig

Terms = dict[str, float]
# The face region of a 256 image fed to ArcFace (``tpn:criteria/id_loss.py``): rows 35:223, cols 32:220.
ID_CROP_256 = (35, 223, 32, 220)


@dataclass(frozen=True)
class LossNets:
    """The frozen networks the losses use; None skips the terms that need them."""

    lpips: LPIPS | None = None
    """AlexNet LPIPS (``vidtriplane.checkpoints.load_lpips``)."""
    arcface: FaceEmbedder | None = None
    """ArcFace IR-SE-50 (``load_face_embedder(path, FaceEmbedderConfig.ir_se50())``)."""


# ---------------------------------------------------------------------------------------------------
# Single terms


def id_crop(img: torch.Tensor) -> torch.Tensor:
    """The ID loss's face crop: rows 35:223, cols 32:220 of a 256 image (scaled for other sizes)."""
    h, w = img.shape[-2:]
    r0, r1, c0, c1 = ID_CROP_256
    return img[..., round(r0 * h / 256):round(r1 * h / 256), round(c0 * w / 256):round(c1 * w / 256)]


def id_embedding(arcface: FaceEmbedder, img: torch.Tensor) -> torch.Tensor:
    """Crop the face region, adaptive-average-pool it to the embedder's size, embed: [B, D] unit vectors."""
    size = arcface.config.input_size
    return arcface(F.adaptive_avg_pool2d(id_crop(img), (size, size)))


def id_loss(arcface: FaceEmbedder, y_hat: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``mean_b(1 - <e(y_hat_b), e(x_b)>)``; the target embedding is detached."""
    target = id_embedding(arcface, x).detach()
    return (1 - (id_embedding(arcface, y_hat) * target).sum(dim=1)).mean()


def conf_weighted_mean(per_pixel: torch.Tensor, conf: torch.Tensor | None, eps: float) -> torch.Tensor:
    """Mean over channels, divided by ``conf + eps`` per pixel (conf [B, H, W] or [B, 1, H, W]), mean."""
    loss = per_pixel.mean(dim=1)
    if conf is not None:
        if conf.numel() != loss.numel():
            raise ValueError(f"confidence map {list(conf.shape)} does not match the images "
                             f"{list(per_pixel.shape)} (expected [B, H, W])")
        loss = loss / (conf.reshape(loss.shape) + eps)
    return loss.mean()


def _check_pair(y_hat: torch.Tensor, x: torch.Tensor) -> None:
    if y_hat.shape != x.shape or y_hat.ndim != 4:
        raise ValueError(f"loss needs a render and a target of one [B, 3, H, W] shape, got {list(y_hat.shape)} "
                         f"and {list(x.shape)}")


def _weighted(parts: list[tuple[str, float, Callable[[], torch.Tensor] | None]], like: torch.Tensor,
              total_name: str) -> tuple[torch.Tensor, Terms]:
    """Sum ``weight * compute()`` over the parts; weight 0 = off; compute None = network absent (reported)."""
    total = like.new_zeros(())
    terms: Terms = {}
    for name, weight, compute in parts:
        if weight == 0:
            continue
        if compute is None:
            terms[f"skipped_{name}"] = float(weight)
            continue
        value = compute()
        terms[name] = float(value.detach())
        total = total + weight * value
    terms[total_name] = float(total.detach())
    return total, terms


def _lpips_term(nets: LossNets, y_hat: torch.Tensor, x: torch.Tensor) -> Callable[[], torch.Tensor] | None:
    return None if nets.lpips is None else (lambda: nets.lpips(y_hat, x).mean())


def _id_term(nets: LossNets, y_hat: torch.Tensor, x: torch.Tensor) -> Callable[[], torch.Tensor] | None:
    return None if nets.arcface is None else (lambda: id_loss(nets.arcface, y_hat, x))


# ---------------------------------------------------------------------------------------------------
# Branch losses (v1, and the main part of v2)


def psp_loss(y_hat: torch.Tensor, x: torch.Tensor, nets: LossNets, cfg: LossConfig) -> tuple[torch.Tensor, Terms]:
    """First branch: ``l2 * MSE + lpips * LPIPS + id * ID`` of the pSp render ``y_hat`` against ``x``."""
    _check_pair(y_hat, x)
    return _weighted([
        ("loss_id_psp", cfg.id_lambda_psp, _id_term(nets, y_hat, x)),
        ("loss_l2_psp", cfg.l2_lambda_psp, lambda: F.mse_loss(y_hat, x)),
        ("loss_lpips_psp", cfg.lpips_lambda_psp, _lpips_term(nets, y_hat, x)),
    ], y_hat, "loss_psp")


def triplane_loss(y_hat: torch.Tensor, x: torch.Tensor, nets: LossNets,
                  cfg: LossConfig) -> tuple[torch.Tensor, Terms]:
    """Second branch: ``l1 * smooth-L1 + lpips * LPIPS + id * ID`` of the tri-plane render against ``x``."""
    _check_pair(y_hat, x)
    return _weighted([
        ("loss_id_triplane", cfg.id_lambda_triplane, _id_term(nets, y_hat, x)),
        ("loss_l1_triplane", cfg.l1_lambda_triplane, lambda: F.smooth_l1_loss(y_hat, x, beta=cfg.smooth_l1_beta)),
        ("loss_lpips_triplane", cfg.lpips_lambda_triplane, _lpips_term(nets, y_hat, x)),
    ], y_hat, "loss_triplane")


# ---------------------------------------------------------------------------------------------------
# v2 mirror losses


def psp_mirror_loss(y_mirror: torch.Tensor, x_mirror: torch.Tensor, conf: torch.Tensor | None, nets: LossNets,
                    cfg: LossConfig) -> tuple[torch.Tensor, Terms]:
    """pSp render at the mirrored camera vs the flipped input: ID, LPIPS and confidence-weighted MSE."""
    _check_pair(y_mirror, x_mirror)
    return _weighted([
        ("loss_id_psp_mirror", cfg.id_lambda_psp_mirror, _id_term(nets, y_mirror, x_mirror)),
        ("loss_lpips_psp_mirror", cfg.lpips_lambda_psp_mirror, _lpips_term(nets, y_mirror, x_mirror)),
        ("loss_l2_psp_mirror", cfg.l2_lambda_psp_mirror,
         lambda: conf_weighted_mean(torch.square(x_mirror - y_mirror), conf, cfg.conf_eps)),
    ], y_mirror, "loss_psp_mirror")


def triplane_mirror_loss(y_mirror: torch.Tensor, x_mirror: torch.Tensor, conf: torch.Tensor | None,
                         nets: LossNets, cfg: LossConfig) -> tuple[torch.Tensor, Terms]:
    """Tri-plane render at the mirrored camera vs the flipped input: ID, LPIPS, confidence-weighted smooth-L1."""
    _check_pair(y_mirror, x_mirror)

    def smooth_l1() -> torch.Tensor:
        per_pixel = F.smooth_l1_loss(y_mirror, x_mirror, reduction="none", beta=cfg.smooth_l1_beta)
        return conf_weighted_mean(per_pixel, conf, cfg.conf_eps)

    return _weighted([
        ("loss_id_triplane_mirror", cfg.id_lambda_triplane_mirror, _id_term(nets, y_mirror, x_mirror)),
        ("loss_lpips_triplane_mirror", cfg.lpips_lambda_triplane_mirror, _lpips_term(nets, y_mirror, x_mirror)),
        ("loss_l1_triplane_mirror", cfg.l1_lambda_triplane_mirror, smooth_l1),
    ], y_mirror, "loss_triplane_mirror")


def _with_mirror(main: tuple[torch.Tensor, Terms], mirror: tuple[torch.Tensor, Terms], cfg: LossConfig,
                 name: str) -> tuple[torch.Tensor, Terms]:
    total = main[0] + cfg.mirror_lambda * mirror[0]
    return total, {**main[1], **mirror[1], f"{name}_total": float(total.detach())}


def psp_loss_v2(y_hat: torch.Tensor, x: torch.Tensor, y_mirror: torch.Tensor, x_mirror: torch.Tensor,
                conf: torch.Tensor | None, nets: LossNets, cfg: LossConfig) -> tuple[torch.Tensor, Terms]:
    """v2 first branch: ``psp_loss + mirror_lambda * psp_mirror_loss`` (``loss_psp_total`` in the terms)."""
    if cfg.mirror_lambda == 0:
        return psp_loss(y_hat, x, nets, cfg)
    return _with_mirror(psp_loss(y_hat, x, nets, cfg), psp_mirror_loss(y_mirror, x_mirror, conf, nets, cfg),
                        cfg, "loss_psp")


def triplane_loss_v2(y_hat: torch.Tensor, x: torch.Tensor, y_mirror: torch.Tensor, x_mirror: torch.Tensor,
                     conf: torch.Tensor | None, nets: LossNets, cfg: LossConfig) -> tuple[torch.Tensor, Terms]:
    """v2 second branch: ``triplane_loss + mirror_lambda * triplane_mirror_loss`` (``loss_triplane_total``)."""
    if cfg.mirror_lambda == 0:
        return triplane_loss(y_hat, x, nets, cfg)
    return _with_mirror(triplane_loss(y_hat, x, nets, cfg),
                        triplane_mirror_loss(y_mirror, x_mirror, conf, nets, cfg), cfg, "loss_triplane")


# ---------------------------------------------------------------------------------------------------
# v2 GAN terms (StyleGAN2 non-saturating logistic loss with lazy R1)

DiscriminatorFn = Callable[[torch.Tensor], torch.Tensor]


def generator_adv_loss(discriminator: DiscriminatorFn | None, fake: torch.Tensor,
                       cfg: LossConfig) -> tuple[torch.Tensor, Terms]:
    """``adv_lambda * mean(softplus(-D(fake)))`` for the tri-plane branch (``loss_G_adv`` is unweighted)."""
    if discriminator is None or cfg.adv_lambda == 0:
        terms = {"skipped_loss_G_adv": float(cfg.adv_lambda)} if cfg.adv_lambda else {}
        return fake.new_zeros(()), terms
    value = F.softplus(-discriminator(fake)).mean()
    return cfg.adv_lambda * value, {"loss_G_adv": float(value.detach())}


def discriminator_loss(discriminator: DiscriminatorFn, real: torch.Tensor,
                       fake: torch.Tensor) -> tuple[torch.Tensor, Terms]:
    """Logistic loss ``(mean softplus(-D(real)) + mean softplus(D(fake))) / 2``; ``fake`` is detached."""
    real_loss = F.softplus(-discriminator(real)).mean()
    fake_loss = F.softplus(discriminator(fake.detach())).mean()
    loss = (real_loss + fake_loss) / 2
    return loss, {"loss_D": float(loss.detach())}


def r1_penalty(discriminator: DiscriminatorFn, real: torch.Tensor, cfg: LossConfig) -> tuple[torch.Tensor, Terms]:
    """Lazy R1: ``gamma / 2 * mean_b ||d sum D(real) / d real_b||^2 * r1_every`` (run every ``r1_every`` steps)."""
    real = real.detach().requires_grad_(True)
    logits = discriminator(real).reshape(real.shape[0], -1).mean(dim=1)
    (grad,) = torch.autograd.grad(outputs=logits.sum(), inputs=real, create_graph=True)
    penalty = grad.square().reshape(grad.shape[0], -1).sum(dim=1).mean()
    loss = cfg.r1_gamma / 2 * penalty * cfg.r1_every
    return loss, {"loss_D_r1_reg": float(loss.detach())}


def r1_due(step: int, cfg: LossConfig) -> bool:
    """Whether the R1 penalty runs at this (global) step: every ``r1_every`` steps, as ``step % r1_every == 0``."""
    return step % cfg.r1_every == 0


__all__ = [
    "ID_CROP_256", "LossNets", "Terms", "conf_weighted_mean", "discriminator_loss", "generator_adv_loss", "id_crop",
    "id_embedding", "id_loss", "psp_loss", "psp_loss_v2", "psp_mirror_loss", "r1_due", "r1_penalty",
    "triplane_loss", "triplane_loss_v2", "triplane_mirror_loss",
]
