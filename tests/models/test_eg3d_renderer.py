"""The renderer's pure functions, each alone, against closed-form expectations."""
from __future__ import annotations

import math

import pytest
import torch

from vidtriplane.geometry.camera import lookat_label
from vidtriplane.models.eg3d.decoder import OSGDecoder
from vidtriplane.models.eg3d.renderer import (RenderSettings, coarse_depths, importance_depths, merge_samples,
                                              project_onto_planes, ray_bundle, ray_march, ray_weights, render_rays,
                                              sample_from_planes, sample_pdf)


def _frontal(resolution: int = 8):
    c = torch.tensor([[1.0, 0, 0, 0, 0, -1, 0, 0, 0, 0, -1, 2.7, 0, 0, 0, 1, 4.2647, 0, 0.5, 0, 4.2647, 0.5, 0, 0, 1]])
    return ray_bundle(c[:, :16].reshape(1, 4, 4), c[:, 16:].reshape(1, 3, 3), resolution)


def test_ray_bundle_frontal_camera_geometry():
    origins, dirs = _frontal(8)
    assert origins.shape == dirs.shape == (1, 64, 3)
    assert torch.allclose(origins, torch.tensor([0.0, 0.0, 2.7]))
    assert torch.allclose(dirs.norm(dim=-1), torch.ones(1, 64))
    grid = dirs.reshape(8, 8, 3)
    # row-major: columns go +x (right), rows go -y (image y is down, world y is up); all look along -z
    assert (grid[:, 1:, 0] > grid[:, :-1, 0]).all() and (grid[1:, :, 1] < grid[:-1, :, 1]).all()
    assert (grid[..., 2] < -0.98).all()
    # pixel (0, 0) centre: u = v = 1/16 -> x_cam = (1/16 - 0.5) / 4.2647
    x_cam = (1 / 16 - 0.5) / 4.2647
    expected = torch.tensor([x_cam, -x_cam, -1.0]) / math.sqrt(2 * x_cam**2 + 1)
    assert torch.allclose(grid[0, 0], expected, atol=1e-6)


def test_ray_bundle_uses_the_camera_pose():
    c = lookat_label([0.4], [-0.2])
    origins, dirs = ray_bundle(c[:, :16].reshape(-1, 4, 4), c[:, 16:].reshape(-1, 3, 3), 16)
    centre = dirs.reshape(16, 16, 3)[7:9, 7:9].mean(dim=(0, 1))
    forward = c[0, :16].reshape(4, 4)[:3, 2]
    assert torch.allclose(centre / centre.norm(), forward, atol=1e-3)
    assert torch.allclose(origins[0, 0], c[0, :16].reshape(4, 4)[:3, 3])


def test_coarse_depths_deterministic_are_mid_intervals():
    t = coarse_depths(2, 3, 48, 2.25, 3.3)
    delta = 1.05 / 47
    expected = 2.25 + (torch.arange(48, dtype=torch.float64) + 0.5) * delta
    assert t.shape == (2, 3, 48, 1)
    assert torch.allclose(t[1, 2, :, 0].double(), expected, atol=1e-6)
    assert (t == t[0, 0]).all()


def test_coarse_depths_stochastic_stay_in_their_strata_and_are_seeded():
    kw = dict(sampling="stochastic")
    a = coarse_depths(1, 2000, 10, 2.0, 3.0, generator=torch.Generator().manual_seed(3), **kw)
    b = coarse_depths(1, 2000, 10, 2.0, 3.0, generator=torch.Generator().manual_seed(3), **kw)
    base = torch.linspace(2.0, 3.0, 10).reshape(1, 1, 10, 1)
    assert torch.equal(a, b)
    assert ((a - base) >= 0).all() and ((a - base) < 1 / 9 + 1e-6).all()
    # the jitter is uniform: its mean is the deterministic offset
    assert abs(((a - base) * 9).mean().item() - 0.5) < 0.01
    assert a[0, 0].ne(a[0, 1]).any()


def test_sample_pdf_inverts_the_cdf():
    bins = torch.linspace(0.0, 4.0, 5).reshape(1, 5)  # 4 intervals
    u = torch.linspace(0, 1, 9).reshape(1, 9)
    uniform = sample_pdf(bins, torch.ones(1, 4), u)
    assert torch.allclose(uniform, 4 * u, atol=1e-4)
    peaked = sample_pdf(bins, torch.tensor([[0.0, 0.0, 1.0, 0.0]]), torch.tensor([[0.1, 0.5, 0.9]]))
    assert ((peaked > 2.0 - 1e-3) & (peaked < 3.0 + 1e-3)).all()


