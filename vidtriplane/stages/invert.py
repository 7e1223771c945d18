"""Inversion stage: aligned crops + camera labels -> one TriPlaneNet :class:`Inversion` per batch.

The network arrives loaded (the pipeline builds it; weights are resolved by the command layer). The
crops are pooled to the encoder's input size (256 for the official model, like its ``Resize(256)``) and
encoded once; ``stages/render`` then draws the inversion from any number of cameras.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from vidtriplane.config.render import InvertConfig
from vidtriplane.types import FrameBatch


def input_size(net: torch.nn.Module) -> int:
    """Side of the images the network's encoders read (256 for the official model)."""
    return int(getattr(net.psp_encoder.config, "input_size", 256))


def network_input(crops: np.ndarray, size: int, device: torch.device) -> torch.Tensor:
    """[N,H,W,3] uint8 crops -> [N,3,size,size] float in [-1, 1] (box-filtered like the official resize)."""
    x = torch.from_numpy(np.ascontiguousarray(crops))
    if device.type == "cuda":  # page-locked host memory: the copy runs asynchronously
        x = x.pin_memory()
    x = x.to(device, non_blocking=True).permute(0, 3, 1, 2).float()
    x = x / 127.5 - 1.0
    if x.shape[-1] != size or x.shape[-2] != size:
        x = F.adaptive_avg_pool2d(x, (size, size)) if x.shape[-1] > size else F.interpolate(
            x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    return x


@torch.inference_mode()
def apply(batch: FrameBatch, net: torch.nn.Module, cfg: InvertConfig, device: torch.device,
          **synthesis_kwargs: Any) -> FrameBatch:
    """Add ``inversion``: the batch's crops [N,S,S,3] encoded at their cameras ``labels`` [N,25]."""
    x = network_input(batch.crops, input_size(net), device)
    c = torch.from_numpy(np.asarray(batch.labels, dtype=np.float32)).to(device)
    return batch.with_fields(inversion=net.encode(x, c, cttr_steps=cfg.cttr_steps, **synthesis_kwargs))
