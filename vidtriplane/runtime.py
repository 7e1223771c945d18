"""Process-wide torch settings, set in ONE place: the pipeline and ``vidtriplane bench`` call
:func:`configure` once before building models.

* threads: ``torch.set_num_threads`` (0 = torch's default);
* CUDA: TF32 matrix products / convolutions (``tf32``), ``cudnn.benchmark`` (frame shapes are fixed);
* CPU: keep freed memory in the process (``keep_memory``): glibc returns every block above 32 MiB to the
  kernel on free, so each render pays page faults again for its large temporaries (measured: system time
  of one full-size super-resolution 4.1 s -> 1.5 s); resident memory then stays at its peak;
* ``compile_cache``: inductor's on-disk cache under the project's cache root, so compiled graphs survive
  the process (later runs compile much faster).
"""
from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import sys
from pathlib import Path

import torch

log = logging.getLogger(__name__)

_M_TRIM_THRESHOLD = -1  # glibc mallopt parameters (malloc.h)
_M_MMAP_MAX = -4


def keep_freed_memory() -> bool:
    """Tell glibc malloc never to hand memory back (no mmap for big blocks, no trimming); False when the
    C library is not glibc."""
    if not sys.platform.startswith("linux"):
        return False
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(_M_MMAP_MAX, 0)) and bool(mallopt(_M_TRIM_THRESHOLD, 2**31 - 1))


def compile_cache_dir() -> Path:
    """Inductor's cache: ``$TORCHINDUCTOR_CACHE_DIR`` if set, else ``inductor/`` in the project's cache root."""
    env = os.environ.get("TORCHINDUCTOR_CACHE_DIR")
    if env:
        return Path(env)
    from vidtriplane.weights.store import cache_dir

    return cache_dir() / "inductor"


def configure(device: torch.device | str, *, threads: int = 0, tf32: bool = True, cudnn_benchmark: bool = True,
              keep_memory: bool = True, compile_cache: bool = True) -> dict[str, object]:
    """Apply the settings for work on ``device``; returns what was set (for reports)."""
    device = torch.device(device)
    applied: dict[str, object] = {}
    if threads > 0:
        torch.set_num_threads(threads)
    applied["threads"] = torch.get_num_threads()
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = tf32
        torch.backends.cudnn.allow_tf32 = tf32
        torch.backends.cudnn.benchmark = cudnn_benchmark
        applied.update(tf32=tf32, cudnn_benchmark=cudnn_benchmark)
    elif keep_memory:
        applied["keep_memory"] = keep_freed_memory()
    if compile_cache:
        path = compile_cache_dir()
        os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(path))
        applied["compile_cache"] = str(path)
    return applied