def test_importance_depths_deterministic_endpoints_follow_the_official_pairing():
    depths = coarse_depths(1, 2, 48, 2.25, 3.3)
    weights = torch.rand(1, 2, 47, 1, generator=torch.Generator().manual_seed(0))
    fine = importance_depths(depths, weights, 48)
    bins = 0.5 * (depths[0, 0, :-1, 0] + depths[0, 0, 1:, 0])
    assert fine.shape == (1, 2, 48, 1)
    assert torch.allclose(fine[0, :, 0, 0], bins[0].expand(2)) and torch.allclose(fine[0, :, -1, 0], bins[45].expand(2))
    assert (fine[..., 0].diff(dim=-1) >= 0).all()
    stoch = importance_depths(depths, weights, 48, sampling="stochastic", generator=torch.Generator().manual_seed(1))
    assert not torch.allclose(stoch, fine) and (stoch >= bins[0]).all() and (stoch <= bins[45]).all()


def test_plane_projection_is_xy_xz_zx():
    p = torch.tensor([[[0.1, 0.2, 0.3]]])
    assert torch.equal(project_onto_planes(p)[0, :, 0], torch.tensor([[0.1, 0.2], [0.1, 0.3], [0.3, 0.1]]))


def test_sample_from_planes_reads_pixel_centres_and_is_zero_outside():
    planes = torch.arange(3 * 2 * 4 * 4, dtype=torch.float32).reshape(1, 3, 2, 4, 4)
    # box_warp 2: coords map 1:1 to grid; pixel (row 1, col 2) centre of a 4-wide grid is at (0.25, -0.25)
    pts = torch.tensor([[[0.25, -0.25, 0.25], [5.0, 5.0, 5.0]]])
    feats = sample_from_planes(planes, pts, box_warp=2.0)
    assert feats.shape == (1, 3, 2, 2)
    assert torch.equal(feats[0, 0, 0], planes[0, 0, :, 1, 2])  # (x, y) = (0.25, -0.25)
    assert torch.equal(feats[0, 1, 0], planes[0, 1, :, 2, 2])  # (x, z) = (0.25, 0.25)
    assert torch.equal(feats[0, 2, 0], planes[0, 2, :, 2, 2])  # (z, x)
    assert (feats[0, :, 1] == 0).all()


def test_ray_march_constant_medium_matches_beer_lambert():
    k = 20
    depths = torch.linspace(2.0, 3.0, k).reshape(1, 1, k, 1)
    raw = 1.0 + math.log(math.e**0.8 - 1)  # softplus(raw - 1) = 0.8
    densities = torch.full((1, 1, k, 1), raw)
    colors = torch.full((1, 1, k, 2), 0.25)
    rgb, depth, weights = ray_march(colors, densities, depths)
    total = 1 - math.exp(-0.8 * 1.0)
    assert weights.shape == (1, 1, k - 1, 1)
    assert abs(weights.sum().item() - total) < 1e-5
    assert torch.allclose(rgb, torch.tensor(0.25 * total * 2 - 1), atol=1e-5)
    assert 2.0 < depth.item() < 2.5  # front-loaded weights
    assert torch.equal(ray_weights(densities, depths), weights)


def test_merge_samples_sorts_every_ray():
    d1 = torch.tensor([1.0, 3.0]).reshape(1, 1, 2, 1)
    d2 = torch.tensor([2.0, 0.5]).reshape(1, 1, 2, 1)
    depths, colors, dens = merge_samples(d1, d1.expand(-1, -1, -1, 3), -d1, d2, d2.expand(-1, -1, -1, 3), -d2)
    assert depths.flatten().tolist() == [0.5, 1.0, 2.0, 3.0]
    assert torch.equal(colors[..., 1], depths[..., 0]) and torch.equal(dens, -depths)


@pytest.mark.parametrize("sampling", ["deterministic", "stochastic"])
def test_render_rays_chunking_does_not_change_the_result(sampling):
    torch.manual_seed(0)
    planes = torch.randn(2, 3, 32, 16, 16)
    decoder = OSGDecoder(32).eval()
    c = lookat_label([0.2, -0.3], [0.0, 0.1])
    origins, dirs = ray_bundle(c[:, :16].reshape(-1, 4, 4), c[:, 16:].reshape(-1, 3, 3), 8)
    outs = []
    for chunk in (0, 20):
        s = RenderSettings(depth_resolution=12, depth_resolution_importance=8, chunk_rays=chunk, sampling=sampling)
        with torch.no_grad():
            outs.append(render_rays(planes, decoder, origins, dirs, s, generator=torch.Generator().manual_seed(5)))
    assert outs[0].features.shape == (2, 64, 32) and outs[0].depth.shape == (2, 64, 1)
    if sampling == "deterministic":
        for name in ("features", "depth", "weights_total"):
            assert torch.allclose(getattr(outs[0], name), getattr(outs[1], name), atol=1e-6)
    assert ((outs[0].weights_total > 0) & (outs[0].weights_total < 1)).all()


def test_render_settings_reject_bad_sampling():
    with pytest.raises(ValueError, match="sampling"):
        RenderSettings(sampling="random")
