"""The fused Triton kernels against the eager reference functions.

Without CUDA they run in Triton's CPU interpreter (``TRITON_INTERPRET=1`` while the kernel module is
imported) on tiny shapes; with CUDA the same tests run the compiled kernels on the GPU, plus a full-size
render (``gpu`` marker). Skipped when triton is not installed.
"""
from __future__ import annotations

import dataclasses
import importlib
import math
import os

import pytest
import torch

pytest.importorskip("triton")

from vidtriplane.geometry.camera import lookat_label  # noqa: E402
from vidtriplane.models.eg3d import EG3DConfig, EG3DGenerator, backends, fast  # noqa: E402
from vidtriplane.models.eg3d.decoder import OSGDecoder  # noqa: E402
from vidtriplane.models.eg3d.renderer import (RenderSettings, coarse_depths, merge_samples, ray_bundle,  # noqa: E402
                                              ray_march, ray_weights, render_rays, run_decoder)

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _import_kernels():
    """The kernel module, interpreted on CPU (the ``interpret`` fixture sets the variable again while each
    test runs, so the rest of the session is not affected)."""
    if DEVICE.type == "cuda":
        return importlib.import_module("vidtriplane.kernels.triton_render")
    old = os.environ.get("TRITON_INTERPRET")
    os.environ["TRITON_INTERPRET"] = "1"
    try:
        return importlib.import_module("vidtriplane.kernels.triton_render")
    finally:
        if old is None:
            del os.environ["TRITON_INTERPRET"]
        else:
            os.environ["TRITON_INTERPRET"] = old


tr = _import_kernels()
pytestmark = pytest.mark.triton
TOL = 3e-6


@pytest.fixture(autouse=True)
def interpret(monkeypatch):
    """On CPU: Triton's interpreter runs the kernels, and the backend selection accepts CPU tensors."""
    if DEVICE.type == "cpu":
        monkeypatch.setenv("TRITON_INTERPRET", "1")


@pytest.fixture(scope="module")
def scene():
    """Planes [2, 3, 32, 12, 16], a decoder and 2 x 36 rays; box_warp 0.8 puts some samples outside."""
    g = torch.Generator().manual_seed(0)
    planes = torch.randn(2, 3, 32, 12, 16, generator=g)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(1)
        decoder = OSGDecoder(32).eval()
    c = lookat_label(torch.tensor([0.35, -0.25]), torch.tensor([0.1, -0.05]))
    origins, dirs = ray_bundle(c[:, :16].reshape(-1, 4, 4), c[:, 16:].reshape(-1, 3, 3), 6)
    return planes.to(DEVICE), decoder.to(DEVICE), origins.to(DEVICE), dirs.to(DEVICE)


def _kernel_args(planes, decoder, dtype=torch.float32):
    return tr.prepare_planes(planes, dtype), tr.prepare_decoder(*(t.detach() for t in fast.decoder_weights(decoder)))


def test_coarse_kernel_weights_equal_ray_weights(scene):
    planes, decoder, origins, dirs = scene
    b, m, _ = origins.shape
    depths = coarse_depths(b, m, 7, 2.25, 3.3, sampling="stochastic", generator=torch.Generator().manual_seed(2))
    depths = depths.to(DEVICE)
    with torch.no_grad():
        _, densities = run_decoder(planes, decoder, origins, dirs, depths, box_warp=0.8)
        ref = ray_weights(densities, depths)[..., 0]
        ours = tr.coarse_weights(*_kernel_args(planes, decoder), origins.reshape(-1, 3), dirs.reshape(-1, 3),
                                 depths.reshape(b * m, 7), 0.8)
    assert ours.shape == (b * m, 6)
    assert (ours.view(b, m, 6) - ref).abs().max().item() < TOL
    assert ref.max() > 0.01  # non-trivial weights were compared


@pytest.mark.parametrize("white_back", [False, True])
def test_fine_kernel_equals_merge_and_march(scene, white_back):
    planes, decoder, origins, dirs = scene
    b, m, _ = origins.shape
    g = torch.Generator().manual_seed(3)
    coarse = coarse_depths(b, m, 6, 2.25, 3.3, sampling="stochastic", generator=g).to(DEVICE)
    fine = (2.25 + 1.05 * torch.rand(b, m, 5, 1, generator=g)).sort(2).values.to(DEVICE)
    fine[0, 0, :, 0] = torch.cat([coarse[0, 0, 2:3, 0], fine[0, 0, 1:, 0]]).sort().values  # a tie, still sorted
    with torch.no_grad():
        c1, s1 = run_decoder(planes, decoder, origins, dirs, coarse, box_warp=0.8)
        c2, s2 = run_decoder(planes, decoder, origins, dirs, fine, box_warp=0.8)
        depths, colors, densities = merge_samples(coarse, c1, s1, fine, c2, s2)
        rgb, depth, weights = ray_march(colors, densities, depths, white_back=white_back, clamp_depth=False)
        ours = tr.fine_composite(*_kernel_args(planes, decoder), origins.reshape(-1, 3), dirs.reshape(-1, 3),
                                 coarse.reshape(b * m, 6), fine.reshape(b * m, 5), 0.8, white_back=white_back)
    assert (ours[0].view(b, m, -1) - rgb).abs().max().item() < TOL
    assert (ours[1].view(b, m, 1) - depth).abs().max().item() < TOL
    assert (ours[2].view(b, m, 1) - weights.sum(2)).abs().max().item() < TOL


