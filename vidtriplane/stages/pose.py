"""Head pose from 68 (or 5) landmarks -> the EG3D 25-number camera label
(``eg3d:dataset_preprocessing/ffhq/3dface2idr_mat.py``, ``preprocess_face_cameras.py``).

The official pipeline fits a 3D morphable model (Deep3DFaceRecon + the registration-gated Basel Face
Model). We instead solve a perspective-n-point problem between the landmarks *in the 512 crop* and a
68-point 3D face template expressed in the same BFM coordinate frame (x to image-right, y up, z towards
the camera, BFM units), using the crop camera EG3D assumes (focal 4.2647 x 512 px, principal point at
the centre). Then, as in ``3dface2idr_mat.py`` + ``preprocess_face_cameras.py --mode orig``:

    cam2world rotation = R_cv^T               (R_cv: template -> OpenCV camera, from PnP)
    C = 0.27 * (-R_cv^T t_cv) + (0, 0.006, 0.161);  C <- 2.7 * C / |C|
    label = [cam2world (4x4, row-major), K (3x3 normalized)]

(With R_cv = diag(1,-1,-1) R_face, R_cv^T equals the official ``R_face^T diag(1,-1,-1)``.)

The template: x, y come from the landmarks of scikit-image's public-domain ``astronaut.png`` (dlib 68
points), made left-right symmetric by averaging with the mirrored shape, placed onto the five BFM
reference points of Deep3DFaceRecon's ``align_img`` (eyes and nose by a similarity, mouth corners mapped onto theirs); z are
anthropometric depths chosen so that the eye-corner means, nose tip and mouth corners equal the BFM
reference depths. By default PnP uses the points that move least with expression and silhouette:
brows, nose, eyes, mouth corners and chin. Five-point landmarks (MTCNN) use :func:`template_5`, the same
template reduced to eye centres, nose tip and mouth corners the way Deep3DFaceRecon reduces the BFM's 68
points to its five reference points (``util/load_mats.py``: eye centre = mean of the two eye corners).
"""
from __future__ import annotations


import cv2
import numpy as np

from vidtriplane.config.preprocess import PoseConfig
from vidtriplane.geometry.constants import FOCAL, PRINCIPAL
from vidtriplane.geometry.warp import transform_points

BFM_TO_EG3D_SCALE = 0.27
BFM_TO_EG3D_SHIFT = np.array([0.0, 0.006, 0.161])
_FLIP = np.diag([1.0, -1.0, -1.0])

TEMPLATE_68 = np.array(
    [
    [-0.663, 0.254, -0.100], [-0.648, 0.080, -0.080], [-0.626, -0.078, -0.040], [-0.597, -0.251, 0.020],
    [-0.546, -0.410, 0.090], [-0.451, -0.554, 0.160], [-0.314, -0.669, 0.230], [-0.163, -0.762, 0.290],
    [0.003, -0.784, 0.320], [0.169, -0.761, 0.290], [0.320, -0.667, 0.230], [0.456, -0.551, 0.160],
    [0.550, -0.407, 0.090], [0.600, -0.248, 0.020], [0.628, -0.075, -0.040], [0.650, 0.084, -0.080],
    [0.663, 0.257, -0.100], [-0.563, 0.405, 0.080], [-0.491, 0.484, 0.170], [-0.375, 0.506, 0.230],
    [-0.260, 0.492, 0.270], [-0.144, 0.449, 0.290], [0.144, 0.450, 0.290], [0.259, 0.493, 0.270],
    [0.375, 0.508, 0.230], [0.490, 0.487, 0.170], [0.563, 0.408, 0.080], [0.000, 0.313, 0.300],
    [0.001, 0.183, 0.370], [0.001, 0.068, 0.450], [0.001, -0.047, 0.552], [-0.143, -0.113, 0.300],
    [-0.071, -0.135, 0.380], [0.001, -0.149, 0.420], [0.073, -0.134, 0.380], [0.146, -0.112, 0.300],
    [-0.432, 0.304, 0.066], [-0.361, 0.347, 0.140], [-0.260, 0.347, 0.180], [-0.187, 0.276, 0.200],
    [-0.274, 0.268, 0.180], [-0.360, 0.268, 0.140], [0.188, 0.277, 0.200], [0.260, 0.349, 0.180],
    [0.361, 0.349, 0.140], [0.433, 0.306, 0.064], [0.361, 0.270, 0.140], [0.274, 0.270, 0.180],
    [-0.252, -0.382, 0.223], [-0.161, -0.375, 0.330], [-0.070, -0.374, 0.400], [-0.002, -0.395, 0.420],
    [0.067, -0.373, 0.400], [0.157, -0.374, 0.330], [0.248, -0.380, 0.222], [0.163, -0.532, 0.320],
    [0.072, -0.597, 0.380], [-0.001, -0.612, 0.400], [-0.075, -0.598, 0.380], [-0.166, -0.533, 0.320],
    [-0.218, -0.404, 0.240], [-0.064, -0.424, 0.360], [-0.002, -0.439, 0.400], [0.061, -0.424, 0.360],
    [0.214, -0.402, 0.240], [0.067, -0.525, 0.360], [-0.002, -0.540, 0.390], [-0.070, -0.525, 0.360],
    ],
    dtype=np.float64,
)
"""3D landmark template [68, 3] in BFM units and axes (iBUG 68-point order, 0-based)."""

