"""The networks of a training run: the TriPlaneNet with its frozen generator, the encoders' IR-SE-50
initialisation, the loss networks, the v2 discriminator, and gradient checkpointing of the encoders.

Weight files come from the registry (``vidtriplane.weights.resolve``: fetched on first use unless
``VIDTRIPLANE_OFFLINE=1``); a missing file is a :class:`TrainSetupError` naming the file and the
``vidtriplane weights import`` command.
"""
from __future__ import annotations

import contextlib
import logging
from pathlib import Path
from typing import Iterator

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from vidtriplane.config.train import LOSS_NETWORK_FILES, TrainConfig
from vidtriplane.errors import VidtriplaneError
from vidtriplane.models.eg3d import EG3DConfig, EG3DGenerator
from vidtriplane.models.encoders import PSPConfig, TriPlaneEncoderConfig
from vidtriplane.models.state import load_strict
from vidtriplane.models.triplanenet import TriPlaneNet, TriPlaneNetConfig, TriPlaneNetV2
from vidtriplane.train.losses import LossNets

log = logging.getLogger(__name__)


class TrainSetupError(VidtriplaneError):
    """A network or weight file a training run needs is unavailable; the message says what to do."""


def registry_file(name: str, why: str, alternative: str) -> Path:
    """The cached file of registry entry ``name``; a clear error (file + import command) when it cannot be had."""
    from vidtriplane.weights import resolve

    try:
        return resolve(name)
    except VidtriplaneError as exc:  # WeightsMissing, download failures, unknown names: "not available"
        raise TrainSetupError(f"{why} needs the weights {name!r}: {exc}\n{alternative}") from None


# ---------------------------------------------------------------------------------------------------
# TriPlaneNet + generator


def net_config(cfg: TrainConfig, eg3d: EG3DConfig) -> TriPlaneNetConfig:
    """The TriPlaneNet shapes of a run (official, or tiny) around the generator configuration ``eg3d``."""
    m = cfg.model
    if m.size == "tiny":
        return TriPlaneNetConfig.tiny(version=m.version, variant=m.variant)
    psp = PSPConfig(style_dim=eg3d.w_dim, n_styles=eg3d.num_ws, input_size=eg3d.backbone_resolution)
    enc = TriPlaneEncoderConfig() if m.version == 1 else TriPlaneEncoderConfig.v2(m.variant)
    return TriPlaneNetConfig(psp=psp, encoder=enc, eg3d=eg3d)


def build_generator(cfg: TrainConfig) -> tuple[EG3DGenerator, torch.Tensor]:
    """The frozen EG3D generator and its average latent [w_dim] (``mapping.w_avg`` for generated weights)."""
    m = cfg.model
    if m.eg3d == "generated":
        log.warning("model.eg3d=generated: the generator has RANDOM weights; the run only exercises the training code")
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(m.seed)
            G = EG3DGenerator(EG3DConfig.tiny() if m.size == "tiny" else EG3DConfig())
        latent_avg = G.backbone.mapping.w_avg.detach().clone()
    else:
        from vidtriplane.checkpoints import load_eg3d

        path = registry_file(m.eg3d, "the frozen EG3D generator (model.eg3d)",
                             "Or set model.eg3d=generated to try the training code with random weights.")
        G, latent_avg = load_eg3d(path)
    return G.eval().requires_grad_(False), latent_avg


def build_network(cfg: TrainConfig) -> TriPlaneNet | TriPlaneNetV2:
    """TriPlaneNet v1/v2 with the run's generator as its frozen ``decoder`` and the encoders initialised
    (seeded by ``runtime.seed``; IR-SE-50 trunks when ``model.init`` names a registry entry)."""
    G, latent_avg = build_generator(cfg)
    config = net_config(cfg, G.cfg)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.runtime.seed)
        net = (TriPlaneNet if cfg.model.version == 1 else TriPlaneNetV2)(config)
        net.decoder = G  # the generator built (or loaded) above; frozen, eval mode
        net.set_latent_avg(latent_avg)
        if cfg.model.init != "none":
            path = registry_file(cfg.model.init, "initialising the encoders (model.init)",
                                 "Or set model.init=none to start from PyTorch's default initialisation.")
            init_from_irse50(net, path)
        else:
            log.info("model.init=none: the encoders start from PyTorch's default initialisation")
    return net


