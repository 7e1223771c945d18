"""The device crop warp (grid_sample) against the OpenCV warp it replaces on CUDA; run here on the CPU."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.stages.face_media import astronaut
from vidtriplane.config.preprocess import AlignConfig
from vidtriplane.geometry import warp_torch
from vidtriplane.stages import align


def _matrix(scale: float, cx: float, cy: float, out: int) -> np.ndarray:
    """Frame -> crop: the square of side out/scale centred at (cx, cy) maps onto the out x out crop."""
    return np.array([[scale, 0.0, out / 2 - 0.5 - scale * cx], [0.0, scale, out / 2 - 0.5 - scale * cy]])


@pytest.mark.parametrize("scale", [1.7, 0.9, 0.3])  # enlarge, shrink a little, shrink more than 2x
def test_the_device_warp_matches_the_opencv_warp(scale):
    frame = np.ascontiguousarray(np.pad(astronaut(), ((100, 100), (200, 200), (0, 0)), mode="reflect"))
    m = _matrix(scale, 456.0, 330.0, 128)[None]
    cpu = align.warp_crops(frame[None], m, AlignConfig(out_size=128))
    dev = warp_torch.warp_crops(frame[None], m, 128, "cpu")
    assert dev.shape == cpu.shape == (1, 128, 128, 3) and dev.dtype == np.uint8
    diff = np.abs(dev.astype(int) - cpu.astype(int))
    assert diff.mean() < (2.0 if scale >= 0.5 else 4.0)  # anti-aliasing filters differ below 0.5
    other = warp_torch.warp_crops(frame[None], _matrix(scale, 476.0, 330.0, 128)[None], 128, "cpu")
    assert np.abs(other.astype(int) - cpu.astype(int)).mean() > diff.mean()  # a 20 px shift is seen


def test_outside_the_frame_is_black_and_rotations_follow_the_matrix():
    frame = np.full((1, 40, 60, 3), 200, np.uint8)
    m = _matrix(1.0, 0.0, 0.0, 32)[None]  # centred on the top-left corner: 3/4 of the crop is outside
    out = warp_torch.warp_crops(frame, m, 32, "cpu")[0]
    assert out[:14, :14].max() == 0 and out[18:, 18:].min() == 200
    a = np.deg2rad(90.0)
    rot = np.array([[np.cos(a), -np.sin(a), 0.0], [np.sin(a), np.cos(a), 0.0]])
    ramp = np.tile(np.arange(60, dtype=np.uint8)[None, :, None] * 4, (40, 1, 3))[None]
    m = rot.copy()
    m[:, 2] = [16 - 0.5 + 20, 16 - 0.5 - 30]  # rotate about the frame centre into a 32 crop
    cpu = align.warp_crops(ramp, m[None], AlignConfig(out_size=32))
    dev = warp_torch.warp_crops(ramp, m[None], 32, "cpu")
    assert np.abs(dev.astype(int) - cpu.astype(int))[:, 2:-2, 2:-2].mean() < 1.5


@pytest.mark.gpu
def test_the_preprocess_chain_cuts_crops_on_cuda_like_on_the_cpu():
    frame = np.ascontiguousarray(astronaut())
    m = _matrix(0.8, 256.0, 230.0, 512)[None]
    cpu = align.warp_crops(frame[None], m, AlignConfig())
    dev = warp_torch.warp_crops(frame[None], m, 512, torch.device("cuda"))
    assert np.abs(dev.astype(int) - cpu.astype(int)).mean() < 2.0
