"""Composite stage: rendered views -> output frames (one or more outputs per input video).

Layouts (``CompositeConfig.layout``):

* ``crop``          the novel view(s): one tile, or a row of tiles (grid);
* ``side_by_side``  input crop | same-view reconstruction | novel view(s), one row;
* ``paste``         a render (default the same-view one) warped back into the full frame through the
                    inverse crop transform and blended with the matting alpha.

With ``views_output="separate"`` and several views, ``crop`` and ``side_by_side`` give one output per
view (``side_by_side``: input | same view | that view); ``paste`` has one render to paste, so it refuses
``separate``. ``output_shapes`` tells the writers the frame size of every output before the first batch.
The crop size (``align.out_size``, 512 for EG3D) is what ``crop_matrix`` maps into.
"""
from __future__ import annotations

from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F

from vidtriplane.config.render import CompositeConfig, PipelineConfig
from vidtriplane.pipeline.outputs import output_names
from vidtriplane.stages.render import SAME
from vidtriplane.types import FrameBatch, VideoMeta


def output_shapes(meta: VideoMeta, cfg: PipelineConfig) -> dict[str, tuple[int, int]]:
    """{output name: (width, height)}; the single-output name is ``""``."""
    comp, render = cfg.composite, cfg.render
    if comp.layout == "paste":
        return {"": (meta.width, meta.height)}
    names = output_names(cfg)
    views_per_output = 1 if names != [""] else len(render.views)
    extra = 2 if comp.layout == "side_by_side" else 0
    return {name: ((extra + views_per_output) * comp.tile, comp.tile) for name in names}


def resize(images: np.ndarray, size: int) -> np.ndarray:
    """[N,H,W,3] uint8 -> [N,size,size,3] uint8 (antialiased when shrinking)."""
    if images.shape[1] == size and images.shape[2] == size:
        return images
    x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float()
    x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False,
                      antialias=images.shape[1] > size)
    return x.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous().numpy()


def _feather(crop: int, feather: int) -> torch.Tensor:
    """[1,1,crop,crop] alpha: 1 inside, ramping to 0 over ``feather`` pixels at the border."""
    a = torch.ones(1, 1, crop, crop)
    if feather > 0:
        ramp = torch.clamp((torch.arange(crop, dtype=torch.float32) + 0.5) / feather, 0, 1)
        ramp = torch.minimum(ramp, ramp.flip(0))
        a = a * ramp[None, None, :, None] * ramp[None, None, None, :]
    return a


def paste(frames: np.ndarray, render: np.ndarray, crop_matrix: np.ndarray, crop: int,
          alpha: Optional[np.ndarray] = None, feather: int = 8) -> np.ndarray:
    """Warp ``render`` [N,S,S,3] (a crop's content at any size S) into ``frames`` [N,H,W,3].

    ``crop_matrix`` [N,2,3] maps frame pixels to the ``crop``-pixel aligned crop (as ``cv2.warpAffine``
    uses it to cut the crop). ``alpha`` [N,crop,crop] in [0,1] is the matting alpha of the crop; without
    it a rectangle with ``feather`` soft pixels at the border is used.
    """
    n, h, w, _ = frames.shape
    m = torch.from_numpy(np.asarray(crop_matrix, dtype=np.float64))  # [N,2,3]
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64),
                            indexing="ij")
    pts = torch.stack([xs, ys, torch.ones_like(xs)], -1).reshape(1, -1, 3)  # [1,HW,3]
    uv = pts @ m.transpose(1, 2)  # [N,HW,2] crop pixel coordinates
    grid = ((2 * uv + 1) / crop - 1).reshape(n, h, w, 2).float()  # align_corners=False convention
    src = torch.from_numpy(np.ascontiguousarray(render)).permute(0, 3, 1, 2).float()
    if src.shape[-1] != crop:
        src = F.interpolate(src, size=(crop, crop), mode="bilinear", align_corners=False)
    warped = F.grid_sample(src, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    if alpha is None:
        a = _feather(crop, feather).expand(n, 1, crop, crop)
    else:
        a = torch.from_numpy(np.asarray(alpha, dtype=np.float32)).reshape(n, 1, crop, crop)
    a = F.grid_sample(a, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    base = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float()
    out = base * (1 - a) + warped * a
    return out.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous().numpy()


def compose(batch: FrameBatch, config: PipelineConfig) -> dict[str, np.ndarray]:
    """{output name: [N,H,W,3] uint8} for one batch (names and sizes as in :func:`output_shapes`)."""
    cfg, render, crop = config.composite, config.render, config.crop_size
    rendered = batch.rendered
    if cfg.layout == "paste":
        if batch.crop_matrix is None:
            raise ValueError("layout=paste needs crop_matrix from the preprocess stage")
        return {"": paste(batch.frames, rendered[cfg.paste_view], batch.crop_matrix, crop, batch.alpha)}
    lead: list[np.ndarray] = []
    if cfg.layout == "side_by_side":
        if batch.crops is None:
            raise ValueError("layout=side_by_side needs the aligned crops")
        lead = [resize(batch.crops, cfg.tile), resize(rendered[SAME], cfg.tile)]
    names = [v.name for v in render.views]
    if output_names(config) != [""]:
        return {name: np.concatenate([*lead, resize(rendered[name], cfg.tile)], axis=2) for name in names}
    return {"": np.concatenate([*lead, *(resize(rendered[name], cfg.tile) for name in names)], axis=2)}


def apply(batch: FrameBatch, cfg: PipelineConfig) -> FrameBatch:
    """Add ``outputs`` (see :func:`compose`)."""
    return batch.with_fields(outputs=compose(batch, cfg))


def needs_same_view(cfg: CompositeConfig) -> bool:
    """Whether the layout shows the input-view reconstruction (so it must be rendered)."""
    return cfg.layout == "side_by_side" or (cfg.layout == "paste" and cfg.paste_view == SAME)
