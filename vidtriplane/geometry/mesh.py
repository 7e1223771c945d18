"""Shape export: tri-plane density on a grid -> marching cubes -> ``.ply`` / ``.obj`` (``tpn:scripts/inference.py`` ``--shapes``, ``eg3d:eg3d/gen_samples.py``: ``create_samples``/``extract_shape``).

The official ``extract_shape`` (``tpn:models/eg3d/shape_utils.py``, run by ``scripts/inference.py
--shapes``) samples the raw density (decoder output 0) on a 256^3 grid spanning the ``box_warp`` cube,
sets a 30-voxel border (scaled with the grid size) to -1000 so the surface closes, and runs marching
cubes at level 10. Differences, on purpose:

* grid points are exactly ``-box/2 + i * box / (N - 1)`` per axis (the official ``create_samples``
  divides the flat index with a float division, which shifts y and x by up to a voxel);
* vertices are written in world coordinates (x, y, z of the EG3D tri-plane space) with outward-facing
  triangles, instead of the official voxel indices in (z, y, flipped x) order.

    density = triplane_density(planes, G.decoder, box_warp=G.cfg.box_warp)
    grid = trim_border(density_grid(density, resolution=256, box_warp=G.cfg.box_warp))
    mesh = marching_cubes(grid, level=10.0, box_warp=G.cfg.box_warp)
    write_ply("shape.ply", mesh); write_obj("shape.obj", mesh)

or in one call ``extract_mesh(planes, G.decoder, box_warp=...)``.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from vidtriplane.models.eg3d.renderer import Decoder, sample_from_planes

DensityFn = Callable[[torch.Tensor], torch.Tensor]
"""``density(coords [1, M, 3]) -> raw density [1, M, 1]`` in tri-plane world coordinates."""

DEFAULT_RESOLUTION = 256
DEFAULT_LEVEL = 10.0
BORDER_AT_256 = 30
BORDER_VALUE = -1000.0
DEFAULT_CHUNK = 1 << 19


@dataclass(frozen=True)
class Mesh:
    """A triangle mesh: vertices float32 [V, 3] (world units), faces int64 [F, 3] (counter-clockwise outside)."""

    vertices: np.ndarray
    faces: np.ndarray

    @property
    def is_empty(self) -> bool:
        return len(self.faces) == 0


def triplane_density(planes: torch.Tensor, decoder: Decoder, *, box_warp: float,
                     plane_features: int = 32) -> DensityFn:
    """The raw density of tri-planes [1, 3 * C, H, W] (or [1, 3, C, H, W]) through the OSG decoder."""
    if planes.ndim == 4:
        planes = planes.reshape(planes.shape[0], 3, plane_features, planes.shape[-2], planes.shape[-1])
    if planes.ndim != 5 or planes.shape[0] != 1 or planes.shape[1] != 3:
        raise ValueError(f"planes must be one plane set [1, 3 * C, H, W], got {list(planes.shape)}")

    def density(coords: torch.Tensor) -> torch.Tensor:
        _, sigma = decoder(sample_from_planes(planes, coords.to(planes.device, planes.dtype), box_warp))
        return sigma

    return density


def grid_axis(resolution: int, box_warp: float) -> torch.Tensor:
    """Sample positions along one axis: ``resolution`` points from -box/2 to +box/2 (inclusive)."""
    return torch.linspace(-box_warp / 2, box_warp / 2, resolution, dtype=torch.float64).float()


@torch.no_grad()
def density_grid(density: DensityFn, *, resolution: int = DEFAULT_RESOLUTION, box_warp: float = 1.0,
                 chunk: int = DEFAULT_CHUNK) -> np.ndarray:
    """float32 [N, N, N] densities indexed [ix, iy, iz], evaluated ``chunk`` points at a time."""
    if resolution < 2:
        raise ValueError(f"resolution must be >= 2, got {resolution}")
    axis = grid_axis(resolution, box_warp)
    out = np.empty(resolution ** 3, dtype=np.float32)
    n_yz = resolution * resolution
    for start in range(0, resolution ** 3, chunk):
        # 1. the flat indices of this chunk -> (ix, iy, iz) with iz fastest -> coordinates
        flat = torch.arange(start, min(start + chunk, resolution ** 3))
        coords = torch.stack([axis[flat // n_yz], axis[(flat // resolution) % resolution], axis[flat % resolution]], -1)
        # 2. densities
        sigma = density(coords[None])
        out[start:start + len(flat)] = sigma.reshape(-1).float().cpu().numpy()
    return out.reshape(resolution, resolution, resolution)


def trim_border(grid: np.ndarray, *, border: int | None = None, value: float = BORDER_VALUE) -> np.ndarray:
    """A copy with ``border`` voxels on every side set to ``value`` (default ``int(30 * N / 256)``)."""
    n = grid.shape[0]
    pad = int(BORDER_AT_256 * n / 256) if border is None else border
    out = np.array(grid, dtype=np.float32, copy=True)
    if pad > 0:
        for axis in range(3):
            index = [slice(None)] * 3
            index[axis] = slice(0, pad)
            out[tuple(index)] = value
            index[axis] = slice(n - pad, n)
            out[tuple(index)] = value
    return out


def marching_cubes(grid: np.ndarray, *, level: float = DEFAULT_LEVEL, box_warp: float = 1.0) -> Mesh:
    """The ``level`` iso-surface of a density grid (higher = inside) in world coordinates; empty if none."""
    try:
        from skimage.measure import marching_cubes as skimage_marching_cubes
    except ImportError:
        raise ImportError("shape export needs scikit-image: pip install scikit-image "
                          "(or pip install 'vidtriplane[mesh]')") from None
    n = grid.shape[0]
    if not (float(grid.min()) < level < float(grid.max())):
        return Mesh(np.zeros((0, 3), np.float32), np.zeros((0, 3), np.int64))
    # 'ascent': triangles face towards lower values, i.e. outwards for a density
    verts, faces, _, _ = skimage_marching_cubes(grid, level=level, gradient_direction="ascent",
                                                allow_degenerate=False)
    vertices = (verts * (box_warp / (n - 1)) - box_warp / 2).astype(np.float32)
    return Mesh(vertices, faces.astype(np.int64))


def extract_mesh(planes: torch.Tensor, decoder: Decoder, *, box_warp: float, resolution: int = DEFAULT_RESOLUTION,
                 level: float = DEFAULT_LEVEL, chunk: int = DEFAULT_CHUNK) -> Mesh:
    """Tri-planes [1, 96, H, W] -> density grid -> 30-voxel border -> marching cubes at ``level``."""
    density = triplane_density(planes, decoder, box_warp=box_warp)
    grid = trim_border(density_grid(density, resolution=resolution, box_warp=box_warp, chunk=chunk))
    return marching_cubes(grid, level=level, box_warp=box_warp)


def write_ply(path: str | Path, mesh: Mesh) -> None:
    """Binary little-endian PLY: float x, y, z per vertex; ``uchar`` count + ``int`` indices per face."""
    header = ("ply\nformat binary_little_endian 1.0\n"
              f"element vertex {len(mesh.vertices)}\nproperty float x\nproperty float y\nproperty float z\n"
              f"element face {len(mesh.faces)}\nproperty list uchar int vertex_indices\nend_header\n")
    faces = np.zeros(len(mesh.faces), dtype=[("n", "u1"), ("idx", "<i4", (3,))])
    faces["n"] = 3
    faces["idx"] = mesh.faces
    with open(path, "wb") as f:
        f.write(header.encode("ascii"))
        f.write(np.ascontiguousarray(mesh.vertices, dtype="<f4").tobytes())
        f.write(faces.tobytes())


def write_obj(path: str | Path, mesh: Mesh) -> None:
    """Wavefront OBJ text: ``v x y z`` lines, then 1-based ``f a b c`` lines."""
    with open(path, "w", encoding="ascii") as f:
        f.write(f"# vidtriplane shape: {len(mesh.vertices)} vertices, {len(mesh.faces)} faces\n")
        np.savetxt(f, mesh.vertices, fmt="v %.6f %.6f %.6f")
        np.savetxt(f, mesh.faces + 1, fmt="f %d %d %d")


def write_mesh(path: str | Path, mesh: Mesh, suffix: str | None = None) -> None:
    """Write ``.ply`` or ``.obj`` by ``suffix`` (default: the file's own; give it when writing a temp file)."""
    suffix = (suffix or Path(path).suffix).lower()
    if suffix == ".ply":
        write_ply(path, mesh)
    elif suffix == ".obj":
        write_obj(path, mesh)
    else:
        raise ValueError(f"mesh files must end in .ply or .obj, got {str(path)!r}")


__all__ = ["DensityFn", "Mesh", "density_grid", "extract_mesh", "grid_axis", "marching_cubes", "trim_border",
           "triplane_density", "write_mesh", "write_obj", "write_ply"]
