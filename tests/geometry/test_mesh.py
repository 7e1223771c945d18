"""Shape export: grid layout, a closed sphere of the right radius, PLY/OBJ files, the tiny EG3D end to end."""
from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch

from vidtriplane.geometry.mesh import (
    Mesh,
    density_grid,
    extract_mesh,
    marching_cubes,
    trim_border,
    triplane_density,
    write_mesh,
    write_ply,
)
from vidtriplane.models.eg3d import EG3DConfig, EG3DGenerator
from vidtriplane.models.eg3d.renderer import sample_from_planes


def _sphere(radius: float, centre=(0.0, 0.0, 0.0), slope: float = 200.0):
    c = torch.tensor(centre)

    def density(coords: torch.Tensor) -> torch.Tensor:
        return (10.0 + slope * (radius - (coords - c).norm(dim=-1)))[..., None]

    return density


def _edge_counts(faces: np.ndarray) -> Counter:
    edges = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])
    return Counter(map(tuple, np.sort(edges, axis=1).tolist()))


def _signed_volume(mesh: Mesh) -> float:
    a, b, c = (mesh.vertices[mesh.faces[:, i]].astype(np.float64) for i in range(3))
    return float(np.einsum("ij,ij->i", a, np.cross(b, c)).sum() / 6)


def test_grid_layout_and_chunking():
    n, box = 9, 0.8
    linear = lambda p: (100 * p[..., 0] + 10 * p[..., 1] + p[..., 2])[..., None]  # noqa: E731
    grid = density_grid(linear, resolution=n, box_warp=box, chunk=7)
    step = box / (n - 1)
    i, j, k = 2, 5, 8
    x, y, z = -box / 2 + i * step, -box / 2 + j * step, -box / 2 + k * step
    assert grid.shape == (n, n, n) and grid.dtype == np.float32
    assert grid[i, j, k] == pytest.approx(100 * x + 10 * y + z, abs=1e-4)
    assert grid[0, 0, 0] == pytest.approx(-111 * box / 2, abs=1e-4)
    assert np.array_equal(grid, density_grid(linear, resolution=n, box_warp=box, chunk=10**6))


def test_border_is_scaled_with_the_grid():
    grid = np.ones((64, 64, 64), np.float32)
    out = trim_border(grid)
    pad = int(30 * 64 / 256)  # 7 voxels
    assert out[pad, pad, pad] == 1 and out[pad - 1, 32, 32] == -1000 and out[32, 32, 64 - pad] == -1000
    assert out[32, 64 - pad - 1, 32] == 1 and grid.min() == 1  # input untouched
    assert (trim_border(grid, border=0) == 1).all()


def test_sphere_gives_a_closed_outward_mesh_of_the_right_radius(tmp_path):
    n, box, radius = 64, 1.0, 0.3
    centre = (0.05, -0.02, 0.03)
    grid = trim_border(density_grid(_sphere(radius, centre), resolution=n, box_warp=box))
    mesh = marching_cubes(grid, level=10.0, box_warp=box)
    voxel = box / (n - 1)
    dist = np.linalg.norm(mesh.vertices - np.array(centre), axis=1)
    assert len(mesh.faces) > 1000
    assert np.abs(dist - radius).max() < voxel  # within a voxel everywhere
    assert np.abs(dist - radius).mean() < 0.1 * voxel
    counts = _edge_counts(mesh.faces)
    assert set(counts.values()) == {2}  # watertight: every edge shared by exactly two triangles
    euler = len(mesh.vertices) - len(counts) + len(mesh.faces)
    assert euler == 2  # one closed sphere-like surface
    assert _signed_volume(mesh) == pytest.approx(4 / 3 * np.pi * radius ** 3, rel=0.02)  # outward normals


def test_nothing_above_the_level_gives_an_empty_mesh(tmp_path):
    grid = np.zeros((8, 8, 8), np.float32)
    mesh = marching_cubes(grid, level=10.0)
    assert mesh.is_empty and mesh.vertices.shape == (0, 3)
    write_ply(tmp_path / "empty.ply", mesh)
    assert b"element vertex 0" in (tmp_path / "empty.ply").read_bytes()


