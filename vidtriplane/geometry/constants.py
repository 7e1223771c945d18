"""EG3D / FFHQ camera and crop constants (plain numbers; importing this module loads nothing heavy).

Facts from the official code: the normalised focal length 2985.29 / 700 and principal point 0.5
(`eg3d:dataset_preprocessing/ffhq/preprocess_face_cameras.py`), cameras on a sphere of radius 2.7 looking
at the pivot (0, 0, 0.2) (`eg3d:eg3d/camera_utils.py`, `LookAtPoseSampler`), 25-number labels
(16 cam2world + 9 intrinsics), 512 px aligned crops (`crop_images_in_the_wild.py`).
"""
from __future__ import annotations

FOCAL = 4.2647
"""Normalised focal length of the FFHQ crops (2985.29 / 700)."""
PRINCIPAL = 0.5
"""Normalised principal point."""
RADIUS = 2.7
"""Distance of the camera from the world origin."""
PIVOT = (0.0, 0.0, 0.2)
"""Point the look-at cameras aim at."""
LABEL_DIM = 25
"""Numbers in one camera label: cam2world 4x4 then intrinsics 3x3, row-major."""
CROP_SIZE = 512
"""Side of the aligned EG3D face crop in pixels."""
