"""2x3 affine transforms between frames and crops: compose, invert, apply to points, warp images.

Conventions: a matrix ``M`` of shape [..., 2, 3] maps *pixel-centre* coordinates of the source (pixel
(0, 0) has its centre at (0, 0)) to pixel-centre coordinates of the destination, ``p' = M[:, :2] p + M[:, 2]``.
This is OpenCV's convention, so ``cv2.warpAffine(src, M, size)`` produces the destination image.
Pixels that map outside the source are black (like PIL's crop outside the image in the official EG3D
preprocessing). Downscaling warps are anti-aliased with an image pyramid before the final resampling.
"""
from __future__ import annotations

import math

import cv2
import numpy as np


def to3x3(m: np.ndarray) -> np.ndarray:
    """[..., 2, 3] -> [..., 3, 3] homogeneous matrices."""
    m = np.asarray(m, dtype=np.float64)
    last = np.zeros(m.shape[:-2] + (1, 3))
    last[..., 0, 2] = 1.0
    return np.concatenate([m, last], axis=-2)


def invert_affine(m: np.ndarray) -> np.ndarray:
    """Inverse of [..., 2, 3] affine matrices (crop -> frame for paste-back)."""
    inv = np.linalg.inv(to3x3(m))[..., :2, :]
    return inv.astype(np.asarray(m).dtype if np.asarray(m).dtype.kind == "f" else np.float64)


def compose_affine(outer: np.ndarray, inner: np.ndarray) -> np.ndarray:
    """The affine that applies ``inner`` first, then ``outer`` ([..., 2, 3] each)."""
    return (to3x3(outer) @ to3x3(inner))[..., :2, :]


def transform_points(m: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Apply [2, 3] (or [N, 2, 3]) affine(s) to points [..., P, 2]; NaN points stay NaN."""
    m = np.asarray(m, dtype=np.float64)
    points = np.asarray(points, dtype=np.float64)
    out = points @ np.swapaxes(m[..., :, :2], -1, -2) + m[..., None, :, 2]
    return out


def scale_translate(scale_x: float, scale_y: float, tx: float, ty: float) -> np.ndarray:
    """[2, 3] matrix ``(x, y) -> (sx x + tx, sy y + ty)``."""
    return np.array([[scale_x, 0.0, tx], [0.0, scale_y, ty]], dtype=np.float64)


def square_crop_matrix(cx: float, cy: float, side: float, out_size: int) -> np.ndarray:
    """Frame -> crop matrix of the axis-aligned square of ``side`` pixels centred at (cx, cy).

    The square's edges are at ``cx +- side/2``; it becomes an ``out_size`` x ``out_size`` image.
    """
    k = out_size / side
    c = (out_size - 1) / 2.0
    return scale_translate(k, k, c - k * cx, c - k * cy)


def square_params(m: np.ndarray, out_size: int) -> np.ndarray:
    """Inverse of :func:`square_crop_matrix` for [..., 2, 3]: (cx, cy, side) of the crop in the frame.

    For matrices with a rotation or unequal axis scales, ``side`` uses the mean scale and the centre is
    the frame point that lands at the crop centre.
    """
    m = np.asarray(m, dtype=np.float64)
    c = (out_size - 1) / 2.0
    inv = invert_affine(m)
    centre = transform_points(inv, np.array([[c, c]]))[..., 0, :]
    scale = np.sqrt(np.abs(np.linalg.det(m[..., :, :2])))
    return np.concatenate([centre, (out_size / scale)[..., None]], axis=-1)


def _roi_for(m: np.ndarray, out_w: int, out_h: int, src_w: int, src_h: int, margin: int = 4):
    """Integer source rectangle (x0, y0, x1, y1) that the warp reads, clipped to the image."""
    inv = invert_affine(m)
    corners = np.array([[0, 0], [out_w - 1, 0], [0, out_h - 1], [out_w - 1, out_h - 1]], dtype=np.float64)
    src = transform_points(inv, corners)
    x0 = int(max(0, math.floor(src[:, 0].min()) - margin))
    y0 = int(max(0, math.floor(src[:, 1].min()) - margin))
    x1 = int(min(src_w, math.ceil(src[:, 0].max()) + margin + 1))
    y1 = int(min(src_h, math.ceil(src[:, 1].max()) + margin + 1))
    return x0, y0, x1, y1


def warp_affine(
    image: np.ndarray,
    m: np.ndarray,
    size: tuple[int, int],
    *,
    interpolation: int = cv2.INTER_CUBIC,
    antialias: bool = True,
    border_value: float | tuple[float, ...] = 0,
) -> np.ndarray:
    """Warp ``image`` (HxW or HxWxC) with frame -> output matrix ``m`` into an image of ``size`` = (w, h).

    Only the source region the output reads is touched. When the warp shrinks the image by more than
    2x, that region is first halved with ``cv2.pyrDown`` (Gaussian anti-aliasing) as often as needed.
    Outside the source the output is ``border_value`` (black by default).
    """
    out_w, out_h = int(size[0]), int(size[1])
    m = np.asarray(m, dtype=np.float64)
    h, w = image.shape[:2]
    x0, y0, x1, y1 = _roi_for(m, out_w, out_h, w, h)
    if x1 <= x0 or y1 <= y0:  # the crop lies completely outside the frame
        shape = (out_h, out_w) + image.shape[2:]
        return np.full(shape, border_value, dtype=image.dtype)
    roi = image[y0:y1, x0:x1]
    m = compose_affine(m, scale_translate(1.0, 1.0, x0, y0))  # roi -> output
    if antialias:
        scale = math.sqrt(abs(np.linalg.det(m[:, :2])))
        while scale < 0.5 and min(roi.shape[:2]) >= 4:
            roi = cv2.pyrDown(roi)
            # cv2.pyrDown centres its 5x5 Gaussian on old pixel 2 j: new j -> old 2 j
            m = compose_affine(m, scale_translate(2.0, 2.0, 0.0, 0.0))
            scale *= 2.0
    roi = np.ascontiguousarray(roi)
    out = cv2.warpAffine(
        roi,
        m,
        (out_w, out_h),
        flags=interpolation,
        borderMode=cv2.BORDER_CONSTANT,
        borderValue=border_value,
    )
    if out.ndim == 2 and image.ndim == 3:
        out = out[..., None]
    return out


def paste_back(
    crop: np.ndarray,
    m: np.ndarray,
    frame_size: tuple[int, int],
    *,
    interpolation: int = cv2.INTER_LINEAR,
) -> np.ndarray:
    """Warp a crop back into frame geometry with the inverse of frame -> crop matrix ``m``.

    ``frame_size`` is (w, h). Frame pixels outside the crop are 0; warp an all-ones mask the same way
    to know which pixels the crop covers.
    """
    return warp_affine(crop, invert_affine(m), frame_size, interpolation=interpolation, antialias=True)
