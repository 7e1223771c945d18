"""Inversion stage: aligned crops + camera labels -> one TriPlaneNet :class:`Inversion` per frame.

Also builds the inversion network for the pipeline: the official checkpoints through the weight
registry, or deterministic generated weights (``model.weights=generated``) so the whole pipeline runs
offline in tests and benchmarks - those images are meaningless and every run says so loudly.
"""
from __future__ import annotations

import logging
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from vidtriplane.config.render import InvertConfig, ModelConfig


log = logging.getLogger(__name__)

GENERATED_WARNING = (
    "USING GENERATED (RANDOM) WEIGHTS: the output only exercises the pipeline, it is NOT a reconstruction "
    "of the input. Use model.weights=registry with the official checkpoints for real output."
)


def resolve_device(name: str) -> torch.device:
    """``auto`` -> cuda when available, else cpu; anything else is passed to torch.device."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"runtime.device={name} but CUDA is not available; use runtime.device=cpu")
    return device


def build_generated(cfg: ModelConfig) -> torch.nn.Module:
    """A TriPlaneNet with deterministic random weights (seeded), in eval mode."""
    from vidtriplane.models.triplanenet import TriPlaneNet, TriPlaneNetConfig, TriPlaneNetV2

    if cfg.size == "tiny":
        net_cfg = TriPlaneNetConfig.tiny(version=cfg.version)
    else:
        net_cfg = TriPlaneNetConfig() if cfg.version == 1 else TriPlaneNetConfig.v2()
    with torch.random.fork_rng(devices=[]):  # seeded without disturbing the caller's RNG
        torch.manual_seed(cfg.seed)
        net = TriPlaneNet(net_cfg) if cfg.version == 1 else TriPlaneNetV2(net_cfg)
    return net.eval().requires_grad_(False)


def build_from_registry(cfg: ModelConfig) -> torch.nn.Module:
    """The official checkpoint (and its EG3D generator's latent_avg) from the weight registry.

    Raises ``vidtriplane.weights.WeightsMissing`` (with what to fetch and how) when a file is absent.
    """
    from vidtriplane import checkpoints
    from vidtriplane.weights import resolve

    name = cfg.checkpoint or f"triplanenet-v{cfg.version}"
    ckpt_path = resolve(name)  # downloads when missing, unless VIDTRIPLANE_OFFLINE=1
    eg3d_path = resolve(cfg.eg3d) if cfg.eg3d else None
    net = checkpoints.load_triplanenet(ckpt_path, eg3d=eg3d_path)
    return net.eval().requires_grad_(False)


def load_inverter(cfg: ModelConfig, device: torch.device) -> torch.nn.Module:
    """Build the inversion network on ``device`` (see the module docstring)."""
    if cfg.weights == "generated":
        log.warning(GENERATED_WARNING)
        net = build_generated(cfg)
    else:
        net = build_from_registry(cfg)
    return net.to(device)


def input_size(net: torch.nn.Module) -> int:
    """Side of the images the network's encoders read (256 for the official model)."""
    return int(getattr(net.psp_encoder.config, "input_size", 256))


def network_input(crops: np.ndarray, size: int, device: torch.device) -> torch.Tensor:
    """[N,H,W,3] uint8 crops -> [N,3,size,size] float in [-1, 1] (box-filtered like the official resize)."""
    x = torch.from_numpy(np.ascontiguousarray(crops)).to(device).permute(0, 3, 1, 2).float()
    x = x / 127.5 - 1.0
    if x.shape[-1] != size or x.shape[-2] != size:
        x = F.adaptive_avg_pool2d(x, (size, size)) if x.shape[-1] > size else F.interpolate(
            x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    return x


@torch.inference_mode()
def invert(net: torch.nn.Module, crops: np.ndarray, labels: np.ndarray, cfg: InvertConfig,
           device: torch.device, **synthesis_kwargs: Any):
    """Encode a micro-batch of aligned crops [N,512,512,3] uint8 at cameras labels [N,25] -> Inversion.

    The crops are pooled to the encoder's input size (256 for the official model, like its Resize(256)).
    """
    x = network_input(crops, input_size(net), device)
    c = torch.from_numpy(np.asarray(labels, dtype=np.float32)).to(device)
    return net.encode(x, c, cttr_steps=cfg.cttr_steps, **synthesis_kwargs)
