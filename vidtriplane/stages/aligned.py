"""``aligned`` stage: the input frames already are FFHQ-aligned face crops (like the official dataset).

No face detection or matting: the centre square of each frame is resized to the crop size (512), every frame gets
the same camera label (``AlignedConfig.yaw/pitch``, frontal by default) and a ``crop_matrix`` that maps
frame pixels to the crop (so ``layout=paste`` still works). Used by the ``aligned`` pipeline and by the
plumbing tests, which feed synthetic video without faces.
"""
from __future__ import annotations


import numpy as np

from vidtriplane.config.render import AlignedConfig
from vidtriplane.geometry.camera import lookat_label
from vidtriplane.geometry.constants import CROP_SIZE
from vidtriplane.stages.composite import resize
from vidtriplane.types import FrameBatch


def center_square_matrix(width: int, height: int, crop: int) -> np.ndarray:
    """[2,3] affine mapping frame pixels to the ``crop``-pixel crop of the centred square (pixel centres kept)."""
    side = min(width, height)
    x0, y0 = (width - side) // 2, (height - side) // 2
    s = crop / side
    # crop pixel centre u + 0.5 = s * (x + 0.5 - x0)
    return np.array([[s, 0.0, s * (0.5 - x0) - 0.5], [0.0, s, s * (0.5 - y0) - 0.5]], dtype=np.float32)


def apply(batch: FrameBatch, cfg: AlignedConfig = AlignedConfig(), crop: int = CROP_SIZE) -> FrameBatch:
    """Add crops [N,crop,crop,3], labels [N,25] and crop_matrix [N,2,3] for pre-aligned frames."""
    n, h, w, _ = batch.frames.shape
    side = min(w, h)
    y0, x0 = (h - side) // 2, (w - side) // 2
    crops = resize(batch.frames[:, y0 : y0 + side, x0 : x0 + side], crop)
    label = lookat_label(cfg.yaw, cfg.pitch).numpy().astype(np.float32)
    matrix = center_square_matrix(w, h, crop)
    return batch.with_fields(
        crops=crops,
        labels=np.repeat(label[None], n, axis=0),
        crop_matrix=np.repeat(matrix[None], n, axis=0),
    )
