"""Backend selection, the compile fallback, and every backend x precision of ``EG3DGenerator.synthesis``
against eager float32 on the tiny generator (the ``triton`` backend: tests/kernels/test_triton_render.py)."""
from __future__ import annotations

import logging
import math

import pytest
import torch

from vidtriplane.geometry.camera import lookat_label
from vidtriplane.models.eg3d import EG3DConfig, EG3DGenerator, backends
from vidtriplane.models.eg3d.renderer import RenderSettings, ray_bundle


@pytest.fixture(scope="module")
def tiny():
    """Tiny generator (12 + 12 samples, 32 px rendering) and its eager float32 output for two cameras."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        G = EG3DGenerator(EG3DConfig.tiny()).eval()
    ws = G.mapping(torch.randn(2, 512, generator=torch.Generator().manual_seed(1)), torch.zeros(2, 25))
    c = lookat_label(torch.tensor([0.3, -0.2]), torch.tensor([0.0, 0.1]))
    with torch.no_grad():
        ref = G.synthesis(ws, c)
    return G, ws, c, ref


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    return 10 * math.log10(4 / (a.double() - b.double()).square().mean().item())


def test_auto_is_the_compiled_renderer_until_triton_is_measured_on_a_gpu(monkeypatch):
    assert backends.resolve_backend("auto", "cpu") == "compiled"
    monkeypatch.setattr(backends, "triton_importable", lambda: True)
    assert backends.resolve_backend("auto", "cuda") == "compiled"
    assert backends.resolve_backend("triton", "cuda") == "triton"
    monkeypatch.setattr(backends, "triton_importable", lambda: False)
    assert backends.resolve_backend("auto", "cuda") == "compiled"
    assert backends.resolve_backend("eager", "cuda") == "eager"


def test_triton_where_it_cannot_run_says_what_to_use(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    monkeypatch.setattr(backends, "triton_importable", lambda: True)
    with pytest.raises(backends.BackendUnavailable, match="needs CUDA tensors.*'compiled' or 'auto'"):
        backends.resolve_backend("triton", "cpu")
    monkeypatch.setattr(backends, "triton_importable", lambda: False)
    with pytest.raises(backends.BackendUnavailable, match="pip install triton"):
        backends.resolve_backend("triton", "cuda")


def test_unknown_names_are_rejected(tiny):
    G, ws, c, _ = tiny
    with pytest.raises(ValueError, match="backend must be one of"):
        G.synthesis(ws, c, backend="fastest")
    with pytest.raises(ValueError, match="precision must be one of"):
        G.synthesis(ws, c, precision="fp8")


def test_compile_failure_falls_back_to_eager_with_one_warning(tiny, monkeypatch, caplog):
    from torch._dynamo.exc import BackendCompilerFailed

    G, ws, c, ref = tiny

    def broken(*args, **kwargs):
        raise BackendCompilerFailed(lambda: None, RuntimeError("no C++ compiler"), None)

    state = backends._CompiledPasses()
    state.passes = (broken, broken)
    monkeypatch.setattr(backends, "_COMPILED", state)
    with caplog.at_level(logging.WARNING, logger="vidtriplane.models.eg3d.backends"), torch.no_grad():
        outs = [G.synthesis(ws, c, backend="compiled") for _ in range(2)]
    warnings = [r for r in caplog.records if "torch.compile of the renderer failed" in r.getMessage()]
    assert len(warnings) == 1
    for out in outs:
        assert torch.equal(out.image, ref.image)


def test_compile_failure_replays_the_same_random_numbers(tiny, monkeypatch):
    from torch._dynamo.exc import BackendCompilerFailed

    G, ws, c, _ = tiny
    state = backends._CompiledPasses()

    def broken(*args, **kwargs):
        raise BackendCompilerFailed(lambda: None, RuntimeError("boom"), None)

    state.passes = (broken, broken)
    monkeypatch.setattr(backends, "_COMPILED", state)
    kw = dict(sampling="stochastic")
    with torch.no_grad():
        a = G.render(G.backbone_planes(ws), c, backend="compiled", generator=torch.Generator().manual_seed(5), **kw)
        b = G.render(G.backbone_planes(ws), c, generator=torch.Generator().manual_seed(5), **kw)
    assert torch.equal(a.feature_image, b.feature_image)


def test_compiled_renderer_matches_eager(tiny):
    """The real torch.compile of both passes (tiny shapes), deterministic and stochastic sampling."""
    G, ws, c, ref = tiny
    planes = ref.planes
    with torch.no_grad():
        out = G.render(planes, c, backend="compiled")
        stoch = [G.render(planes, c, backend=b, sampling="stochastic", generator=torch.Generator().manual_seed(3))
                 for b in ("compiled", "eager")]
    assert not backends._COMPILED.failed
    assert (out.feature_image - ref.feature_image).abs().max() < 1e-5
    assert (out.depth - ref.image_depth).abs().max() < 1e-5
    assert (stoch[0].feature_image - stoch[1].feature_image).abs().max() < 1e-5
    assert (stoch[0].feature_image - ref.feature_image).abs().max() > 1e-4  # the jitter really changed things


@pytest.mark.parametrize("backend", ["eager", "compiled"])
@pytest.mark.parametrize("precision, min_psnr", [("fp32", 90.0), ("bf16", 35.0), ("fp16", 45.0)])
def test_synthesis_backend_precision_against_eager_fp32(tiny, backend, precision, min_psnr):
    G, ws, c, ref = tiny
    with torch.no_grad():
        out = G.synthesis(ws, c, backend=backend, precision=precision)
    assert out.image.dtype == torch.float32 and out.planes.dtype == torch.float32
    assert out.image.shape == ref.image.shape
    if backend == "eager" and precision == "fp32":
        assert torch.equal(out.image, ref.image)
    else:
        assert psnr(out.image, ref.image) > min_psnr
        assert psnr(out.image_raw, ref.image_raw) > min_psnr
    assert ref.image.std() > 0.05  # a real image was compared


def test_cpu_chunking_of_the_compiled_renderer_keeps_the_result(tiny, monkeypatch):
    G, ws, c, ref = tiny
    monkeypatch.setattr(backends, "CPU_CHUNK_RAYS", 300)  # not a divisor of the 2 x 1024 rays
    origins, dirs = ray_bundle(c[:, :16].reshape(-1, 4, 4), c[:, 16:].reshape(-1, 3, 3), 32)
    planes = ref.planes.reshape(2, 3, 32, 64, 64)
    settings = RenderSettings(depth_resolution=12, depth_resolution_importance=12)
    with torch.no_grad():
        out = backends.render_rays_with("compiled", planes, G.decoder, origins, dirs, settings)
    assert (out.features.permute(0, 2, 1).reshape(2, 32, 32, 32) - ref.feature_image).abs().max() < 1e-5
