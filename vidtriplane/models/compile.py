"""Whole-network compilation: ``torch.compile`` of the encoders, the generator backbone and the
super-resolution, optional CUDA-graph capture, and a warm-up that compiles every batch shape up front.

    compile_network(net, mode="default")             # or "reduce-overhead" (CUDA graphs) on a GPU
    warmup(net, batch_sizes=(8, 1), image_size=256)   # one encode + render per shape, before timing
    inv = net.encode(x, c, backend="triton", precision="bf16")   # any backend but eager uses them

Compiled callables live on the sub-module instances (a plain attribute, not in the state_dict), so the
``Models`` a pipeline loads once serve every video of a folder run without compiling again; shapes are
static (``dynamic=False``): each batch size compiles once per process - pad partial batches to a warmed
size. Inductor's on-disk cache (``vidtriplane.runtime.configure`` points it at the project's cache)
makes later processes compile much faster. ``backend="eager"`` never uses compiled parts.

CUDA graphs (``mode="reduce-overhead"``) replay into the same output memory, so the outputs are cloned
before they are returned (an ``Inversion`` may outlive the next call). A part whose compilation fails
runs eagerly from then on (one warning per process).
"""
from __future__ import annotations

import logging
import time
from typing import Any, Callable, Iterable, Sequence

import torch
from torch import nn

MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
#: attribute paths of the compilable parts, on a TriPlaneNet (``decoder.`` = its EG3D generator)
PARTS = ("psp_encoder", "triplanenet_encoder", "decoder.backbone.synthesis", "decoder.superresolution")
_ATTR = "_vidtriplane_compiled"
log = logging.getLogger(__name__)
_warned = False


def compile_errors() -> tuple[type[BaseException], ...]:
    """Exception types of a failed ``torch.compile`` (raised at the first call of the compiled function)."""
    from torch._dynamo.exc import TorchDynamoException
    from torch._inductor.exc import CppCompileError

    return TorchDynamoException, CppCompileError


def _guarded(fn: Callable, module: nn.Module) -> Callable:
    """``fn``, or ``module`` itself from the first compile failure on (warned once per process)."""
    def call(*args: Any, **kwargs: Any) -> Any:
        global _warned
        try:
            return fn(*args, **kwargs)
        except compile_errors() as exc:
            module.__dict__.pop(_ATTR, None)
            if not _warned:
                log.warning("torch.compile of %s failed (%s); running it eagerly", type(module).__name__,
                            type(exc).__name__)
                _warned = True
            return module(*args, **kwargs)

    return call


def _submodule(root: nn.Module, path: str) -> nn.Module | None:
    module: Any = root
    for name in path.split("."):
        module = getattr(module, name, None)
        if module is None:
            return None
    return module


def _parts(root: nn.Module, parts: Iterable[str]) -> list[nn.Module]:
    """The parts present on ``root`` (a TriPlaneNet, or an EG3DGenerator: paths without ``decoder.``)."""
    found = []
    for path in parts:
        module = _submodule(root, path)
        if module is None and path.startswith("decoder."):
            module = _submodule(root, path[len("decoder."):])
        if module is not None:
            found.append(module)
    return found


def _cloning(fn: Callable) -> Callable:
    """Wrap a CUDA-graph callable: mark a new step, copy the outputs out of the graph's memory pool."""
    def call(*args: Any, **kwargs: Any) -> Any:
        torch.compiler.cudagraph_mark_step_begin()
        out = fn(*args, **kwargs)
        return out.clone() if isinstance(out, torch.Tensor) else tuple(t.clone() for t in out)

    return call


def compile_network(net: nn.Module, *, mode: str = "default", parts: Sequence[str] = PARTS,
                    compiler: str = "inductor") -> list[str]:
    """Install compiled versions of ``parts`` of ``net``; returns the class names compiled.

    ``compiler`` is torch.compile's backend (``"eager"`` only traces: a cheap check of the plumbing)."""
    if mode not in MODES:
        raise ValueError(f"compile mode must be one of {MODES}, got {mode!r}")
    names = []
    for module in _parts(net, parts):
        fn: Callable = torch.compile(module, backend=compiler, dynamic=False,
                                     mode=mode if compiler == "inductor" else None)
        if mode == "reduce-overhead":
            fn = _cloning(fn)
        module.__dict__[_ATTR] = _guarded(fn, module)
        names.append(type(module).__name__)
    return names


def uncompile_network(net: nn.Module) -> None:
    """Forget every compiled part of ``net`` (they run eagerly again)."""
    for module in net.modules():
        module.__dict__.pop(_ATTR, None)


def part(module: nn.Module, backend: str) -> Callable:
    """The callable to run ``module`` with: its compiled version for any backend but ``eager``."""
    if backend == "eager":
        return module
    return module.__dict__.get(_ATTR, module)


def is_compiled(module: nn.Module) -> bool:
    """True when ``compile_network`` installed a compiled version of ``module``."""
    return _ATTR in module.__dict__


@torch.inference_mode()
def warmup(net: nn.Module, batch_sizes: Iterable[int], *, image_size: int, backend: str = "auto",
           precision: str = "fp32", device: torch.device | str | None = None, repeats: int = 2,
           **render_kwargs: Any) -> dict[int, float]:
    """Run encode + one render ``repeats`` times per batch size (compiling/capturing every shape);
    returns the seconds the first round took per batch size (the one-off cost)."""
    from vidtriplane.geometry.camera import lookat_label

    device = torch.device(device) if device is not None else next(net.parameters()).device
    spent = {}
    for b in batch_sizes:
        x = torch.zeros(b, 3, image_size, image_size, device=device)
        c = lookat_label(torch.zeros(b), torch.zeros(b)).to(device)
        kw = dict(backend=backend, precision=precision, **render_kwargs)
        for i in range(repeats):
            start = time.perf_counter()
            net.render(net.encode(x, c, **kw), c, **kw)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            if i == 0:
                spent[b] = time.perf_counter() - start
    return spent
