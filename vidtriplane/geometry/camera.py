"""EG3D camera conventions: the 25-number label, look-at cameras, mirroring.

A label is 16 numbers of a row-major 4x4 cam2world matrix in the OpenCV convention (x right, y down,
z = viewing direction) followed by the 9 numbers of the normalized 3x3 intrinsics
``[[f, 0, cx], [0, f, cy], [0, 0, 1]]`` with f = 4.2647 (= 2985.29 / 700) and cx = cy = 0.5.

Cameras of the FFHQ model sit on a sphere of radius 2.7 around the world origin and look at the pivot
(0, 0, 0.2). Yaw and pitch are offsets from the frontal camera in radians, as in the official
``LookAtPoseSampler(pi/2 + yaw, pi/2 + pitch, pivot, radius)``: yaw > 0 moves the camera to +x,
pitch > 0 moves it down (-y).

Every function takes and returns torch tensors and accepts a leading batch dimension.
Facts from ``eg3d:eg3d/camera_utils.py`` (``LookAtPoseSampler``) and ``eg3d:dataset_preprocessing/ffhq/preprocess_face_cameras.py``.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch

from vidtriplane.geometry.constants import FOCAL, LABEL_DIM, PIVOT, PRINCIPAL, RADIUS


def intrinsics(
    focal: float = FOCAL,
    principal: float = PRINCIPAL,
    *,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Normalized 3x3 intrinsics [[f, 0, c], [0, f, c], [0, 0, 1]]."""
    return torch.tensor(
        [[focal, 0.0, principal], [0.0, focal, principal], [0.0, 0.0, 1.0]], dtype=dtype, device=device
    )


def make_label(cam2world: torch.Tensor, K: torch.Tensor | None = None) -> torch.Tensor:
    """[..., 4, 4] cam2world (+ [..., 3, 3] or [3, 3] intrinsics) -> [..., 25] label."""
    if K is None:
        K = intrinsics(dtype=cam2world.dtype, device=cam2world.device)
    K = K.to(cam2world).expand(*cam2world.shape[:-2], 3, 3)
    return torch.cat([cam2world.flatten(-2), K.flatten(-2)], dim=-1)


