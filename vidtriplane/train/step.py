"""The forward passes and objectives of one training step (``tpn:models/triplanenet.py``, ``tpn:training/coach.py``, ``tpn:training/coach_v2.py``).

The two branches are separate on purpose (``tpn:training/coach.py``): the pSp loss reaches the pSp
encoder through the frozen generator; the tri-plane branch reads *detached* codes, planes and images, so
its loss reaches only the tri-plane encoder. Inference (``TriPlaneNet.encode``) shares the backbone
planes between the branches; training must not, or the tri-plane loss would leak into pSp.
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any, Optional

import torch

from vidtriplane.config.train import TrainConfig
from vidtriplane.geometry.camera import flip_yaw, lookat_cam2world, with_pose
from vidtriplane.models.triplanenet import pool_to
from vidtriplane.train import losses
from vidtriplane.train.data import draw_cameras, render_synthetic, resize_image


@dataclass(frozen=True)
class StepInputs:
    """One batch on the device, synthetic rows rendered."""

    x: torch.Tensor
    """Inputs [B, 3, S, S] in [-1, 1] at the encoders' size (256; 64 for the tiny model)."""
    c: torch.Tensor
    """Camera labels [B, 25]."""
    x_mirror: torch.Tensor
    """Left-right flipped inputs (v2)."""
    c_mirror: torch.Tensor
    """Their cameras (``flip_yaw``)."""
    conf: torch.Tensor
    """Confidence maps [B, S, S] of the mirrored view (zeros = weight 1)."""
    x_full: Optional[torch.Tensor] = None
    """The images at the generator's output size (the discriminator's real samples), when the GAN runs."""


def render_kwargs(cfg: TrainConfig) -> dict[str, Any]:
    t = cfg.train
    return {"noise_mode": "const", "sampling": t.sampling, "depth_samples": t.depth_samples,
            "importance_samples": t.importance_samples}


def prepare(batch: dict[str, torch.Tensor], generator, cfg: TrainConfig, *, input_size: int,
            device: torch.device, full: bool) -> StepInputs:
    """Move a collated batch to ``device``, render its synthetic rows, derive the inputs and mirror views."""
    batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
    image = render_synthetic(batch, generator, psi=cfg.data.truncation_psi, cutoff=cfg.data.truncation_cutoff,
                             depth_samples=cfg.train.depth_samples, importance_samples=cfg.train.importance_samples)
    x = resize_image(image, input_size)
    c = batch["label"].float()
    return StepInputs(x=x, c=c, x_mirror=x.flip(-1), c_mirror=flip_yaw(c), conf=batch["conf"],
                      x_full=image if full else None)


@dataclass(frozen=True)
class FirstBranch:
    codes: torch.Tensor
    backbone: torch.Tensor
    y: torch.Tensor
    """pSp render at the input camera, pooled to the input size."""
    y_mirror: Optional[torch.Tensor]
    """v2: pSp render at the mirror camera."""


@dataclass(frozen=True)
class SecondBranch:
    planes: torch.Tensor
    y: torch.Tensor
    """Tri-plane render at the input camera, pooled."""
    y_mirror: Optional[torch.Tensor]
    """v2: tri-plane render at the mirror camera, pooled."""


def first_branch(net, inp: StepInputs, kw: dict, *, version: int) -> FirstBranch:
    """1. codes = pSp(x) + latent_avg; 2. backbone planes; 3. renders at the input (and v2 mirror) camera."""
    size = tuple(inp.x.shape[-2:])
    codes = net.encode_codes(inp.x)
    backbone = net.decoder.backbone_planes(codes, noise_mode=kw["noise_mode"])
    y = pool_to(net.decoder.synthesis(codes, inp.c, planes=backbone, **kw).image, size)
    y_m = None
    if version == 2:
        y_m = pool_to(net.decoder.synthesis(codes, inp.c_mirror, planes=backbone, **kw).image, size)
    return FirstBranch(codes=codes, backbone=backbone, y=y, y_mirror=y_m)


def refined_planes(net, inp: StepInputs, first: FirstBranch, *, version: int) -> torch.Tensor:
    """The tri-plane encoder on detached inputs: backbone + offsets (v1) or the refined planes (v2)."""
    backbone, y, x = first.backbone.detach(), first.y.detach(), inp.x.detach()
    if version == 1:
        return backbone + net.refine(x, y)
    y_m = first.y_mirror.detach()
    return net.triplanenet_encoder(torch.cat([y, x - y, inp.x_mirror.detach() - y_m], dim=1), backbone)


