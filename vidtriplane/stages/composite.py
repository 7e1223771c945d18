"""Composite stage: rendered views -> output frames (one or more outputs per input video).

Layouts (``CompositeConfig.layout``):

* ``crop``          the novel view(s): one tile, or a row of tiles (grid) / one output per view;
* ``side_by_side``  input crop | same-view reconstruction | novel view(s), one row;
* ``paste``         a render (default the same-view one) warped back into the full frame through the
                    inverse crop transform and blended with the matting alpha.

``output_shapes`` tells the writers the frame size of every output before the first batch arrives.
"""
from __future__ import annotations

from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F

from vidtriplane.stages.render import SAME
from vidtriplane.types import FrameBatch, VideoMeta

from vidtriplane.config.render import CompositeConfig, RenderConfig

CROP = 512  # side of the aligned crops that crop_matrix maps into


def output_names(cfg: CompositeConfig, render: RenderConfig) -> list[str]:
    """Names of the outputs of one video: ``[""]``, or the view names with one output per view."""
    if cfg.layout == "crop" and cfg.views_output == "separate" and len(render.views) > 1:
        return [v.name for v in render.views]
    return [""]


def output_shapes(meta: VideoMeta, cfg: CompositeConfig, render: RenderConfig) -> dict[str, tuple[int, int]]:
    """{output name: (width, height)}; the single-output name is ``""``."""
    n_views = len(render.views)
    if cfg.layout == "paste":
        return {"": (meta.width, meta.height)}
    if cfg.layout == "side_by_side":
        return {"": ((2 + n_views) * cfg.tile, cfg.tile)}
    if output_names(cfg, render) != [""]:
        return {v.name: (cfg.tile, cfg.tile) for v in render.views}
    return {"": (n_views * cfg.tile, cfg.tile)}


def resize(images: np.ndarray, size: int) -> np.ndarray:
    """[N,H,W,3] uint8 -> [N,size,size,3] uint8 (antialiased when shrinking)."""
    if images.shape[1] == size and images.shape[2] == size:
        return images
    x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float()
    x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False,
                      antialias=images.shape[1] > size)
    return x.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous().numpy()


def paste(frames: np.ndarray, render: np.ndarray, crop_matrix: np.ndarray,
          alpha: Optional[np.ndarray] = None, feather: int = 8) -> np.ndarray:
    """Warp ``render`` [N,S,S,3] (a 512-crop's content at any size S) into ``frames`` [N,H,W,3].

    ``crop_matrix`` [N,2,3] maps frame pixels to 512-crop pixels (as ``cv2.warpAffine`` uses it to make the
    crop). ``alpha`` [N,512,512] in [0,1] is the matting alpha of the crop; without it a rectangle with
    ``feather`` soft pixels at the border is used.
    """
    n, h, w, _ = frames.shape
    s = render.shape[1]
    m = torch.from_numpy(np.asarray(crop_matrix, dtype=np.float64))  # [N,2,3]
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64),
                            indexing="ij")
    pts = torch.stack([xs, ys, torch.ones_like(xs)], -1).reshape(1, -1, 3)  # [1,HW,3]
    uv = pts @ m.transpose(1, 2)  # [N,HW,2] crop pixel coordinates
    grid = ((2 * uv + 1) / CROP - 1).reshape(n, h, w, 2).float()  # align_corners=False convention
    src = torch.from_numpy(np.ascontiguousarray(render)).permute(0, 3, 1, 2).float()
    if s != CROP:
        src = F.interpolate(src, size=(CROP, CROP), mode="bilinear", align_corners=False)
    warped = F.grid_sample(src, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    if alpha is None:
        a = torch.ones(n, 1, CROP, CROP)
        if feather > 0:
            ramp = torch.clamp((torch.arange(CROP, dtype=torch.float32) + 0.5) / feather, 0, 1)
            ramp = torch.minimum(ramp, ramp.flip(0))
            a = a * ramp[None, None, :, None] * ramp[None, None, None, :]
    else:
        a = torch.from_numpy(np.asarray(alpha, dtype=np.float32)).reshape(n, 1, CROP, CROP)
    a = F.grid_sample(a, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    base = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float()
    out = base * (1 - a) + warped * a
    return out.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous().numpy()


def compose(batch: FrameBatch, rendered: dict[str, np.ndarray], cfg: CompositeConfig,
            render: RenderConfig) -> dict[str, np.ndarray]:
    """{output name: [N,H,W,3] uint8} for one batch (names and sizes as in :func:`output_shapes`)."""
    names = [v.name for v in render.views]
    if cfg.layout == "paste":
        if batch.crop_matrix is None:
            raise ValueError("layout=paste needs crop_matrix from the preprocess stage")
        return {"": paste(batch.frames, rendered[cfg.paste_view], batch.crop_matrix, batch.alpha)}
    if cfg.layout == "side_by_side":
        if batch.crops is None:
            raise ValueError("layout=side_by_side needs the aligned crops")
        tiles = [resize(batch.crops, cfg.tile), resize(rendered[SAME], cfg.tile)]
        tiles += [resize(rendered[name], cfg.tile) for name in names]
        return {"": np.concatenate(tiles, axis=2)}
    if output_names(cfg, render) != [""]:
        return {name: resize(rendered[name], cfg.tile) for name in names}
    return {"": np.concatenate([resize(rendered[name], cfg.tile) for name in names], axis=2)}


def needs_same_view(cfg: CompositeConfig) -> bool:
    """Whether the layout shows the input-view reconstruction (so it must be rendered)."""
    return cfg.layout == "side_by_side" or (cfg.layout == "paste" and cfg.paste_view == SAME)