def split_label(label: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """[..., 25] label -> ([..., 4, 4] cam2world, [..., 3, 3] intrinsics)."""
    if label.shape[-1] != LABEL_DIM:
        raise ValueError(f"a camera label has 25 numbers, got shape {tuple(label.shape)}")
    return label[..., :16].unflatten(-1, (4, 4)), label[..., 16:].unflatten(-1, (3, 3))


def _normalize(v: torch.Tensor) -> torch.Tensor:
    return v / torch.linalg.vector_norm(v, dim=-1, keepdim=True)


def look_at(origin: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """cam2world [..., 4, 4] for cameras at ``origin`` looking at ``target`` with world +y up.

    Columns are (right, down, forward, origin) so that camera y points down the image (OpenCV).
    """
    forward = _normalize(target - origin)
    world_up = torch.zeros_like(forward)
    world_up[..., 1] = 1.0
    right = -_normalize(torch.cross(world_up, forward, dim=-1))
    down = _normalize(torch.cross(forward, right, dim=-1))
    m = torch.zeros(*origin.shape[:-1], 4, 4, dtype=origin.dtype, device=origin.device)
    m[..., :3, 0] = right
    m[..., :3, 1] = down
    m[..., :3, 2] = forward
    m[..., :3, 3] = origin
    m[..., 3, 3] = 1.0
    return m


def _as_tensor(x: float | Sequence[float] | torch.Tensor, dtype, device) -> torch.Tensor:
    return torch.as_tensor(x, dtype=dtype, device=device)


def orbit_origin(
    yaw: float | Sequence[float] | torch.Tensor,
    pitch: float | Sequence[float] | torch.Tensor = 0.0,
    radius: float = RADIUS,
    *,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Camera centre [..., 3] on the sphere of ``radius`` around the origin (EG3D's parametrisation)."""
    yaw_t = _as_tensor(yaw, dtype, device)
    pitch_t = _as_tensor(pitch, dtype, device)
    yaw_t, pitch_t = torch.broadcast_tensors(yaw_t, pitch_t)
    h = math.pi / 2 + yaw_t
    v = torch.clamp(math.pi / 2 + pitch_t, 1e-5, math.pi - 1e-5)
    phi = torch.arccos(1 - 2 * (v / math.pi))
    return torch.stack(
        [
            radius * torch.sin(phi) * torch.cos(math.pi - h),
            radius * torch.cos(phi),
            radius * torch.sin(phi) * torch.sin(math.pi - h),
        ],
        dim=-1,
    )


def lookat_cam2world(
    yaw: float | Sequence[float] | torch.Tensor = 0.0,
    pitch: float | Sequence[float] | torch.Tensor = 0.0,
    radius: float = RADIUS,
    pivot: Sequence[float] = PIVOT,
    *,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """cam2world [..., 4, 4] of the official LookAtPoseSampler(pi/2 + yaw, pi/2 + pitch, pivot, radius)."""
    origin = orbit_origin(yaw, pitch, radius, dtype=dtype, device=device)
    target = torch.as_tensor(pivot, dtype=dtype, device=device).expand_as(origin)
    return look_at(origin, target)


def lookat_label(
    yaw: float | Sequence[float] | torch.Tensor = 0.0,
    pitch: float | Sequence[float] | torch.Tensor = 0.0,
    radius: float = RADIUS,
    pivot: Sequence[float] = PIVOT,
    focal: float = FOCAL,
    *,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Label [..., 25] of a look-at camera at (yaw, pitch) with the FFHQ intrinsics."""
    c2w = lookat_cam2world(yaw, pitch, radius, pivot, dtype=dtype, device=device)
    return make_label(c2w, intrinsics(focal, dtype=dtype, device=device))


def with_pose(label: torch.Tensor, cam2world: torch.Tensor) -> torch.Tensor:
    """Replace the pose of ``label`` (keeping its intrinsics), as the official novel-view inference does."""
    cam2world = cam2world.to(label).expand(*label.shape[:-1], 4, 4)
    return torch.cat([cam2world.flatten(-2), label[..., 16:]], dim=-1)


def yaw_pitch(label: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Inverse of :func:`orbit_origin`: (yaw, pitch) in radians of the camera centre of ``label``.

    Exact for look-at labels; for any other label it is the direction of the camera centre seen
    from the world origin (the radius does not matter).
    """
    origin = split_label(label)[0][..., :3, 3]
    x, y, z = origin.unbind(-1)
    r = torch.linalg.vector_norm(origin, dim=-1)
    yaw = math.pi / 2 - torch.atan2(z, x)
    cos_phi = torch.clamp(y / r, -1.0, 1.0)
    pitch = (math.pi / 2) * (1 - cos_phi) - math.pi / 2
    return yaw, pitch


def flip_yaw(label: torch.Tensor) -> torch.Tensor:
    """Label of the left-right mirrored image (official ``flip_yaw``): reflect world x."""
    c2w, K = split_label(label)
    c2w = c2w.clone()
    for i, j in ((0, 1), (0, 2), (1, 0), (2, 0), (0, 3)):
        c2w[..., i, j] = -c2w[..., i, j]
    return make_label(c2w, K)


def angle_between(label_a: torch.Tensor, label_b: torch.Tensor) -> torch.Tensor:
    """Geodesic angle (radians) between the rotations of two labels."""
    ra = split_label(label_a)[0][..., :3, :3]
    rb = split_label(label_b)[0][..., :3, :3]
    rel = ra.transpose(-1, -2) @ rb
    cos = (rel.diagonal(dim1=-2, dim2=-1).sum(-1) - 1) / 2
    return torch.arccos(torch.clamp(cos, -1.0, 1.0))
