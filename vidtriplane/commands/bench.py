"""``vidtriplane bench``: frames per second of the model alone and of the whole render pipeline.

Uses generated (random) weights, so it runs anywhere without downloads; speed does not depend on the
weight values. Model-only = one TriPlaneNet v1 inversion per frame (pSp -> render -> tri-plane encoder)
plus one novel-view render, i.e. the official per-frame work; end-to-end = ``render_video`` on a clip
(decode, preprocessing or aligned crops, inversion, rendering, composite, encode).
"""
from __future__ import annotations

import json
import sys
import time
from typing import Any, Optional

import click


def _int_list(text: str) -> list[int]:
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise click.BadParameter(f"{text!r} is not a comma-separated list of integers") from None


def _samples_list(text: str) -> list[tuple[int, int]]:
    out = []
    for item in text.split(","):
        coarse, _, fine = item.strip().partition("/")
        try:
            out.append((int(coarse), int(fine or coarse)))
        except ValueError:
            raise click.BadParameter(f"{item!r} is not COARSE/FINE (e.g. 96/96)") from None
    return out


def model_fps(net, device, batch: int, samples: tuple[int, int], *, iters: int, cttr: int,
              nrr: Optional[int] = None) -> dict[str, Any]:
    """Time ``iters`` batches of encode + one novel render (after one warm-up batch)."""
    import torch

    from vidtriplane.geometry.camera import lookat_label
    from vidtriplane.stages.invert import input_size

    size = input_size(net)
    g = torch.Generator().manual_seed(0)
    x = (torch.rand(batch, 3, size, size, generator=g) * 2 - 1).to(device)
    c = lookat_label(torch.zeros(batch), torch.zeros(batch)).to(device)
    c_nv = lookat_label(torch.full((batch,), 0.3), torch.zeros(batch)).to(device)
    kwargs = {"depth_samples": samples[0], "importance_samples": samples[1], "sampling": "deterministic"}
    if nrr:
        kwargs["neural_rendering_resolution"] = nrr

    def once() -> None:
        inv = net.encode(x, c, cttr_steps=cttr, **kwargs)
        net.render(inv, c_nv, **kwargs)

    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    with torch.inference_mode():
        once()
        sync()
        start = time.perf_counter()
        for _ in range(iters):
            once()
        sync()
        seconds = time.perf_counter() - start
    row = {"mode": "model", "batch": batch, "samples": f"{samples[0]}/{samples[1]}",
           "fps": batch * iters / seconds, "ms_per_frame": 1000 * seconds / (batch * iters)}
    if device.type == "cuda":
        row["peak_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
    return row


@click.command(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.option("--model-size", type=click.Choice(["full", "tiny"]), default="full", show_default=True)
@click.option("--batch-sizes", default="1", show_default=True, help="Comma-separated device batch sizes.")
@click.option("--samples", default="96/96", show_default=True, help="Comma-separated COARSE/FINE depth samples.")
@click.option("--iters", type=click.IntRange(1), default=2, show_default=True, help="Timed batches per row.")
@click.option("--cttr/--no-cttr", default=False, show_default=True, help="Add one CTTR pass per frame.")
@click.option("--device", default="auto", show_default=True)
@click.option("--end-to-end/--model-only", default=True, show_default=True, help="Also time the whole pipeline.")
@click.option("--input", "clip", default=None, help="Clip for the end-to-end rows [a generated 2 s clip].")
@click.option("--pipeline", default="aligned", show_default=True,
              help="Pipeline of the end-to-end rows (default = with face preprocessing).")
@click.option("--frames", type=click.IntRange(1), default=8, show_default=True, help="Frames of the generated clip.")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Extra config overrides (end to end).")
@click.option("--json", "as_json", is_flag=True, help="Print the rows as JSON instead of a table.")
def command(model_size: str, batch_sizes: str, samples: str, iters: int, cttr: bool, device: str, end_to_end: bool,
            clip: Optional[str], pipeline: str, frames: int, overrides: tuple[str, ...], as_json: bool) -> None:
    """Measure frames per second with generated weights (no downloads needed).

    \b
    Examples:
      vidtriplane bench --model-size tiny --batch-sizes 1,4
      vidtriplane bench --batch-sizes 1,8,16 --samples 48/48,96/96 --model-only     # on a GPU
      vidtriplane bench --input samples/astronaut.mp4 --pipeline default
    """
    import logging
    import tempfile
    from pathlib import Path

    import torch

    from vidtriplane.commands.common import setup_logging
    from vidtriplane.pipeline import load_models, render_video
    from vidtriplane.config import resolve

    setup_logging(quiet=True)
    logging.getLogger("vidtriplane.stages.invert").setLevel(logging.ERROR)  # the loud warning is expected here
    sizes, sample_list = _int_list(batch_sizes), _samples_list(samples)
    preset = ["generated-tiny"] if model_size == "tiny" else []
    base = ["model.weights=generated", f"model.size={model_size}", f"runtime.device={device}",
            f"invert.cttr_steps={int(cttr)}"]
    cfg = resolve("render", pipeline=pipeline, configs=preset, overrides=[*base, *overrides])
    models = load_models(cfg)
    dev = models.device
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else f"cpu ({torch.get_num_threads()} threads)"
    click.echo(f"device: {name}; model: {model_size}, generated weights; cttr: {int(cttr)}", err=True)
    rows = []
    for s in sample_list:
        for b in sizes:
            rows.append(model_fps(models.net, dev, b, s, iters=iters, cttr=int(cttr),
                                  nrr=cfg.render.neural_rendering_resolution))
    if end_to_end:
        with tempfile.TemporaryDirectory(prefix="vidtriplane-bench-") as tmp:
            src = clip
            if src is None:
                src = str(Path(tmp) / "clip.mp4")
                _make_clip(src, frames)
            for s in sample_list:
                for b in sizes:
                    run_cfg = resolve("render", pipeline=pipeline, configs=preset, overrides=[
                        *base, *overrides, f"runtime.batch_size={b}", f"render.depth_samples={s[0]}",
                        f"render.importance_samples={s[1]}"])
                    report = render_video(src, Path(tmp) / "out.mp4", models, run_cfg, progress=False)
                    rows.append({"mode": "end-to-end", "batch": report.batch_size, "samples": f"{s[0]}/{s[1]}",
                                 "fps": report.fps, "ms_per_frame": 1000 / report.fps if report.fps else 0.0,
                                 "frames": report.frames})
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    header = ["mode", "batch", "samples", "fps", "ms_per_frame", "peak_gib", "frames"]
    cols = [h for h in header if any(h in r for r in rows)]
    click.echo(" | ".join(f"{h:>12}" for h in cols))
    click.echo("-|-".join("-" * 12 for _ in cols))
    for r in rows:
        cells = [f"{r[h]:12.3f}" if isinstance(r.get(h), float) else f"{r.get(h, ''):>12}" for h in cols]
        click.echo(" | ".join(cells))
    sys.stdout.flush()


def _make_clip(path: str, frames: int, size: int = 256) -> None:
    """A moving-gradient clip with audio (only its size and length matter for timing)."""
    from fractions import Fraction

    import av
    import numpy as np

    with av.open(path, "w") as c:
        s = c.add_stream("libx264", rate=25)
        s.width = s.height = size
        s.pix_fmt = "yuv420p"
        s.options = {"preset": "ultrafast"}
        y, x = np.mgrid[0:size, 0:size]
        for i in range(frames):
            img = np.stack([(x + 3 * i) % 256, (y + 5 * i) % 256, np.full_like(x, 7 * i % 256)], -1).astype(np.uint8)
            f = av.VideoFrame.from_ndarray(img, format="rgb24")
            f.pts, f.time_base = i, Fraction(1, 25)
            c.mux(s.encode(f))
        c.mux(s.encode(None))
