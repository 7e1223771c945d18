"""Render stage: draw each frame's inversion from the input camera and from every novel view.

Cameras (``ViewConfig.mode``), angles in radians from the frontal camera:

* ``absolute``  yaw/pitch fixed, like the official inference (the input's intrinsics are kept);
* ``relative``  each frame's own (yaw, pitch) plus the view's offsets;
* ``sway``      yaw + amplitude_yaw * sin(2 pi t / period), pitch fixed;
* ``orbit``     sway in yaw and pitch + amplitude_pitch * cos(2 pi t / period) (the official orbit).

``t`` is the frame's presentation time in seconds from the first frame, so variable frame rate input
moves the camera at the right speed. One inversion per frame serves every view (the official script
re-runs both encoders for each angle).
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from vidtriplane.geometry.camera import lookat_cam2world, with_pose, yaw_pitch
from vidtriplane.types import FrameBatch

from vidtriplane.config.render import RenderConfig, ViewConfig

SAME = "same"  # key of the input-view reconstruction in the rendered dict


def view_angles(view: ViewConfig, labels: torch.Tensor, times: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(yaw, pitch) [N] of ``view`` for frames with input cameras labels [N,25] at times [N] seconds."""
    n = labels.shape[0]
    yaw = torch.full((n,), float(view.yaw), dtype=labels.dtype, device=labels.device)
    pitch = torch.full((n,), float(view.pitch), dtype=labels.dtype, device=labels.device)
    phase = 2 * math.pi * times.to(labels) / view.period
    if view.mode == "relative":
        own_yaw, own_pitch = yaw_pitch(labels)
        return own_yaw + yaw, own_pitch + pitch
    if view.mode == "sway":
        return yaw + view.amplitude_yaw * torch.sin(phase), pitch
    if view.mode == "orbit":
        return yaw + view.amplitude_yaw * torch.sin(phase), pitch + view.amplitude_pitch * torch.cos(phase)
    return yaw, pitch


def view_cameras(view: ViewConfig, labels: torch.Tensor, times: torch.Tensor) -> torch.Tensor:
    """Camera labels [N,25] of ``view``: look-at poses on the FFHQ sphere with each input's intrinsics."""
    yaw, pitch = view_angles(view, labels, times)
    return with_pose(labels, lookat_cam2world(yaw, pitch, dtype=labels.dtype, device=labels.device))


def synthesis_kwargs(cfg: RenderConfig) -> dict[str, Any]:
    """Keyword arguments of ``G.synthesis`` / ``net.render`` / ``net.encode`` for this config."""
    return {
        "sampling": cfg.sampling,
        "depth_samples": cfg.depth_samples,
        "importance_samples": cfg.importance_samples,
        "neural_rendering_resolution": cfg.neural_rendering_resolution,
        "backend": cfg.backend,
        "precision": cfg.precision,
    }


def to_uint8(image: torch.Tensor, size: int) -> np.ndarray:
    """[N,3,H,W] in [-1, 1] -> [N,size,size,3] uint8 (box-filtered when shrinking)."""
    if image.shape[-1] != size:
        if image.shape[-1] % size == 0:
            image = F.adaptive_avg_pool2d(image, (size, size))
        else:
            image = F.interpolate(image, size=(size, size), mode="bilinear", align_corners=False,
                                  antialias=image.shape[-1] > size)
    out = ((image.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return out.permute(0, 2, 3, 1).contiguous().cpu().numpy()


@torch.inference_mode()
def apply(batch: FrameBatch, net: torch.nn.Module, cfg: RenderConfig, *, same_view: bool) -> FrameBatch:
    """Add ``rendered``: the batch's ``inversion`` drawn at every configured view (+ the input view
    under ``"same"`` when ``same_view``), each [N,size,size,3] uint8."""
    inv = batch.inversion
    labels = inv.camera
    t = torch.as_tensor(np.asarray(batch.seconds, dtype=np.float64), device=labels.device)
    kwargs = synthesis_kwargs(cfg)
    out: dict[str, np.ndarray] = {}
    if same_view:
        out[SAME] = to_uint8(net.render(inv, labels, **kwargs).image, cfg.size)
    for view in cfg.views:
        out[view.name] = to_uint8(net.render(inv, view_cameras(view, labels, t), **kwargs).image, cfg.size)
    return batch.with_fields(rendered=out)
