"""Measuring the model's speed and accuracy per backend x precision x batch size.

Used by ``vidtriplane bench`` and ``benchmarks/gpu_fast.py``. One measurement = one TriPlaneNet v1
inversion per frame (pSp -> render -> tri-plane encoder) plus one novel-view render, the official
per-frame work. Warm-up calls (compilation, CUDA-graph capture, cuDNN autotuning) run before the timed
region; every timed call is bracketed by device synchronisation; the report gives the min and the
median; the image is compared with eager float32 on the same inputs (PSNR, images in [-1, 1]).
"""
from __future__ import annotations

import math
import statistics
import time
from dataclasses import asdict, dataclass
from typing import Callable, Iterable, Sequence

import torch

from vidtriplane.models.eg3d.backends import triton_importable, triton_interpreted
from vidtriplane.models.precision import PRECISIONS


@dataclass(frozen=True)
class SpeedRow:
    """One line of the table (the JSON keys of ``vidtriplane bench --json``)."""

    backend: str
    precision: str
    batch: int
    fps: float
    """Frames per second of the fastest repeat."""
    ms_per_frame: float
    """Milliseconds per frame of the fastest repeat."""
    ms_per_frame_median: float
    peak_mem_bytes: int | None
    """Peak CUDA memory allocated during the timed repeats (None on the CPU)."""
    psnr_db_vs_eager_fp32: float | None
    """PSNR of the final image against eager float32 (peak-to-peak 2); None = bit-identical."""
    samples: str = "96/96"
    """Coarse/fine depth samples per ray."""


def available_backends(device: torch.device) -> list[str]:
    """Backends that can run on ``device``: eager and compiled everywhere, triton on CUDA when installed."""
    names = ["eager", "compiled"]
    if triton_importable() and (device.type == "cuda" or triton_interpreted()):
        names.append("triton")
    return names


def available_precisions(device: torch.device) -> list[str]:
    """All precisions (CPU autocast supports bf16 and fp16 as well)."""
    return list(PRECISIONS)


def psnr(image: torch.Tensor, reference: torch.Tensor) -> float | None:
    """PSNR in dB of images in [-1, 1] (peak-to-peak 2); None when they are identical."""
    mse = (image.double() - reference.double()).square().mean().item()
    return None if mse == 0 else 10 * math.log10(4.0 / mse)


def sync(device: torch.device) -> None:
    """Wait for queued device work (no-op on the CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_call(fn: Callable[[], torch.Tensor], device: torch.device, *, warmup: int, repeats: int
              ) -> tuple[list[float], torch.Tensor]:
    """Call ``fn`` ``warmup`` times untimed, then ``repeats`` timed times; (seconds per repeat, last output)."""
    out = None
    for _ in range(warmup):
        out = fn()
    sync(device)
    seconds = []
    for _ in range(repeats):
        sync(device)
        start = time.perf_counter()
        out = fn()
        sync(device)
        seconds.append(time.perf_counter() - start)
    return seconds, out


def model_inputs(batch: int, size: int, device: torch.device, seed: int = 0
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Seeded input images [B, 3, size, size] in [-1, 1], input cameras (frontal) and novel cameras (yaw 0.3)."""
    from vidtriplane.geometry.camera import lookat_label

    g = torch.Generator().manual_seed(seed)
    x = (torch.rand(batch, 3, size, size, generator=g) * 2 - 1).to(device)
    c = lookat_label(torch.zeros(batch), torch.zeros(batch)).to(device)
    c_novel = lookat_label(torch.full((batch,), 0.3), torch.zeros(batch)).to(device)
    return x, c, c_novel


def forward_fn(net: torch.nn.Module, x: torch.Tensor, c: torch.Tensor, c_novel: torch.Tensor, *, backend: str,
               precision: str, samples: tuple[int, int], cttr: int = 0, **render_kwargs) -> Callable[[], torch.Tensor]:
    """encode + one novel-view render (deterministic sampling) as a no-argument callable -> image."""
    kw = dict(backend=backend, precision=precision, depth_samples=samples[0], importance_samples=samples[1],
              sampling="deterministic", **render_kwargs)

    @torch.inference_mode()
    def once() -> torch.Tensor:
        return net.render(net.encode(x, c, cttr_steps=cttr, **kw), c_novel, **kw).image

    return once


