"""Choosing how the EG3D volume rendering runs: the one place that maps a ``backend`` name to code.

* ``eager``    - :func:`vidtriplane.models.eg3d.renderer.render_rays`, the reference (parity-tested; never
  changes).
* ``compiled`` - :func:`vidtriplane.models.eg3d.fast.render_rays_fast` with its two passes wrapped in
  ``torch.compile`` (CPU and GPU). If compiling fails, the eager renderer runs instead, with ONE warning.
* ``triton``   - the fused kernels of :mod:`vidtriplane.kernels.triton_render` (CUDA tensors, or CPU tensors
  under ``TRITON_INTERPRET=1``); asking for it where it cannot run raises :class:`BackendUnavailable`.
* ``auto``     - ``compiled`` (``triton`` stays opt-in until its GPU table has been measured:
  ``benchmarks/gpu_fast.py``).

``precision`` (``fp32`` / ``bf16`` / ``fp16``) never changes the compositing, which stays float32: with
bf16/fp16 the ``compiled`` backend runs the decoder's two matrix products in that type, the ``triton``
backend reads bf16/fp16 planes (half the memory traffic) and multiplies in tf32/half precision.
"""
from __future__ import annotations

import functools
import importlib.util
import logging
import os

import torch

from vidtriplane.errors import VidtriplaneError
from vidtriplane.models.compile import compile_errors
from vidtriplane.models.eg3d import fast
from vidtriplane.models.eg3d.decoder import OSGDecoder
from vidtriplane.models.eg3d.renderer import RenderResult, RenderSettings, coarse_depths, render_rays
from vidtriplane.models.precision import PRECISION_DTYPES, check_precision

log = logging.getLogger(__name__)

BACKENDS = ("eager", "compiled", "triton", "auto")
#: rays per sub-chunk of the compiled renderer on the CPU: temporaries stay in the caches (measured: 256
#: beats 64, 1024 and 4096 on a 2-core Xeon)
CPU_CHUNK_RAYS = 256


class BackendUnavailable(VidtriplaneError, RuntimeError):
    """The requested backend cannot run here (the message says what to use instead)."""


@functools.cache
def triton_importable() -> bool:
    """True when the ``triton`` package is installed (it is imported only when used)."""
    return importlib.util.find_spec("triton") is not None


