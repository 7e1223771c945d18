"""112x112 face alignment for the ID metric (``tpn:models/mtcnn/mtcnn.py``: ``align``).

The official metric detects five landmarks with MTCNN (left eye, right eye, nose tip, left and right
mouth corner, image coordinates), fits a similarity transform onto the reference points of the 96x112
ArcFace template shifted by +8 px in x (``get_reference_facial_points(default_square=True)``), warps the
image to 112x112 with bilinear interpolation (``cv2.warpAffine``, black outside) and normalises it to
[-1, 1]. The fit is the least-squares similarity of ``cp2tform('similarity')``: the best rotation+scale
and the best reflection+scale are both fitted and the one with the smaller residual wins.

The detector is pluggable. An :data:`Aligner` maps a batch of uint8 RGB images to aligned faces::

    align_112(images_uint8: np.ndarray [N, H, W, 3]) -> (aligned [N, 3, 112, 112] float in [-1, 1], found [N] bool)

:func:`landmark_aligner` builds one from any five-point detector ``image -> [5, 2] or None``;
:func:`mtcnn_aligner` is the metric's own: MTCNN with its thresholds (:mod:`vidtriplane.stages.face_mtcnn`).
"""
from __future__ import annotations

from typing import Callable

import cv2
import numpy as np
import torch

from vidtriplane.geometry.warp import warp_affine

ALIGNED_SIZE = 112
# ArcFace 96x112 template (x, y): eyes, nose, mouth corners (``align_trans.py: REFERENCE_FACIAL_POINTS``)
REFERENCE_96X112 = np.array([
    [30.29459953, 51.69630051],
    [65.53179932, 51.50139999],
    [48.02519989, 71.73660278],
    [33.54930115, 92.3655014],
    [62.72990036, 92.20410156],
])
# made square: (112 - 96) / 2 = 8 px added on the left
REFERENCE_112 = REFERENCE_96X112 + np.array([8.0, 0.0])

Aligner = Callable[[np.ndarray], tuple[torch.Tensor, np.ndarray]]
"""``align_112(images_uint8 [N, H, W, 3]) -> (aligned [N, 3, 112, 112] in [-1, 1], found [N] bool)``."""
Detector = Callable[[np.ndarray], "np.ndarray | None"]
"""``detect(image_uint8 [H, W, 3]) -> [5, 2] landmarks (x, y) of the face to use, or None``."""


def _fit(src: np.ndarray, dst: np.ndarray, reflect: bool) -> tuple[np.ndarray, float]:
    """Least-squares ``dst ~ [[a, -b], [b, a]] src + t`` (or ``[[a, b], [b, -a]]`` when reflecting)."""
    x, y = src[:, 0], src[:, 1]
    one, zero = np.ones_like(x), np.zeros_like(x)
    s = -1.0 if reflect else 1.0
    # rows for u = a x - s b y + tx and v = b x + s a y + ty; unknowns (a, b, tx, ty)
    rows_u = np.stack([x, -s * y, one, zero], axis=1)
    rows_v = np.stack([s * y, x, zero, one], axis=1)
    design = np.concatenate([rows_u, rows_v])
    target = np.concatenate([dst[:, 0], dst[:, 1]])
    (a, b, tx, ty), *_ = np.linalg.lstsq(design, target, rcond=None)
    m = np.array([[a, -s * b, tx], [b, s * a, ty]])
    residual = float(np.linalg.norm(design @ np.array([a, b, tx, ty]) - target))
    return m, residual


