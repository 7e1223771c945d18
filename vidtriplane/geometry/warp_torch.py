"""The crop warp on the device: aligned crops cut from full frames with ``grid_sample``.

The CUDA counterpart of :func:`vidtriplane.geometry.warp.warp_affine` (OpenCV on the CPU): one batched
``grid_sample`` per batch on the GPU instead of one OpenCV call per frame on the CPU. The same conventions:
``matrices`` [N,2,3] map frame pixels to crop pixels (pixel centres at integer coordinates), black outside
the frame, and when a warp shrinks a frame by more than 2x the frame is first box-filtered by the integer
factor that brings it back within 2x (the CPU path halves with a Gaussian pyramid instead; both only stop
aliasing). Bicubic by default, like the CPU path.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F


def _prefilter(frame: torch.Tensor, m: np.ndarray) -> tuple[torch.Tensor, np.ndarray]:
    """Box-filter ``frame`` [1,C,H,W] by k when the warp shrinks it by more than 2x; the matrix follows."""
    scale = math.sqrt(abs(np.linalg.det(m[:, :2])))
    k = int(1.0 / scale) // 2 * 2 if scale < 0.5 else 1
    if k < 2:
        return frame, m
    frame = F.avg_pool2d(frame, k, ceil_mode=True, count_include_pad=False)
    # new pixel j covers old pixels k j .. k j + k - 1: its centre is old k j + (k - 1) / 2
    to_old = np.array([[k, 0.0, (k - 1) / 2], [0.0, k, (k - 1) / 2], [0.0, 0.0, 1.0]])
    return frame, m @ to_old


def warp_crops(frames: np.ndarray, matrices: np.ndarray, out_size: int, device: torch.device | str,
               mode: str = "bicubic") -> np.ndarray:
    """Crops [N,S,S,C] uint8 (S = ``out_size``) from frames [N,H,W,C] uint8 on ``device``."""
    n = len(frames)
    if n == 0:
        return np.zeros((0, out_size, out_size) + frames.shape[3:], np.uint8)
    device = torch.device(device)
    src = torch.from_numpy(np.ascontiguousarray(frames))
    if device.type == "cuda":
        src = src.pin_memory()
    src = src.to(device, non_blocking=True)
    src = (src if src.ndim == 4 else src[..., None]).permute(0, 3, 1, 2).float()
    v, u = torch.meshgrid(torch.arange(out_size, dtype=torch.float64), torch.arange(out_size, dtype=torch.float64),
                          indexing="ij")
    out_px = torch.stack([u, v, torch.ones_like(u)], -1).reshape(-1, 3)  # [S*S, 3]
    crops = []
    for i in range(n):
        frame, m = _prefilter(src[i : i + 1], np.asarray(matrices[i], np.float64))
        full = np.vstack([m, [0.0, 0.0, 1.0]])
        inv = torch.from_numpy(np.linalg.inv(full)[:2])  # crop pixel -> frame pixel
        xy = out_px @ inv.T  # [S*S, 2]
        h, w = frame.shape[-2:]
        grid = torch.stack([(2 * xy[:, 0] + 1) / w - 1, (2 * xy[:, 1] + 1) / h - 1], -1)
        grid = grid.reshape(1, out_size, out_size, 2).to(device=device, dtype=torch.float32)
        crops.append(F.grid_sample(frame, grid, mode=mode, padding_mode="zeros", align_corners=False))
    out = torch.cat(crops).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1)
    return out.cpu().numpy()