def triton_interpreted() -> bool:
    """True when Triton kernels run in its CPU interpreter (``TRITON_INTERPRET=1``)."""
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def check_backend(backend: str) -> None:
    """Raise ValueError for an unknown backend name."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")


def resolve_backend(backend: str, device: torch.device | str) -> str:
    """The concrete backend for tensors on ``device``: ``auto`` resolved, ``triton`` checked."""
    check_backend(backend)
    device = torch.device(device)
    if backend == "auto":
        return "compiled"
    if backend == "triton":
        if not triton_importable():
            raise BackendUnavailable("backend 'triton' needs the triton package (pip install triton); "
                                     "use backend 'compiled' or 'auto'")
        if device.type != "cuda" and not triton_interpreted():
            raise BackendUnavailable(f"backend 'triton' needs CUDA tensors, got {device.type}; use backend "
                                     f"'compiled' or 'auto' (or set TRITON_INTERPRET=1 to test the kernels)")
    return backend


class _CompiledPasses:
    """The compiled coarse/fine passes, built on first use; permanently eager after a compile failure."""

    def __init__(self) -> None:
        self.passes: fast.Passes | None = None
        self.failed = False

    def get(self) -> fast.Passes:
        if self.passes is None:
            self.passes = (torch.compile(fast.coarse_pass, dynamic=False),
                           torch.compile(fast.fine_pass, dynamic=False))
        return self.passes

    def fail(self, exc: BaseException) -> None:
        if not self.failed:
            log.warning("torch.compile of the renderer failed (%s: %s); using the eager renderer from now on",
                        type(exc).__name__, str(exc).splitlines()[0] if str(exc) else "")
        self.failed = True


_COMPILED = _CompiledPasses()


def render_rays_compiled(planes: torch.Tensor, decoder: OSGDecoder, origins: torch.Tensor, dirs: torch.Tensor,
                         settings: RenderSettings, *, generator: torch.Generator | None = None,
                         mlp_dtype: torch.dtype | None = None) -> RenderResult:
    """The ``compiled`` backend (decoder matrix products in ``mlp_dtype`` when given); the eager renderer
    after a compile failure (warned once)."""
    if _COMPILED.failed:
        return render_rays(planes, decoder, origins, dirs, settings, generator=generator)
    compute_rays = CPU_CHUNK_RAYS if origins.device.type == "cpu" else 0
    state = generator.get_state() if generator is not None else None
    try:
        return fast.render_rays_fast(planes, decoder, origins, dirs, settings, generator=generator,
                                     passes=_COMPILED.get(), compute_rays=compute_rays, mlp_dtype=mlp_dtype)
    except compile_errors() as exc:
        _COMPILED.fail(exc)
        if state is not None:  # replay the same random numbers
            generator.set_state(state)
        return render_rays(planes, decoder, origins, dirs, settings, generator=generator)


def render_rays_triton(planes: torch.Tensor, decoder: OSGDecoder, origins: torch.Tensor, dirs: torch.Tensor,
                       settings: RenderSettings, *, generator: torch.Generator | None = None,
                       plane_dtype: torch.dtype = torch.float32) -> RenderResult:
    """The ``triton`` backend: per chunk of the reference (same random draws), coarse kernel -> importance
    depths (reference sampler) -> fused fine kernel over the merged sorted depths."""
    from vidtriplane.kernels import triton_render as tr

    b, m, _ = origins.shape
    n, n_imp = settings.depth_resolution, settings.depth_resolution_importance
    planes_cl = tr.prepare_planes(planes, plane_dtype)
    dot = "ieee" if plane_dtype == torch.float32 else "tf32"
    dec = tr.prepare_decoder(*(t.detach() for t in fast.decoder_weights(decoder)))
    step, starts = fast.chunk_starts(m, b, settings.chunk_rays)
    parts = []
    for s in starts:
        o = origins[:, s:s + step].reshape(-1, 3).float()
        d = dirs[:, s:s + step].reshape(-1, 3).float()
        k = o.shape[0] // b
        # 1. coarse depths, coarse pass -> interval weights -> sorted importance depths
        depths = coarse_depths(b, k, n, settings.ray_start, settings.ray_end, sampling=settings.sampling,
                               generator=generator, device=origins.device)[..., 0]
        fine = depths.new_empty(b, k, 0)
        if n_imp > 0:
            weights = tr.coarse_weights(planes_cl, dec, o, d, depths.reshape(b * k, n), settings.box_warp, dot=dot)
            fine = fast.sorted_fine_depths(depths, weights.view(b, k, n - 1), settings, generator)
        # 2. fine pass over the merged sorted depths
        rgb, depth, wsum = tr.fine_composite(planes_cl, dec, o, d, depths.reshape(b * k, n),
                                             fine.reshape(b * k, n_imp), settings.box_warp,
                                             white_back=settings.white_back, dot=dot)
        lo, hi = depths.min(), depths.max()
        if n_imp > 0:
            lo, hi = torch.minimum(lo, fine.min()), torch.maximum(hi, fine.max())
        parts.append((rgb.view(b, k, -1), depth.view(b, k, 1), wsum.view(b, k, 1), lo, hi))
    lo = torch.stack([p[3] for p in parts]).min()
    hi = torch.stack([p[4] for p in parts]).max()
    return RenderResult(features=torch.cat([p[0] for p in parts], 1),
                        depth=torch.clamp(torch.cat([p[1] for p in parts], 1), lo, hi),
                        weights_total=torch.cat([p[2] for p in parts], 1))


def render_rays_with(backend: str, planes: torch.Tensor, decoder: OSGDecoder, origins: torch.Tensor,
                     dirs: torch.Tensor, settings: RenderSettings, *, generator: torch.Generator | None = None,
                     precision: str = "fp32") -> RenderResult:
    """Render rays [B, M, 3] through planes [B, 3, C, H, W] with ``backend`` (see the module docstring)."""
    check_precision(precision)
    backend = resolve_backend(backend, origins.device)
    planes = planes.float()
    if backend == "eager":
        return render_rays(planes, decoder, origins, dirs, settings, generator=generator)
    if backend == "compiled":
        return render_rays_compiled(planes, decoder, origins, dirs, settings, generator=generator,
                                    mlp_dtype=None if precision == "fp32" else PRECISION_DTYPES[precision])
    return render_rays_triton(planes, decoder, origins, dirs, settings, generator=generator,
                              plane_dtype=PRECISION_DTYPES[precision])