@pytest.mark.parametrize("settings", [
    RenderSettings(depth_resolution=6, depth_resolution_importance=5, box_warp=0.8),
    RenderSettings(depth_resolution=6, depth_resolution_importance=5, box_warp=0.8, sampling="stochastic",
                   chunk_rays=30),
    RenderSettings(depth_resolution=6, depth_resolution_importance=0, box_warp=0.8),
], ids=["deterministic", "stochastic-chunked", "coarse-only"])
def test_triton_backend_equals_eager(scene, settings):
    planes, decoder, origins, dirs = scene
    with torch.no_grad():
        ref = render_rays(planes, decoder, origins, dirs, settings, generator=torch.Generator(DEVICE).manual_seed(4))
        ours = backends.render_rays_with("triton", planes, decoder, origins, dirs, settings,
                                         generator=torch.Generator(DEVICE).manual_seed(4))
    for field in ("features", "depth", "weights_total"):
        a, r = getattr(ours, field), getattr(ref, field)
        assert a.shape == r.shape
        assert (a - r).abs().max().item() < 2 * TOL, field


def test_half_precision_planes_stay_close(scene):
    planes, decoder, origins, dirs = scene
    settings = RenderSettings(depth_resolution=6, depth_resolution_importance=5, box_warp=0.8)
    with torch.no_grad():
        ref = render_rays(planes, decoder, origins, dirs, settings)
        ours = backends.render_rays_with("triton", planes, decoder, origins, dirs, settings, precision="bf16")
    err = (ours.features - ref.features).abs().max().item()
    assert 0 < err < 0.05  # bf16 planes: really rounded, still the same image


def test_kernel_shapes_are_checked():
    with pytest.raises(ValueError, match="power-of-two"):
        tr.prepare_decoder(torch.zeros(48, 32), torch.zeros(48), torch.zeros(33, 48), torch.zeros(33))


def test_synthesis_with_the_triton_backend():
    """Through ``G.synthesis``: every precision against eager float32 (8 px rendering, tiny generator)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        G = EG3DGenerator(dataclasses.replace(EG3DConfig.tiny(), depth_resolution=6,
                                              depth_resolution_importance=6)).eval().to(DEVICE)
    ws = G.mapping(torch.randn(1, 512, generator=torch.Generator().manual_seed(1)).to(DEVICE),
                   torch.zeros(1, 25, device=DEVICE))
    c = lookat_label(torch.tensor([0.3]), torch.tensor([0.1])).to(DEVICE)
    kw = dict(neural_rendering_resolution=8)
    with torch.no_grad():
        ref = G.synthesis(ws, c, **kw)
        for precision, min_psnr in (("fp32", 90.0), ("bf16", 35.0), ("fp16", 45.0)):
            out = G.synthesis(ws, c, backend="triton", precision=precision, **kw)
            mse = (out.image.double() - ref.image.double()).square().mean().item()
            assert 10 * math.log10(4 / max(mse, 1e-30)) > min_psnr, precision
    assert ref.image.std() > 0.05


@pytest.mark.gpu
def test_full_size_render_on_the_gpu():
    """Full-size planes, 128 px, 96 + 96 samples, batch 2: triton vs eager on CUDA."""
    G = EG3DGenerator(EG3DConfig()).eval().to(DEVICE)
    ws = G.mapping(torch.randn(2, 512, device=DEVICE), torch.zeros(2, 25, device=DEVICE))
    c = lookat_label(torch.tensor([0.3, -0.3]), torch.tensor([0.0, 0.1])).to(DEVICE)
    kw = dict(depth_samples=96, importance_samples=96)
    torch.backends.cuda.matmul.allow_tf32 = False
    with torch.no_grad():
        planes = G.backbone_planes(ws)
        ref = G.render(planes, c, **kw)
        ours = G.render(planes, c, backend="triton", **kw)
    assert (ours.feature_image - ref.feature_image).abs().max().item() < 1e-4
    assert (ours.depth - ref.depth).abs().max().item() < 1e-4
