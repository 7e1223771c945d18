"""The EG3D alignment crop (Deep3DFaceRecon ``util/preprocess.py``: ``align_img``/``POS``, and ``eg3d:dataset_preprocessing/ffhq/crop_images_in_the_wild.py``) as an affine transform.

The official route fits a weak-perspective projection (POS) of five reference 3D points to the five
landmarks (eye centres, nose tip, mouth corners), re-scales the whole image so that the face scale
becomes 300, cuts a 1024 box around the fitted translation, keeps its central 700 pixels and resizes
them to 512. All of that is one axis-aligned scale + translation of the frame, so we keep it as a 2x3
matrix ``frame -> crop`` (its inverse pastes results back) and do a single resampling.

``official_rounding=True`` reproduces the integer truncations of the official code (``int(W0 * s')`` and
the integer crop box), which makes the crop jump in whole pixels of the 1024 image; the default keeps
the continuous values so that smoothed video crops move smoothly. Parts of the crop outside the frame
are black, as with PIL's crop in the official code.
"""
from __future__ import annotations


import cv2
import numpy as np

from vidtriplane.config.preprocess import AlignConfig
from vidtriplane.geometry.constants import CROP_SIZE
from vidtriplane.geometry.warp import square_crop_matrix, square_params, warp_affine

# BFM mean-shape landmarks reduced to 5 points: left eye, right eye, nose tip, left / right mouth corner
# (image-left first), in BFM units (Deep3DFaceRecon ``util/preprocess.py``, from BFM ``similarity_Lm3D_all.mat``).
REFERENCE_5 = np.array(
    [
        [-0.311487, 0.290361, 0.133780],
        [0.309799, 0.289720, 0.131795],
        [0.003253, -0.046179, 0.552442],
        [-0.252169, -0.381339, 0.224057],
        [0.248466, -0.381282, 0.222358],
    ],
    dtype=np.float64,
)
TARGET_SIZE = 1024  # crop_images_in_the_wild.py
RESCALE_FACTOR = 300.0
CENTER_CROP = 700
OUTPUT_SIZE = CROP_SIZE

_INTERPOLATION = {"linear": cv2.INTER_LINEAR, "cubic": cv2.INTER_CUBIC, "lanczos": cv2.INTER_LANCZOS4}


def five_points(landmarks: np.ndarray, eye_center: str = "mean6") -> np.ndarray:
    """68 dlib/iBUG landmarks [..., 68, 2] -> the official 5 points [..., 5, 2] (image-left first).

    Five points [..., 5, 2] (MTCNN: eyes, nose, mouth corners, the official order) are returned as they are.
    """
    lm = np.asarray(landmarks, dtype=np.float64)
    if lm.shape[-2:] == (5, 2):
        return lm
    if lm.shape[-2:] != (68, 2):
        raise ValueError(f"expected 68 or 5 landmarks of shape [..., 68, 2] / [..., 5, 2], got {lm.shape}")
    if eye_center == "mean6":
        left_eye = lm[..., 36:42, :].mean(-2)
        right_eye = lm[..., 42:48, :].mean(-2)
    elif eye_center == "corners":
        left_eye = lm[..., [36, 39], :].mean(-2)
        right_eye = lm[..., [42, 45], :].mean(-2)
    else:
        raise ValueError(f"eye_center must be 'mean6' or 'corners', got {eye_center!r}")
    return np.stack([left_eye, right_eye, lm[..., 30, :], lm[..., 48, :], lm[..., 54, :]], axis=-2)


def pos_fit(points5: np.ndarray, height: int) -> tuple[np.ndarray, float]:
    """POS weak-perspective fit of :data:`REFERENCE_5` to 5 image points [5, 2] of an image ``height`` high.

    Returns (t, s): the translation (x, y) in *flipped-y* coordinates (y' = H - 1 - y) and the scale in
    pixels per BFM unit (Deep3DFaceRecon ``util/preprocess.py: POS``).
    """
    xp = np.asarray(points5, dtype=np.float64).copy()
    xp[:, 1] = height - 1 - xp[:, 1]
    n = xp.shape[0]
    a = np.zeros((2 * n, 8))
    a[0::2, 0:3] = REFERENCE_5
    a[0::2, 3] = 1.0
    a[1::2, 4:7] = REFERENCE_5
    a[1::2, 7] = 1.0
    b = xp.reshape(2 * n)
    k = np.linalg.lstsq(a, b, rcond=None)[0]
    s = (np.linalg.norm(k[0:3]) + np.linalg.norm(k[4:7])) / 2.0
    return np.array([k[3], k[7]]), float(s)


def crop_params_from_pos(t: np.ndarray, s: float, height: int) -> np.ndarray:
    """Continuous crop square (cx, cy, side) in frame pixel-centre coordinates from a POS fit.

    Without the integer truncations the official 700 box is the square of side ``700 * s / 300`` whose
    edges are centred on the edge coordinates (t0, H - t1).
    """
    side = CENTER_CROP * s / RESCALE_FACTOR
    return np.array([t[0] - 0.5, height - t[1] - 0.5, side])


