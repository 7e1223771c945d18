"""Acceptance test: our EG3D generator reproduces the official code's numbers (shared/parity, part c).

Weights come from the shared fill rule (keyed by the TriPlaneNet checkpoint names, hence the
``decoder.`` prefix); the expensive batch-2 synthesis runs once per module. Tolerances are the
manifest's ``atol`` (1e-4 x absmax of each golden tensor). Run with ``-s`` to see err/atol per output.
"""
from __future__ import annotations

import importlib.util
import json

import pytest
import torch

from tests.conftest import shared_path
from vidtriplane.models.eg3d import EG3DConfig, EG3DGenerator
from vidtriplane.models.eg3d.renderer import coarse_depths, importance_depths, ray_bundle, ray_weights, run_decoder

SALT = "public-v1"
PREFIX = "decoder."  # EG3D's prefix inside the TriPlaneNet v1 checkpoint
RAYS = [0, 64 * 128 + 64, 40 * 128 + 70, 90 * 128 + 30, 127 * 128 + 127]
# golden name -> (output field, slice of the full tensor)
OUTPUTS = {
    "c.image_full_b0": ("image", (slice(0, 1),)),
    "c.image_sub4": ("image", (slice(None), slice(None), slice(None, None, 4), slice(None, None, 4))),
    "c.image_raw": ("image_raw", ()),
    "c.image_depth": ("image_depth", ()),
    "c.feature_image_sub4": ("feature_image", (slice(None), slice(None), slice(None, None, 4), slice(None, None, 4))),
    "c.weights_total": ("weights_total", ()),
    "c.planes_sub8": ("planes", (slice(None), slice(None), slice(None, None, 8), slice(None, None, 8))),
}