def second_branch(net, inp: StepInputs, first: FirstBranch, kw: dict, *, version: int) -> SecondBranch:
    """Refined planes from detached inputs, rendered with the detached codes at the input (v2: and mirror) camera."""
    size = tuple(inp.x.shape[-2:])
    codes = first.codes.detach()
    planes = refined_planes(net, inp, first, version=version)
    y = pool_to(net.decoder.synthesis(codes, inp.c, planes=planes, **kw).image, size)
    y_m = None
    if version == 2:
        y_m = pool_to(net.decoder.synthesis(codes, inp.c_mirror, planes=planes, **kw).image, size)
    return SecondBranch(planes=planes, y=y, y_mirror=y_m)


def psp_objective(first: FirstBranch, inp: StepInputs, nets: losses.LossNets, cfg: TrainConfig):
    """(loss to back-propagate, terms): v1 pSp loss, or v2's with the mirror term."""
    y = first.y.float()
    if cfg.model.version == 1:
        return losses.psp_loss(y, inp.x, nets, cfg.loss)
    return losses.psp_loss_v2(y, inp.x, first.y_mirror.float(), inp.x_mirror, inp.conf, nets, cfg.loss)


def triplane_objective(second: SecondBranch, inp: StepInputs, nets: losses.LossNets, cfg: TrainConfig):
    """(loss to back-propagate, terms): v1 tri-plane loss, or v2's with the mirror term."""
    y = second.y.float()
    if cfg.model.version == 1:
        return losses.triplane_loss(y, inp.x, nets, cfg.loss)
    return losses.triplane_loss_v2(y, inp.x, second.y_mirror.float(), inp.x_mirror, inp.conf, nets, cfg.loss)


def branch_total(terms: dict[str, float], branch: str) -> float:
    """The number a branch minimised: ``loss_<branch>_total`` (v2 with mirror terms) or ``loss_<branch>``."""
    return terms.get(f"loss_{branch}_total", terms[f"loss_{branch}"])


def adversarial_camera(inp: StepInputs, cfg: TrainConfig, pool: Optional[torch.Tensor]) -> torch.Tensor:
    """The v2 GAN's fake view (``tpn:training/coach_v2.py``): half the time a camera sampled from the training
    labels (``pool``; drawn like the synthetic cameras without one), else the input or the mirror camera."""
    n = inp.c.shape[0]
    if random.random() > 0.5:
        if pool is not None and len(pool):
            rows = torch.randint(len(pool), (n,))
            return pool[rows].to(inp.c)
        return draw_cameras(None, n, cfg.data.camera)[0].to(inp.c)
    return inp.c if random.random() > 0.5 else inp.c_mirror


def adversarial_fake(net, inp: StepInputs, first: FirstBranch, camera: torch.Tensor, kw: dict, *,
                     version: int) -> torch.Tensor:
    """The tri-plane branch re-run with its current weights, rendered at ``camera`` at full size."""
    planes = refined_planes(net, inp, first, version=version)
    return net.decoder.synthesis(first.codes.detach(), camera, planes=planes, **kw).image


@torch.no_grad()
def preview(net, inp: StepInputs, *, yaw: float, count: int = 4, **kw) -> list[torch.Tensor]:
    """Grid columns for up to ``count`` samples: input | first branch | final | novel view at ``yaw``."""
    x, c = inp.x[:count], inp.c[:count]
    size = tuple(x.shape[-2:])
    inv = net.encode(x, c, **kw)
    final = pool_to(net.render(inv, c, **kw).image, size)
    novel_c = with_pose(c, lookat_cam2world(yaw, 0.0, device=c.device, dtype=c.dtype))
    novel = pool_to(net.render(inv, novel_c, **kw).image, size)
    return [x, inv.y_psp, final, novel]


__all__ = ["FirstBranch", "SecondBranch", "StepInputs", "adversarial_camera", "adversarial_fake", "branch_total",
           "first_branch", "prepare", "preview", "psp_objective", "refined_planes", "render_kwargs", "second_branch",
           "triplane_objective"]