def similarity_transform(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """The [2, 3] similarity (rotation or reflection, uniform scale, translation) that best maps src onto dst."""
    src = np.asarray(src, dtype=np.float64).reshape(-1, 2)
    dst = np.asarray(dst, dtype=np.float64).reshape(-1, 2)
    if src.shape != dst.shape or len(src) < 2:
        raise ValueError(f"need matching point sets of at least 2 points, got {src.shape} and {dst.shape}")
    plain, r_plain = _fit(src, dst, reflect=False)
    mirrored, r_mirrored = _fit(src, dst, reflect=True)
    return plain if r_plain <= r_mirrored else mirrored


def warp_face_112(image: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
    """uint8 [H, W, 3] image + five landmarks [5, 2] -> the aligned uint8 [112, 112, 3] face."""
    m = similarity_transform(landmarks, REFERENCE_112)
    return warp_affine(image, m, (ALIGNED_SIZE, ALIGNED_SIZE), interpolation=cv2.INTER_LINEAR, antialias=False)


def faces_to_tensor(faces: np.ndarray) -> torch.Tensor:
    """uint8 [N, 112, 112, 3] -> float [N, 3, 112, 112] in [-1, 1] (``ToTensor`` then ``Normalize(.5, .5)``)."""
    t = torch.from_numpy(np.ascontiguousarray(faces)).permute(0, 3, 1, 2).float() / 255
    return (t - 0.5) / 0.5


def landmark_aligner(detect: Detector) -> Aligner:
    """An :data:`Aligner` from a five-point detector; images without a face give zeros and found=False."""

    def align_112(images: np.ndarray) -> tuple[torch.Tensor, np.ndarray]:
        if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
            raise ValueError(f"align_112 needs uint8 images [N, H, W, 3], got {images.dtype} {list(images.shape)}")
        faces = np.zeros((len(images), ALIGNED_SIZE, ALIGNED_SIZE, 3), dtype=np.uint8)
        found = np.zeros(len(images), dtype=bool)
        for i, image in enumerate(images):
            points = detect(image)
            if points is not None:
                faces[i] = warp_face_112(image, np.asarray(points, dtype=np.float64).reshape(5, 2))
                found[i] = True
        return faces_to_tensor(faces), found

    return align_112


ID_PYRAMID_FACTOR = 0.707
"""Pyramid ratio of the metric's MTCNN (``tpn:models/mtcnn/mtcnn.py: detect_faces``, sqrt(0.5))."""


def mtcnn_aligner(nets: torch.nn.Module, device: "str | torch.device | None" = None) -> Aligner:
    """The ID metric's aligner: MTCNN (``nets``, e.g. ``checkpoints.load_mtcnn(resolve("mtcnn"))``, moved to
    ``device`` when given) with the metric's settings, as ``tpn:models/mtcnn/mtcnn.py: align`` runs it:

    Thresholds 0.15 / 0.25 / 0.35, NMS 0.7 at every stage, min face 20 px, pyramid ratio 0.707; the face is
    the detection with the highest O-net score (``landmarks[0]``: its NMS keeps faces by score). The official
    code warps with MTCNN's own landmark coordinates, which are ours plus half a pixel, so that is what is
    warped here. (The cascade itself is :func:`~vidtriplane.stages.face_mtcnn.detect`, which follows the
    TensorFlow ``mtcnn`` package; the metric's PyTorch port resizes the pyramid levels with PIL and rounds
    boxes where the TensorFlow package truncates them, so its points are not reproduced exactly.)
    """
    from vidtriplane.stages import face_mtcnn

    if device is not None:
        nets = nets.to(device)

    def detect(image: np.ndarray) -> "np.ndarray | None":
        found = face_mtcnn.detect(nets, image[None], thresholds=face_mtcnn.ID_METRIC_THRESHOLDS,
                                  min_face=face_mtcnn.MIN_FACE, scale_factor=ID_PYRAMID_FACTOR,
                                  nms_thresholds=face_mtcnn.NMS_THRESHOLDS)[0]
        if len(found) == 0:
            return None
        return found.points[0].detach().cpu().double().numpy() + face_mtcnn.HALF_PIXEL

    return landmark_aligner(detect)


__all__ = ["ALIGNED_SIZE", "Aligner", "Detector", "ID_PYRAMID_FACTOR", "REFERENCE_112", "REFERENCE_96X112",
           "faces_to_tensor", "landmark_aligner", "mtcnn_aligner", "similarity_transform", "warp_face_112"]