def official_crop_matrix(t: np.ndarray, s: float, width: int, height: int, out_size: int = OUTPUT_SIZE) -> np.ndarray:
    """The frame -> crop matrix of the official code, integer truncations included."""
    scale = RESCALE_FACTOR / s
    w = int(width * scale)
    h = int(height * scale)
    left = int(w / 2 - TARGET_SIZE / 2 + (t[0] - width / 2) * scale)
    up = int(h / 2 - TARGET_SIZE / 2 + (height / 2 - t[1]) * scale)
    sx, sy = w / width, h / height
    off = (TARGET_SIZE - CENTER_CROP) // 2
    k = out_size / CENTER_CROP
    # PIL resizes align pixel centres: (x_out + 0.5) = ((x + 0.5) * sx - left - off) * k
    return np.array(
        [[sx * k, 0.0, (0.5 * sx - left - off) * k - 0.5], [0.0, sy * k, (0.5 * sy - up - off) * k - 0.5]]
    )


def crop_params(landmarks: np.ndarray, height: int, cfg: AlignConfig = AlignConfig()) -> np.ndarray:
    """Landmarks [N, 68, 2] or [N, 5, 2] of frames ``height`` high -> crop squares [N, 3] (cx, cy, side); NaN
    rows stay NaN."""
    lm = np.asarray(landmarks, dtype=np.float64)
    out = np.full((lm.shape[0], 3), np.nan)
    pts = five_points(lm, cfg.eye_center)
    for i in range(lm.shape[0]):
        if np.isfinite(pts[i]).all():
            t, s = pos_fit(pts[i], height)
            out[i] = crop_params_from_pos(t, s, height)
    return out


def crop_matrices(params: np.ndarray, cfg: AlignConfig = AlignConfig()) -> np.ndarray:
    """Crop squares [N, 3] -> frame -> crop matrices [N, 2, 3] (continuous version)."""
    params = np.asarray(params, dtype=np.float64)
    return np.stack([square_crop_matrix(*p, cfg.out_size) for p in params]) if len(params) else np.zeros((0, 2, 3))


def official_matrices(landmarks: np.ndarray, width: int, height: int, cfg: AlignConfig = AlignConfig()) -> np.ndarray:
    """Landmarks [N, 68 or 5, 2] -> official (integer-truncated) matrices [N, 2, 3]; NaN where no landmarks."""
    lm = np.asarray(landmarks, dtype=np.float64)
    out = np.full((lm.shape[0], 2, 3), np.nan)
    pts = five_points(lm, cfg.eye_center)
    for i in range(lm.shape[0]):
        if np.isfinite(pts[i]).all():
            t, s = pos_fit(pts[i], height)
            out[i] = official_crop_matrix(t, s, width, height, cfg.out_size)
    return out


def params_of(matrices: np.ndarray, out_size: int = OUTPUT_SIZE) -> np.ndarray:
    """Crop squares (cx, cy, side) [N, 3] of frame -> crop matrices [N, 2, 3]."""
    return square_params(matrices, out_size)


def warp_crops(frames: np.ndarray, matrices: np.ndarray, cfg: AlignConfig = AlignConfig()) -> np.ndarray:
    """Cut the aligned crops [N, S, S, 3] uint8 out of frames [N, H, W, 3] with matrices [N, 2, 3]."""
    size = (cfg.out_size, cfg.out_size)
    flags = _INTERPOLATION[cfg.interpolation]
    crops = [warp_affine(f, m, size, interpolation=flags) for f, m in zip(frames, matrices)]
    if not crops:
        return np.zeros((0, cfg.out_size, cfg.out_size, 3), np.uint8)
    return np.stack(crops)


def official_crop_reference(image: np.ndarray, points5: np.ndarray) -> np.ndarray:
    """The official crop step by step with PIL (resize BICUBIC, crop 1024, crop 700, resize LANCZOS).

    A slow reference for tests; the pipeline uses :func:`official_crop_matrix` + one warp.
    """
    from PIL import Image

    h0, w0 = image.shape[:2]
    t, s = pos_fit(points5, h0)
    scale = RESCALE_FACTOR / s
    w, h = int(w0 * scale), int(h0 * scale)
    left = int(w / 2 - TARGET_SIZE / 2 + (t[0] - w0 / 2) * scale)
    up = int(h / 2 - TARGET_SIZE / 2 + (h0 / 2 - t[1]) * scale)
    img = Image.fromarray(image).resize((w, h), resample=Image.BICUBIC)
    img = img.crop((left, up, left + TARGET_SIZE, up + TARGET_SIZE))
    off = (TARGET_SIZE - CENTER_CROP) // 2
    img = img.crop((off, off, off + CENTER_CROP, off + CENTER_CROP))
    return np.asarray(img.resize((OUTPUT_SIZE, OUTPUT_SIZE), resample=Image.LANCZOS))


def apply(batch, cfg: AlignConfig = AlignConfig()):
    """Stage form without smoothing: add ``crop_matrix`` and ``crops`` from the batch's ``landmarks``.

    Frames without landmarks get a NaN matrix and a black crop; :mod:`vidtriplane.stages.preprocess`
    joins this with smoothing and held frames instead.
    """
    if batch.landmarks is None:
        raise ValueError("align needs landmarks: run the landmarks stage first")
    height, width = batch.frames.shape[1:3]
    if cfg.official_rounding:
        mats = official_matrices(batch.landmarks, width, height, cfg)
    else:
        mats = crop_matrices(crop_params(batch.landmarks, height, cfg), cfg)
    ok = np.isfinite(mats).all(axis=(1, 2))
    crops = np.zeros((len(batch), cfg.out_size, cfg.out_size) + batch.frames.shape[3:], np.uint8)
    if ok.any():
        crops[ok] = warp_crops(batch.frames[ok], mats[ok], cfg)
    return batch.with_fields(crop_matrix=mats.astype(np.float32), crops=crops)