def measure_one(net: torch.nn.Module, *, backend: str, precision: str, batch: int,
                samples: tuple[int, int] = (96, 96), warmup: int = 2, repeats: int = 5, cttr: int = 0,
                size: int = 256, references: dict | None = None, **render_kwargs) -> SpeedRow:
    """Time one backend x precision x batch. ``references`` caches the eager float32 image per
    (batch, samples, cttr), the reference of the PSNR column."""
    device = next(net.parameters()).device
    x, c, c_novel = model_inputs(batch, size, device)
    references = {} if references is None else references
    key = (batch, samples, cttr, tuple(sorted(render_kwargs.items())))
    if key not in references:
        references[key] = forward_fn(net, x, c, c_novel, backend="eager", precision="fp32", samples=samples,
                                     cttr=cttr, **render_kwargs)()
    fn = forward_fn(net, x, c, c_novel, backend=backend, precision=precision, samples=samples, cttr=cttr,
                    **render_kwargs)
    if device.type == "cuda":
        fn()  # compile/capture before resetting the peak
        torch.cuda.reset_peak_memory_stats(device)
    seconds, image = time_call(fn, device, warmup=warmup, repeats=repeats)
    best, median = min(seconds), statistics.median(seconds)
    return SpeedRow(backend=backend, precision=precision, batch=batch, fps=batch / best,
                    ms_per_frame=1000 * best / batch, ms_per_frame_median=1000 * median / batch,
                    peak_mem_bytes=torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None,
                    psnr_db_vs_eager_fp32=psnr(image.float(), references[key].float()),
                    samples=f"{samples[0]}/{samples[1]}")


def measure(net: torch.nn.Module, *, backends: Sequence[str], precisions: Sequence[str], batches: Iterable[int],
            on_row: Callable[[SpeedRow], None] | None = None, **kwargs) -> list[SpeedRow]:
    """:func:`measure_one` for every batch x backend x precision (keyword arguments passed on)."""
    rows, references = [], {}
    for batch in batches:
        for backend in backends:
            for precision in precisions:
                rows.append(measure_one(net, backend=backend, precision=precision, batch=batch,
                                        references=references, **kwargs))
                if on_row is not None:
                    on_row(rows[-1])
    return rows


def device_name(device: torch.device) -> str:
    """GPU name, or ``cpu MODEL (N threads)`` (the model from /proc/cpuinfo where there is one)."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    model = cpu_model()
    return f"cpu {model} ({torch.get_num_threads()} threads)" if model else f"cpu ({torch.get_num_threads()} threads)"


def cpu_model() -> str:
    """The processor's model name (Linux), else the platform's word for it, else ''."""
    import platform

    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def report(device: torch.device, rows: Sequence[SpeedRow], **extra) -> dict:
    """The JSON document: ``{"device": ..., "results": [row, ...], **extra}``."""
    return {"device": device_name(device), "results": [asdict(r) for r in rows], **extra}


def markdown_table(rows: Sequence[SpeedRow]) -> str:
    """The rows as a GitHub markdown table."""
    lines = ["| backend | precision | batch | samples | frames/s | ms/frame (min) | ms/frame (median) | peak memory "
             "| PSNR vs eager fp32 |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        mem = f"{r.peak_mem_bytes / 2**30:.2f} GiB" if r.peak_mem_bytes is not None else "n/a"
        quality = "identical" if r.psnr_db_vs_eager_fp32 is None else f"{r.psnr_db_vs_eager_fp32:.1f} dB"
        lines.append(f"| {r.backend} | {r.precision} | {r.batch} | {r.samples} | {r.fps:.3f} | {r.ms_per_frame:.1f} "
                     f"| {r.ms_per_frame_median:.1f} | {mem} | {quality} |")
    return "\n".join(lines)
