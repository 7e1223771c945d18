"""``vidtriplane bench``: speed and accuracy of the model per backend x precision x batch size, and
frames per second of the whole render pipeline.

Uses generated (random) weights, so it runs anywhere without downloads; speed does not depend on the
weight values. Model-only = one TriPlaneNet v1 inversion per frame (pSp -> render -> tri-plane encoder)
plus one novel-view render, i.e. the official per-frame work (see ``vidtriplane.speed``: warm-up outside
the timed region, synchronised repeats, min and median, PSNR against eager float32). End-to-end =
``render_video`` on a clip (decode, preprocessing or aligned crops, inversion, rendering, composite,
encode); only that mode imports the pipeline (and OpenCV).
"""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional

import click

from vidtriplane.commands.options import device_option, verbosity_options


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


def _choice_list(text: str, available: list[str], what: str) -> list[str]:
    if text == "all":
        return available
    names = [v.strip() for v in text.split(",") if v.strip()]
    unknown = [n for n in names if n not in available]
    if unknown:
        raise click.BadParameter(f"{what} {unknown} not available here; available: {', '.join(available)}")
    return names


def build_net(model_size: str, device, seed: int = 0):
    """A TriPlaneNet v1 with seeded random weights (``tiny`` = the plumbing-test size), eval mode."""
    import torch

    from vidtriplane.models.triplanenet import TriPlaneNet, TriPlaneNetConfig

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = TriPlaneNet(TriPlaneNetConfig.tiny() if model_size == "tiny" else TriPlaneNetConfig())
    return net.eval().requires_grad_(False).to(device)