def _fill_rule():
    path = shared_path("parity", "fill_rule.py")
    spec = importlib.util.spec_from_file_location("shared_parity_fill_rule", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def parity():
    """(G, golden, manifest arrays, fingerprint mismatches, ws, output) with the batch-2 synthesis run once."""
    from safetensors.torch import load_file

    fill_rule = _fill_rule()
    golden = load_file(str(shared_path("parity", "golden.safetensors")))
    arrays = json.loads(shared_path("parity", "manifest.json").read_text())["arrays"]
    G = EG3DGenerator(EG3DConfig()).eval()
    spec = {PREFIX + k: (tuple(v.shape), v.dtype) for k, v in G.state_dict().items()}
    filled = fill_rule.fill_state_dict(spec, SALT)
    mismatches = fill_rule.fingerprint_mismatches(filled, str(shared_path("parity", "fill_fingerprint.json")))
    G.load_state_dict({k[len(PREFIX):]: v for k, v in filled.items()}, strict=True)
    with torch.no_grad():
        ws = G.mapping(golden["input.z"], golden["input.c"], truncation_psi=1.0)
        out = G.synthesis(ws, golden["input.c"], noise_mode="const")
    return G, golden, arrays, mismatches, ws, out


def _check(name: str, ours: torch.Tensor, golden, arrays, *, full: torch.Tensor | None = None) -> float:
    entry = arrays[name]
    ref = golden[name]
    assert tuple(ours.shape) == tuple(ref.shape), name
    err = (ours.float() - ref).abs().max().item()
    ratio = err / entry["atol"]
    print(f"{name:24s} max err {err:.3g}  atol {entry['atol']:.3g}  err/atol {ratio:.4f}")
    assert err <= entry["atol"], f"{name}: max err {err:.3g} > atol {entry['atol']:.3g}"
    if full is not None:  # subsampled arrays: full-tensor stats too
        stats = entry["full_stats"]
        assert tuple(full.shape) == tuple(entry["full_shape"])
        assert abs(full.double().mean().item() - stats["mean"]) <= entry["atol"], name
        assert abs(full.double().std().item() - stats["std"]) <= entry["atol"], name
    return ratio


def test_fill_reproduces_the_fingerprints(parity):
    _, _, _, mismatches, _, _ = parity
    assert mismatches == []


def test_mapping_parity(parity):
    G, golden, arrays, _, ws, _ = parity
    _check("c.ws", ws, golden, arrays)


@pytest.mark.parametrize("name", list(OUTPUTS))
def test_synthesis_parity(parity, name):
    _, golden, arrays, _, _, out = parity
    field, index = OUTPUTS[name]
    full = getattr(out, field)
    subsampled = index and name.endswith(("_sub4", "_sub8"))
    _check(name, full[index], golden, arrays, full=full if subsampled else None)


def test_renderer_steps_parity_on_single_rays(parity):
    """Coarse depths, coarse weights and importance depths of five rays, through the pure functions."""
    G, golden, arrays, _, _, out = parity
    c = golden["input.c"]
    origins, dirs = ray_bundle(c[:, :16].reshape(-1, 4, 4), c[:, 16:].reshape(-1, 3, 3), 128)
    origins, dirs = origins[:, RAYS], dirs[:, RAYS]
    planes = out.planes.reshape(2, 3, 32, 256, 256)
    depths = coarse_depths(2, len(RAYS), 48, 2.25, 3.3)
    _check("c.depths_coarse_ray0", depths[0, 0, :, 0], golden, arrays)
    with torch.no_grad():
        colors, densities = run_decoder(planes, G.decoder, origins, dirs, depths, box_warp=1.0)
        weights = ray_weights(densities, depths)
    _check("c.coarse_weights_rays", weights[..., 0], golden, arrays)
    fine = importance_depths(depths, weights, 48)
    _check("c.fine_depths_rays", fine[..., 0], golden, arrays)


def test_batch_of_one_with_given_planes_equals_sample_zero(parity):
    """Batch consistency and the ``planes`` argument: re-render sample 0 alone from the returned planes."""
    G, golden, _, _, ws, out = parity
    with torch.no_grad():
        one = G.synthesis(ws[:1], golden["input.c"][:1], planes=out.planes[:1])
    for field in ("image", "image_raw", "image_depth", "feature_image", "weights_total"):
        err = (getattr(one, field) - getattr(out, field)[:1]).abs().max().item()
        assert err <= 1e-5, f"{field}: {err:.3g}"
    assert one.planes.data_ptr() == out.planes[:1].data_ptr() or torch.equal(one.planes, out.planes[:1])


@pytest.fixture(scope="module")
def renders_64(parity):
    """Volume renders (no SR) of sample 0 at 64x64: deterministic 48/48, stochastic x2 (same seed), 96/96."""
    G, golden, _, _, _, out = parity
    planes, c = out.planes[:1], golden["input.c"][:1]
    kw = dict(neural_rendering_resolution=64)
    with torch.no_grad():
        det = G.render(planes, c, **kw)
        stoch = [G.render(planes, c, sampling="stochastic", generator=torch.Generator().manual_seed(7), **kw)
                 for _ in range(2)]
        dense = G.render(planes, c, depth_samples=96, importance_samples=96, **kw)
    return det, stoch, dense


def test_stochastic_sampling_is_seeded_and_close_in_distribution(renders_64):
    det, (s1, s2), _ = renders_64
    assert torch.equal(s1.feature_image, s2.feature_image) and torch.equal(s1.depth, s2.depth)
    diff = (s1.feature_image - det.feature_image).abs()
    assert diff.max() > 1e-4  # really random
    assert diff.mean() < 0.01  # but the same image (features span about [-1, 1])
    assert abs(s1.feature_image.mean() - det.feature_image.mean()) < 2e-3
    assert (s1.depth - det.depth).abs().mean() < 1e-2  # depths span about 0.2 here


def test_96_depth_samples_converge_to_the_same_render(renders_64):
    det, _, dense = renders_64
    assert dense.feature_image.shape == (1, 32, 64, 64)
    assert torch.isfinite(dense.feature_image).all()
    diff = (dense.feature_image - det.feature_image).abs()
    assert 0 < diff.mean() < 0.01
    assert (dense.weights_total - det.weights_total).abs().max() < 0.05
