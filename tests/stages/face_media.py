"""Real-face test media built in memory from scikit-image's public-domain ``astronaut.png``."""
from __future__ import annotations

from fractions import Fraction

import cv2
import numpy as np
import pytest

from vidtriplane.types import FrameBatch, VideoMeta


def astronaut() -> np.ndarray:
    """The 512x512 RGB astronaut photo (one real face), or skip when scikit-image is absent."""
    data = pytest.importorskip("skimage.data")
    return data.astronaut()


def place(image: np.ndarray, size: tuple[int, int], centre: tuple[float, float], scale: float = 1.0, angle: float = 0.0) -> np.ndarray:
    """``image`` rotated by ``angle`` degrees (counter-clockwise) and scaled about its centre, placed at
    ``centre`` on a black canvas of ``size`` = (w, h)."""
    h, w = image.shape[:2]
    m = cv2.getRotationMatrix2D(((w - 1) / 2, (h - 1) / 2), angle, scale)
    m[:, 2] += np.array(centre) - np.array([(w - 1) / 2, (h - 1) / 2])
    return cv2.warpAffine(image, m, size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)


def moving_clip(n: int = 30, size: tuple[int, int] = (640, 480), blank: tuple[int, ...] = ()) -> np.ndarray:
    """A clip [n, h, w, 3] of the astronaut drifting, turning in plane and zooming; ``blank`` frames are black."""
    img = astronaut()
    frames = []
    for i in range(n):
        a = i / max(n - 1, 1)
        centre = (size[0] / 2 - 40 + 80 * a, size[1] / 2 + 20 * np.sin(2 * np.pi * a))
        frame = place(img, size, centre, scale=0.8 + 0.2 * a, angle=-8 + 16 * a)
        frames.append(np.zeros_like(frame) if i in blank else frame)
    return np.stack(frames)


def batch_of(frames: np.ndarray, start: int = 0, fps: int = 25) -> FrameBatch:
    """A FrameBatch around frames [N, H, W, 3] (or [N, H, W] grey)."""
    n, h, w = frames.shape[:3]
    meta = VideoMeta(width=w, height=h, fps=Fraction(fps), time_base=Fraction(1, fps), n_frames=None)
    idx = np.arange(start, start + n, dtype=np.int64)
    return FrameBatch(meta=meta, index=idx, pts=idx.copy(), frames=frames)