def _read_ply(path) -> Mesh:
    data = path.read_bytes()
    head, body = data.split(b"end_header\n", 1)
    lines = head.decode("ascii").splitlines()
    assert lines[:2] == ["ply", "format binary_little_endian 1.0"]
    nv = int(next(l for l in lines if l.startswith("element vertex")).split()[-1])
    nf = int(next(l for l in lines if l.startswith("element face")).split()[-1])
    verts = np.frombuffer(body[:nv * 12], dtype="<f4").reshape(nv, 3)
    rec = np.frombuffer(body[nv * 12:], dtype=[("n", "u1"), ("i", "<i4", (3,))])
    assert len(rec) == nf and (rec["n"] == 3).all()
    return Mesh(verts, rec["i"].astype(np.int64))


def _read_obj(path) -> Mesh:
    v, f = [], []
    for line in path.read_text().splitlines():
        if line.startswith("v "):
            v.append([float(t) for t in line.split()[1:]])
        elif line.startswith("f "):
            f.append([int(t) - 1 for t in line.split()[1:]])
    return Mesh(np.array(v, np.float32), np.array(f, np.int64))


def test_ply_and_obj_round_trip(tmp_path):
    mesh = marching_cubes(trim_border(density_grid(_sphere(0.25), resolution=24)), level=10.0)
    write_mesh(tmp_path / "s.ply", mesh)
    write_mesh(tmp_path / "s.obj", mesh)
    ply, obj = _read_ply(tmp_path / "s.ply"), _read_obj(tmp_path / "s.obj")
    assert np.array_equal(ply.vertices, mesh.vertices) and np.array_equal(ply.faces, mesh.faces)
    assert np.allclose(obj.vertices, mesh.vertices, atol=1e-6) and np.array_equal(obj.faces, mesh.faces)
    with pytest.raises(ValueError, match=".ply or .obj"):
        write_mesh(tmp_path / "s.stl", mesh)


def test_tiny_eg3d_planes_through_the_real_path(tmp_path):
    torch.manual_seed(0)
    G = EG3DGenerator(EG3DConfig.tiny()).eval()
    with torch.no_grad():
        planes = G.backbone_planes(torch.randn(1, G.cfg.num_ws, G.cfg.w_dim))
    density = triplane_density(planes, G.decoder, box_warp=G.cfg.box_warp)
    grid = density_grid(density, resolution=24, box_warp=G.cfg.box_warp, chunk=5000)
    # the grid holds the decoder's raw density at the grid points
    p = torch.tensor([[[-0.5 + 3 / 23, -0.5 + 17 / 23, -0.5 + 11 / 23]]])
    with torch.no_grad():
        _, sigma = G.decoder(sample_from_planes(planes.reshape(1, 3, 32, 64, 64), p, 1.0))
    assert grid[3, 17, 11] == pytest.approx(float(sigma), rel=1e-5, abs=1e-6)
    level = float(np.median(grid[5:-5, 5:-5, 5:-5]))  # random weights: pick a level inside the range
    mesh = extract_mesh(planes, G.decoder, box_warp=G.cfg.box_warp, resolution=24, level=level, chunk=5000)
    assert not mesh.is_empty
    pad = int(30 * 24 / 256)  # 2 voxels at -1000: the surface stays between voxel pad - 1 and the rest
    assert np.abs(mesh.vertices).max() <= 0.5 - (pad - 1) / 23 + 1e-6
    assert set(_edge_counts(mesh.faces).values()) == {2}  # the -1000 border closes every surface
    write_ply(tmp_path / "g.ply", mesh)
    assert np.array_equal(_read_ply(tmp_path / "g.ply").faces, mesh.faces)
    with pytest.raises(ValueError, match="one plane set"):
        triplane_density(torch.cat([planes, planes]), G.decoder, box_warp=1.0)