POINT_SETS = {
    "stable": tuple(range(17, 48)) + (48, 54, 8),
    "inner": tuple(range(17, 68)),
    "all": tuple(range(68)),
}


def template(cfg: PoseConfig = PoseConfig()) -> np.ndarray:
    """The 3D template [68, 3] with ``depth_scale`` applied about the mean eye-corner depth."""
    t = TEMPLATE_68.copy()
    z0 = t[[36, 39, 42, 45], 2].mean()
    t[:, 2] = z0 + (t[:, 2] - z0) * cfg.depth_scale
    return t


FIVE_FROM_68 = ((36, 39), (42, 45), (30,), (48,), (54,))
"""0-based template points averaged into each of the five points (left eye, right eye, nose, mouth corners)."""


def template_5(cfg: PoseConfig = PoseConfig()) -> np.ndarray:
    """The 3D template reduced to the five points of 5-point landmarks [5, 3] (``depth_scale`` applied)."""
    t = template(cfg)
    return np.stack([t[list(group)].mean(0) for group in FIVE_FROM_68])


def camera_matrix(size: int, focal: float = FOCAL) -> np.ndarray:
    """Pixel intrinsics of a ``size`` x ``size`` crop (pixel-centre coordinates)."""
    f = focal * size
    c = PRINCIPAL * size - 0.5
    return np.array([[f, 0.0, c], [0.0, f, c], [0.0, 0.0, 1.0]])


def solve_pose(points_crop: np.ndarray, size: int, cfg: PoseConfig = PoseConfig()) -> tuple[np.ndarray, np.ndarray]:
    """PnP of crop landmarks [68, 2] (``cfg.points`` of them) or [5, 2] -> (R_cv [3, 3], t_cv [3]) mapping
    template -> OpenCV camera."""
    img = np.asarray(points_crop, dtype=np.float64)
    if img.shape[0] == 5:
        obj = template_5(cfg)
    else:
        idx = list(POINT_SETS[cfg.points])
        obj, img = template(cfg)[idx], img[idx]
    k = camera_matrix(size, cfg.focal)
    # start from a frontal face at the distance that matches the crop scale, then refine (Levenberg-Marquardt)
    rvec0 = cv2.Rodrigues(_FLIP)[0]
    tvec0 = np.array([[0.0], [0.0], [cfg.focal * 700.0 / 300.0]])
    ok, rvec, tvec = cv2.solvePnP(obj, img, k, None, rvec0, tvec0, useExtrinsicGuess=True, flags=cv2.SOLVEPNP_ITERATIVE)
    if not ok:
        raise RuntimeError("solvePnP failed")
    return cv2.Rodrigues(rvec)[0], tvec[:, 0]


