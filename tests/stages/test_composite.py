"""Composite layouts and the paste-back warp (no model needed)."""
from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest

from tests.io.media import pattern
from vidtriplane.config import apply_overrides
from vidtriplane.config.render import PipelineConfig
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
    out = composite.paste(frames, batch.crops, batch.crop_matrix, 512, alpha)
    x0 = (120 - 90) // 2
    inner = (slice(None), slice(2, -2), slice(x0 + 2, x0 + 88))
    assert np.abs(out[inner].astype(int) - frames[inner].astype(int)).mean() < 3
    # outside the square the frame is untouched
    assert np.array_equal(out[:, :, :x0 - 1], frames[:, :, :x0 - 1])


def test_paste_blends_with_alpha():
    frames = np.zeros((1, 64, 64, 3), np.uint8)
    render = np.full((1, 256, 256, 3), 200, np.uint8)  # any render size is scaled to the 512 crop
    matrix = aligned.center_square_matrix(64, 64, 512)[None]
    half = np.full((1, 512, 512), 0.5, np.float32)
    out = composite.paste(frames, render, matrix, 512, half)
    assert out[0, 10:54, 10:54].mean() == pytest.approx(100, abs=1)
    soft = composite.paste(frames, render, matrix, 512, None, feather=64)  # no alpha: feathered rectangle
    assert soft[0, 32, 32].mean() > 150 and soft[0, 1, 1].mean() < 20


def _config(*overrides: str) -> PipelineConfig:
    views = "render.views=[{name: a}, {name: b, yaw: -0.3}]"
    return apply_overrides(PipelineConfig(), [views, "render.size=128", *overrides])


def _rendered(n: int) -> dict[str, np.ndarray]:
    return {"same": np.full((n, 128, 128, 3), 10, np.uint8), "a": np.full((n, 128, 128, 3), 20, np.uint8),
            "b": np.full((n, 128, 128, 3), 30, np.uint8)}


def test_layout_shapes_and_content():
    frames = np.stack([pattern(i, 48, 64) for i in range(3)])
    batch = aligned.apply(batch_of(frames)).with_fields(rendered=_rendered(3))
    sbs = _config("composite.layout=side_by_side", "composite.tile=32")
    out = composite.compose(batch, sbs)
    assert composite.output_shapes(batch.meta, sbs) == {"": (4 * 32, 32)}
    assert out[""].shape == (3, 32, 128, 3)
    assert [int(out[""][0, 5, 32 * k + 5, 0]) for k in (1, 2, 3)] == [10, 20, 30]
    sep = _config("composite.layout=crop", "composite.views_output=separate", "composite.tile=16")
    out = composite.compose(batch, sep)
    assert set(out) == {"a", "b"} and out["b"].shape == (3, 16, 16, 3) and int(out["b"][0, 0, 0, 0]) == 30
    grid = _config("composite.layout=crop", "composite.tile=16")
    assert composite.compose(batch, grid)[""].shape == (3, 16, 32, 3)
    assert composite.needs_same_view(sbs.composite) and not composite.needs_same_view(grid.composite)
    assert composite.apply(batch, grid).outputs[""].shape == (3, 16, 32, 3)


def test_separate_views_side_by_side_gives_input_same_and_one_view_per_output():
    frames = np.stack([pattern(i, 48, 64) for i in range(2)])
    batch = aligned.apply(batch_of(frames)).with_fields(rendered=_rendered(2))
    cfg = _config("composite.layout=side_by_side", "composite.views_output=separate", "composite.tile=32")
    assert composite.output_shapes(batch.meta, cfg) == {"a": (96, 32), "b": (96, 32)}
    out = composite.compose(batch, cfg)
    for name, value in (("a", 20), ("b", 30)):
        tiles = [int(out[name][1, 5, 32 * k + 5, 0]) for k in (1, 2)]
        assert tiles == [10, value]  # same view | this view
        assert np.array_equal(out[name][:, :, :32], composite.resize(batch.crops, 32))  # the input crop


def test_separate_views_with_paste_is_refused():
    with pytest.raises(ValueError, match="does not apply to layout=paste"):
        _config("composite.layout=paste", "composite.views_output=separate")


def test_paste_uses_the_configured_crop_size():
    """A 256 px crop layout (align.out_size=256): pasting the crop's own pixels back restores the frame."""
    frames = np.stack([pattern(i, 90, 120) for i in range(2)])
    cfg = _config("composite.layout=paste", "preprocess.align.out_size=256")
    batch = aligned.apply(batch_of(frames), cfg.aligned, cfg.crop_size)
    assert batch.crops.shape == (2, 256, 256, 3)
    alpha = np.ones((2, 256, 256), np.float32)
    out = composite.compose(batch.with_fields(rendered={"same": batch.crops}, alpha=alpha), cfg)[""]
    x0 = (120 - 90) // 2
    inner = (slice(None), slice(3, -3), slice(x0 + 3, x0 + 87))
    assert np.abs(out[inner].astype(int) - frames[inner].astype(int)).mean() < 4