def init_from_irse50(net: nn.Module, path: str | Path) -> None:
    """Both encoders' ``input_layer`` and ``body`` from an IR-SE-50 file (``tpn:models/triplanenet.py``:
    non-strict load, only the trunk matches); the tri-plane encoder's wider first conv gets standard-normal
    noise with the pretrained weights in input channels 0-2. Everything else keeps its initialisation."""
    from vidtriplane.checkpoints import read_torch_file

    sd = read_torch_file(path, kind="IR-SE-50")
    for name in ("psp_encoder", "triplanenet_encoder"):
        encoder = getattr(net, name)
        for part in ("input_layer", "body"):
            sub = {k[len(part) + 1:]: v for k, v in sd.items() if k.startswith(part + ".")}
            if part == "input_layer":
                weight = sub["0.weight"] if "0.weight" in sub else None
                target = encoder.input_layer[0].weight
                if weight is not None and target.shape[1] != weight.shape[1]:
                    noise = torch.randn(target.shape, dtype=weight.dtype)
                    noise[:, :weight.shape[1]] = weight
                    sub["0.weight"] = noise
            load_strict(getattr(encoder, part), sub, what=f"IR-SE-50 {part} ({path}) into {name}")
    log.info("encoders initialised from IR-SE-50 (%s)", path)


# ---------------------------------------------------------------------------------------------------
# Loss networks and the discriminator


def build_loss_nets(cfg: TrainConfig, device: torch.device) -> LossNets:
    """LPIPS and ArcFace from the registry, or none (``loss.networks=none``: those terms are skipped)."""
    from vidtriplane.checkpoints import load_face_embedder, load_lpips
    from vidtriplane.models.arcface import FaceEmbedderConfig

    if cfg.loss.networks == "none":
        log.info("loss.networks=none: the LPIPS and ID loss terms are skipped (they need %s)",
                 ", ".join(LOSS_NETWORK_FILES))
        return LossNets()
    l = cfg.loss
    alt = "Or set loss.networks=none to train without the LPIPS and ID terms."
    lpips = arcface = None
    if any(w > 0 for w in (l.lpips_lambda_psp, l.lpips_lambda_triplane, l.lpips_lambda_psp_mirror,
                           l.lpips_lambda_triplane_mirror)):
        lpips = load_lpips(registry_file("alexnet", "the LPIPS loss", alt),
                           registry_file("lpips-alex-v0.1", "the LPIPS loss", alt)).to(device)
    if any(w > 0 for w in (l.id_lambda_psp, l.id_lambda_triplane, l.id_lambda_psp_mirror, l.id_lambda_triplane_mirror)):
        arcface = load_face_embedder(registry_file("ir-se50", "the ID loss", alt), FaceEmbedderConfig.ir_se50())
        arcface = arcface.to(device)
    return LossNets(lpips=lpips, arcface=arcface)


def build_discriminator(cfg: TrainConfig, img_resolution: int) -> nn.Module | None:
    """v2's StyleGAN2-ADA discriminator (random init, or a state_dict file), or None without GAN terms."""
    if not cfg.gan:
        return None
    from vidtriplane.checkpoints import read_torch_file
    from vidtriplane.models.discriminator import Discriminator, DiscriminatorConfig

    config = (DiscriminatorConfig.tiny(img_resolution) if cfg.model.size == "tiny"
              else DiscriminatorConfig(img_resolution=img_resolution))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.runtime.seed + 1)
        D = Discriminator(config)
    if cfg.model.discriminator != "random":
        path = Path(cfg.model.discriminator).expanduser()
        load_strict(D, read_torch_file(path, kind="discriminator"), what=f"discriminator {path}")
        log.info("discriminator loaded from %s", path)
    else:
        log.info("model.discriminator=random: the discriminator starts from a random initialisation")
    return D


# ---------------------------------------------------------------------------------------------------
# Gradient checkpointing


@contextlib.contextmanager
def _frozen_batchnorm_stats(module: nn.Module) -> Iterator[None]:
    """While recomputing a checkpointed unit, BatchNorms must not count the batch a second time."""
    saved = []
    for m in module.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.training and m.track_running_stats:
            saved.append((m, m.momentum, m.num_batches_tracked.clone()))
            m.momentum = 0.0
    try:
        yield
    finally:
        for m, momentum, count in saved:
            m.momentum = momentum
            m.num_batches_tracked.copy_(count)


def _checkpointed(unit: nn.Module):
    plain = unit.forward

    def forward(x: torch.Tensor) -> torch.Tensor:
        if not (torch.is_grad_enabled() and unit.training):
            return plain(x)
        calls = [0]

        def run(inp: torch.Tensor) -> torch.Tensor:
            calls[0] += 1
            if calls[0] == 1:
                return plain(inp)
            with _frozen_batchnorm_stats(unit):  # the recomputation in the backward pass
                return plain(inp)

        return checkpoint(run, x, use_reentrant=False)

    return forward


def enable_gradient_checkpointing(*encoders: nn.Module) -> int:
    """Recompute every trunk unit (``body.N``) of the encoders in the backward pass; returns the unit count.
    The modules and their state_dict keys are unchanged (only each unit's ``forward`` is wrapped)."""
    count = 0
    for encoder in encoders:
        for unit in encoder.body:
            unit.forward = _checkpointed(unit)
            count += 1
    return count


__all__ = ["TrainSetupError", "build_discriminator", "build_generator", "build_loss_nets", "build_network",
           "enable_gradient_checkpointing", "init_from_irse50", "net_config", "registry_file"]