def label_from_pose(r_cv: np.ndarray, t_cv: np.ndarray, cfg: PoseConfig = PoseConfig()) -> np.ndarray:
    """(R_cv, t_cv) in BFM units -> EG3D label [25] (sections 5.3-5.4, 'orig' normalisation)."""
    c2w_rot = r_cv.T
    centre = BFM_TO_EG3D_SCALE * (-r_cv.T @ t_cv) + BFM_TO_EG3D_SHIFT
    centre = centre / np.linalg.norm(centre) * cfg.radius
    pose = np.eye(4)
    pose[:3, :3] = c2w_rot
    pose[:3, 3] = centre
    k = np.array([[cfg.focal, 0.0, PRINCIPAL], [0.0, cfg.focal, PRINCIPAL], [0.0, 0.0, 1.0]])
    return np.concatenate([pose.reshape(16), k.reshape(9)])


def head_rotation(r_cv: np.ndarray) -> np.ndarray:
    """Rotation of the head relative to a frontal face, as a rotation vector (x: pitch, y: yaw, z: roll)."""
    return cv2.Rodrigues(_FLIP @ r_cv)[0][:, 0]


def pose_from_rotvec(rotvec: np.ndarray, t_cv: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Inverse of :func:`head_rotation` (used after smoothing)."""
    return _FLIP @ cv2.Rodrigues(np.asarray(rotvec, dtype=np.float64).reshape(3, 1))[0], np.asarray(t_cv, np.float64)


def estimate(
    landmarks: np.ndarray, crop_matrices: np.ndarray, size: int, cfg: PoseConfig = PoseConfig()
) -> tuple[np.ndarray, np.ndarray]:
    """Frame landmarks [N, 68 or 5, 2] + frame -> crop matrices [N, 2, 3] -> (rotvec [N, 3], t [N, 3]).

    Rows are NaN where there is no face or PnP fails.
    """
    n = landmarks.shape[0]
    rot = np.full((n, 3), np.nan)
    trans = np.full((n, 3), np.nan)
    for i in range(n):
        if not (np.isfinite(landmarks[i]).all() and np.isfinite(crop_matrices[i]).all()):
            continue
        pts = transform_points(crop_matrices[i], landmarks[i])
        try:
            r, t = solve_pose(pts, size, cfg)
        except (RuntimeError, cv2.error):  # degenerate landmarks: treated like a frame without a face
            continue
        rot[i], trans[i] = head_rotation(r), t
    return rot, trans


def labels(rotvecs: np.ndarray, trans: np.ndarray, cfg: PoseConfig = PoseConfig()) -> np.ndarray:
    """Rotation vectors [N, 3] + translations [N, 3] -> labels [N, 25] float32."""
    out = np.zeros((len(rotvecs), 25), dtype=np.float32)
    for i, (rv, t) in enumerate(zip(rotvecs, trans)):
        out[i] = label_from_pose(*pose_from_rotvec(rv, t), cfg)
    return out


def frontal_label(cfg: PoseConfig = PoseConfig()) -> np.ndarray:
    """Label of a frontal head centred in the crop (used as the fallback when no face was ever seen)."""
    return label_from_pose(_FLIP, np.array([0.0, 0.0, cfg.focal * 700.0 / 300.0]), cfg).astype(np.float32)


def apply(batch, cfg: PoseConfig = PoseConfig()):
    """Stage form without smoothing: add ``labels`` from ``landmarks`` (``pose_landmarks`` when set) and
    ``crop_matrix`` (frontal where no face)."""
    if batch.landmarks is None or batch.crop_matrix is None:
        raise ValueError("pose needs landmarks and crop_matrix: run the landmarks and align stages first")
    size = batch.crops.shape[1] if batch.crops is not None else 512
    points = batch.pose_landmarks if batch.pose_landmarks is not None else batch.landmarks
    rot, trans = estimate(points, batch.crop_matrix.astype(np.float64), size, cfg)
    out = labels(np.nan_to_num(rot), np.where(np.isfinite(trans), trans, [0.0, 0.0, 1.0]), cfg)
    missing = ~np.isfinite(rot).all(axis=1)
    out[missing] = frontal_label(cfg)
    return batch.with_fields(labels=out)
