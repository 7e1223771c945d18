"""The fast pure-PyTorch renderer (``compiled`` backend) against the eager reference functions.

Small shapes, run uncompiled (same math; the compiled run is covered in test_eg3d_backends.py).
Points fall partly outside the planes (box_warp < the scene) so zero padding is exercised.
"""
from __future__ import annotations

import dataclasses

import pytest
import torch

from vidtriplane.geometry.camera import lookat_label
from vidtriplane.models.eg3d import fast
from vidtriplane.models.eg3d.decoder import OSGDecoder
from vidtriplane.models.eg3d.renderer import RenderSettings, merge_samples, ray_bundle, render_rays, sample_from_planes

TOL = 2e-6


@pytest.fixture(scope="module")
def scene():
    """Planes [2, 3, 32, 12, 16] (non-square), a decoder, rays of two cameras at 8x8."""
    g = torch.Generator().manual_seed(0)
    planes = torch.randn(2, 3, 32, 12, 16, generator=g)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(1)
        decoder = OSGDecoder(32).eval()
    c = lookat_label(torch.tensor([0.35, -0.25]), torch.tensor([0.1, -0.05]))
    origins, dirs = ray_bundle(c[:, :16].reshape(-1, 4, 4), c[:, 16:].reshape(-1, 3, 3), 8)
    return planes, decoder, origins, dirs


def test_triplane_features_equal_grid_sample_mean(scene):
    planes, _, _, _ = scene
    g = torch.Generator().manual_seed(2)
    points = (torch.rand(2, 500, 3, generator=g) * 2 - 1) * 0.7  # box_warp 0.8: some points fall outside
    points[0, :4] = torch.tensor([[0.4, 0.4, 0.4], [-0.4, -0.4, -0.4], [0.399, -0.2, 0.1], [5.0, 5.0, 5.0]])
    ref = sample_from_planes(planes, points, box_warp=0.8).mean(1)
    ours = fast.triplane_features(fast.planes_channels_last(planes), points, box_warp=0.8)
    assert ours.shape == (2, 500, 32)
    assert (ours - ref).abs().max().item() < TOL
    assert ours[0, 3].abs().max() == 0  # far outside: all taps padded with zeros
    assert ref.abs().mean() > 0.1  # a real signal was compared


def test_third_plane_reads_zx(scene):
    """Moving a point along y changes plane 0 only, along z plane 1 and plane 2 (the ZX quirk)."""
    planes, _, _, _ = scene
    only = torch.zeros_like(planes)
    only[:, 2] = planes[:, 2]  # keep the third plane only
    cl = fast.planes_channels_last(only)
    p = torch.tensor([[[0.1, 0.2, 0.3]]]).repeat(2, 1, 1)
    base = fast.triplane_features(cl, p, 1.0)
    moved_y = fast.triplane_features(cl, p + torch.tensor([0.0, 0.3, 0.0]), 1.0)
    moved_z = fast.triplane_features(cl, p + torch.tensor([0.0, 0.0, 0.3]), 1.0)
    assert torch.equal(base, moved_y)
    assert not torch.allclose(base, moved_z)


def test_decode_equals_osg_decoder(scene):
    _, decoder, _, _ = scene
    feats = torch.randn(2, 3, 40, 32, generator=torch.Generator().manual_seed(3))
    rgb, sigma = decoder(feats)
    out = fast.decode(feats.mean(1), fast.decoder_weights(decoder))
    assert out.shape == (2, 40, 33)
    assert (out[..., :1] - sigma).abs().max().item() < TOL
    assert (out[..., 1:] - rgb).abs().max().item() < TOL


def test_merge_positions_equal_a_stable_sort():
    g = torch.Generator().manual_seed(4)
    first = torch.rand(6, 10, generator=g).sort(-1).values
    second = torch.rand(6, 7, generator=g).sort(-1).values
    second[0] = first[0, 2:9]  # ties everywhere in row 0: the first list goes first
    both = torch.cat([first, second], 1)
    pos_first, pos_second = fast.merge_positions(first, second)
    order = torch.empty(6, 17, dtype=torch.long)
    order.scatter_(1, torch.cat([pos_first, pos_second], 1), torch.arange(17).expand(6, -1))
    assert torch.equal(order, torch.sort(both, dim=-1, stable=True).indices)


def test_merge_matches_the_reference_merge():
    g = torch.Generator().manual_seed(5)
    d1, d2 = (torch.rand(3, n, generator=g).sort(1).values for n in (6, 5))
    merged, _, _ = merge_samples(d1[None, ..., None], torch.zeros(1, 3, 6, 1), torch.zeros(1, 3, 6, 1),
                                 d2[None, ..., None], torch.zeros(1, 3, 5, 1), torch.zeros(1, 3, 5, 1))
    pos1, pos2 = fast.merge_positions(d1, d2)
    ours = torch.zeros(3, 11).scatter(1, pos1, d1).scatter(1, pos2, d2)
    assert torch.equal(ours, merged[0, ..., 0])


@pytest.mark.parametrize("sampling", ["deterministic", "stochastic"])
@pytest.mark.parametrize("chunk", [0, 20])
def test_render_rays_fast_equals_render_rays(scene, sampling, chunk):
    planes, decoder, origins, dirs = scene
    settings = RenderSettings(depth_resolution=10, depth_resolution_importance=7, box_warp=0.8, sampling=sampling,
                              chunk_rays=chunk)
    with torch.no_grad():
        ref = render_rays(planes, decoder, origins, dirs, settings, generator=torch.Generator().manual_seed(9))
        ours = fast.render_rays_fast(planes, decoder, origins, dirs, settings, generator=torch.Generator().manual_seed(9))
    for field in ("features", "depth", "weights_total"):
        a, b = getattr(ours, field), getattr(ref, field)
        assert a.shape == b.shape
        assert (a - b).abs().max().item() < 5 * TOL, field
    assert ref.weights_total.max() > 0.05  # the rays hit something


@pytest.mark.parametrize("change", [{"depth_resolution_importance": 0}, {"white_back": True}])
def test_render_rays_fast_other_settings(scene, change):
    planes, decoder, origins, dirs = scene
    settings = dataclasses.replace(RenderSettings(depth_resolution=9, depth_resolution_importance=5, box_warp=0.8),
                                   **change)
    with torch.no_grad():
        ref = render_rays(planes, decoder, origins, dirs, settings)
        ours = fast.render_rays_fast(planes, decoder, origins, dirs, settings)
    assert (ours.features - ref.features).abs().max().item() < 5 * TOL
    assert (ours.depth - ref.depth).abs().max().item() < 5 * TOL