@click.command(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.option("--model-size", type=click.Choice(["full", "tiny"]), default="full", show_default=True,
              help="tiny: a narrow random model for CPU smoke runs.")
@click.option("--batch-sizes", default="1", show_default=True, help="Comma-separated device batch sizes.")
@click.option("--samples", default="96/96", show_default=True, help="Comma-separated COARSE/FINE depth samples.")
@click.option("--backends", default="all", show_default=True, help="Comma-separated: eager, compiled, triton.")
@click.option("--precisions", default="all", show_default=True, help="Comma-separated: fp32, bf16, fp16.")
@click.option("--compile-network", "compile_mode", default="auto", show_default=True,
              type=click.Choice(["auto", "none", "default", "reduce-overhead", "max-autotune",
                                 "max-autotune-no-cudagraphs"]),
              help="torch.compile mode of the encoders, backbone and SR for the non-eager backends "
                   "(auto = default; none = only the renderer is compiled).")
@click.option("--warmup", type=click.IntRange(1), default=2, show_default=True, help="Untimed calls per row.")
@click.option("--repeats", type=click.IntRange(1), default=5, show_default=True, help="Timed calls per row.")
@click.option("--cttr/--no-cttr", default=False, show_default=True, help="Add one CTTR pass per frame.")
@device_option
@click.option("--threads", type=click.IntRange(0), default=0, show_default=True, help="CPU threads (0 = default).")
@click.option("--end-to-end/--model-only", default=True, show_default=True, help="Also time the whole pipeline.")
@click.option("--input", "clip", default=None, help="Clip for the end-to-end rows [a generated 2 s clip].")
@click.option("--pipeline", default="aligned", show_default=True, help="Pipeline of the end-to-end rows.")
@click.option("--frames", type=click.IntRange(1), default=8, show_default=True, help="Frames of the generated clip.")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Extra config overrides (end to end).")
@click.option("--json", "json_path", default=None, metavar="PATH", help="Write the results as JSON to PATH.")
@verbosity_options
def command(model_size: str, batch_sizes: str, samples: str, backends: str, precisions: str, compile_mode: str,
            warmup: int, repeats: int, cttr: bool, device: str, threads: int, end_to_end: bool, clip: Optional[str],
            pipeline: str, frames: int, overrides: tuple[str, ...], json_path: Optional[str], quiet: bool,
            verbose: bool) -> None:
    """Measure frames per second and accuracy with generated weights (no downloads needed).

    \b
    Examples:
      vidtriplane bench --model-size tiny                                   # CPU smoke run
      vidtriplane bench --batch-sizes 1,8,16 --json gpu.json                # on a GPU
      vidtriplane bench --backends eager,compiled --precisions fp32 --end-to-end --input clip.mp4
    """
    import torch

    from vidtriplane import speed
    from vidtriplane.commands.common import setup_logging
    from vidtriplane.devices import resolve_device
    from vidtriplane.models.compile import compile_network
    from vidtriplane.runtime import configure

    setup_logging(quiet=not verbose, verbose=verbose)
    device = device or "auto"
    dev = resolve_device(device)
    configure(dev, threads=threads)
    backend_names = _choice_list(backends, speed.available_backends(dev), "backends")
    precision_names = _choice_list(precisions, speed.available_precisions(dev), "precisions")
    sizes, sample_list = _int_list(batch_sizes), _samples_list(samples)
    net = build_net(model_size, dev)
    mode = "default" if compile_mode == "auto" else compile_mode
    if mode != "none":
        compile_network(net, mode=mode)
    click.echo(f"device: {speed.device_name(dev)}; model: {model_size}, generated weights; cttr: {int(cttr)}; "
               f"network compile: {mode}", err=True)

    def progress(row) -> None:
        click.echo(f"  {row.backend}/{row.precision} batch {row.batch} {row.samples}: "
                   f"{row.ms_per_frame:.1f} ms/frame", err=True)

    rows = []
    for s in sample_list:
        rows += speed.measure(net, backends=backend_names, precisions=precision_names, batches=sizes, samples=s,
                              warmup=warmup, repeats=repeats, cttr=int(cttr), size=net.psp_encoder.config.input_size,
                              on_row=progress)
    doc = speed.report(dev, rows, model_size=model_size, network_compile=mode, torch=torch.__version__)
    click.echo(speed.markdown_table(rows))
    if end_to_end:
        doc["end_to_end"] = _end_to_end(model_size, device, cttr, sizes, sample_list, clip, pipeline, frames,
                                        overrides)
    if json_path:
        Path(json_path).write_text(json.dumps(doc, indent=2) + "\n")
    sys.stdout.flush()


def _end_to_end(model_size: str, device: str, cttr: bool, sizes: list[int], sample_list: list[tuple[int, int]],
                clip: Optional[str], pipeline: str, frames: int, overrides: tuple[str, ...]) -> list[dict]:
    """Frames per second of ``render_video`` on a clip (imports the pipeline, hence OpenCV)."""
    import logging
    import tempfile

    from vidtriplane.config import resolve
    from vidtriplane.pipeline import load_models, render_video

    logging.getLogger("vidtriplane.pipeline.build").setLevel(logging.ERROR)  # the loud warning is expected here
    preset = ["generated-tiny"] if model_size == "tiny" else []
    base = ["model.weights=generated", f"model.size={model_size}", f"runtime.device={device}",
            f"invert.cttr_steps={int(cttr)}"]
    models = load_models(resolve("render", pipeline=pipeline, configs=preset, overrides=[*base, *overrides]))
    rows = []
    with tempfile.TemporaryDirectory(prefix="vidtriplane-bench-") as tmp:
        src = clip or str(Path(tmp) / "clip.mp4")
        if clip is None:
            _make_clip(src, frames)
        for s in sample_list:
            for b in sizes:
                run_cfg = resolve("render", pipeline=pipeline, configs=preset, overrides=[
                    *base, *overrides, f"runtime.batch_size={b}", f"render.depth_samples={s[0]}",
                    f"render.importance_samples={s[1]}"])
                rep = render_video(src, Path(tmp) / "out.mp4", models, run_cfg, progress=False)
                rows.append({"batch": rep.batch_size, "samples": f"{s[0]}/{s[1]}", "fps": rep.fps,
                             "ms_per_frame": 1000 / rep.fps if rep.fps else 0.0, "frames": rep.frames})
                click.echo(f"end-to-end batch {rep.batch_size} {s[0]}/{s[1]}: {rep.fps:.3f} frames/s", err=True)
    return rows


def _make_clip(path: str, frames: int, size: int = 256) -> None:
    """A moving-gradient clip (only its size and length matter for timing)."""
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
