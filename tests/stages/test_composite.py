"""Composite layouts and the paste-back warp (no model needed)."""
from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest

from tests.io.media import pattern
from vidtriplane.config.render import CompositeConfig, RenderConfig, ViewConfig
from vidtriplane.stages import aligned, composite
from vidtriplane.types import FrameBatch, VideoMeta


def batch_of(frames: np.ndarray) -> FrameBatch:
    n, h, w, _ = frames.shape
    meta = VideoMeta(width=w, height=h, fps=Fraction(25), time_base=Fraction(1, 25))
    return FrameBatch(meta=meta, index=np.arange(n), pts=np.arange(n), frames=frames)


def test_paste_of_own_crop_restores_the_frame():
    frames = np.stack([pattern(i, 90, 120) for i in range(2)])
    batch = aligned.apply(batch_of(frames))
    assert batch.crops.shape == (2, 512, 512, 3)
    # pasting the crop back (hard alpha) through the inverse transform reproduces the centre square
    alpha = np.ones((2, 512, 512), np.float32)
    out = composite.paste(frames, batch.crops, batch.crop_matrix, alpha)
    x0 = (120 - 90) // 2
    inner = (slice(None), slice(2, -2), slice(x0 + 2, x0 + 88))
    assert np.abs(out[inner].astype(int) - frames[inner].astype(int)).mean() < 3
    # outside the square the frame is untouched
    assert np.array_equal(out[:, :, :x0 - 1], frames[:, :, :x0 - 1])


def test_paste_blends_with_alpha():
    frames = np.zeros((1, 64, 64, 3), np.uint8)
    render = np.full((1, 256, 256, 3), 200, np.uint8)  # any render size is scaled to the 512 crop
    matrix = aligned.center_square_matrix(64, 64)[None]
    half = np.full((1, 512, 512), 0.5, np.float32)
    out = composite.paste(frames, render, matrix, half)
    assert out[0, 10:54, 10:54].mean() == pytest.approx(100, abs=1)
    soft = composite.paste(frames, render, matrix, None, feather=64)  # no alpha: feathered rectangle
    assert soft[0, 32, 32].mean() > 150 and soft[0, 1, 1].mean() < 20


def test_layout_shapes_and_content():
    frames = np.stack([pattern(i, 48, 64) for i in range(3)])
    batch = aligned.apply(batch_of(frames))
    views = (ViewConfig(name="a"), ViewConfig(name="b", yaw=-0.3))
    render = RenderConfig(views=views, size=128)
    rendered = {"same": np.full((3, 128, 128, 3), 10, np.uint8), "a": np.full((3, 128, 128, 3), 20, np.uint8),
                "b": np.full((3, 128, 128, 3), 30, np.uint8)}
    sbs = CompositeConfig(layout="side_by_side", tile=32)
    out = composite.compose(batch, rendered, sbs, render)
    assert composite.output_shapes(batch.meta, sbs, render) == {"": (4 * 32, 32)}
    assert out[""].shape == (3, 32, 128, 3)
    assert [int(out[""][0, 5, 32 * k + 5, 0]) for k in (1, 2, 3)] == [10, 20, 30]
    sep = CompositeConfig(layout="crop", views_output="separate", tile=16)
    out = composite.compose(batch, rendered, sep, render)
    assert set(out) == {"a", "b"} and out["b"].shape == (3, 16, 16, 3) and int(out["b"][0, 0, 0, 0]) == 30
    grid = CompositeConfig(layout="crop", tile=16)
    assert composite.compose(batch, rendered, grid, render)[""].shape == (3, 16, 32, 3)
    assert composite.needs_same_view(sbs) and not composite.needs_same_view(grid)
