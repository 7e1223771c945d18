"""``vidtriplane render``: talking-head video in, novel-view video out (file, folder or pipe)."""
from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any, Optional

import click

from vidtriplane.commands.common import setup_logging
from vidtriplane.commands.options import (batch_size_option, check_raw_input, config_options, device_option,
                                          engine_options, input_options, overwrite_option, report_option,
                                          verbosity_options)

log = logging.getLogger("vidtriplane")


def view_flags(yaws: tuple[float, ...], pitches: tuple[float, ...], camera: Optional[str]) -> list[dict]:
    """--yaw/--pitch/--camera -> render.views entries (one view per yaw value)."""
    if not yaws and not pitches and not camera:
        return []
    if not yaws:
        yaws = (0.3,) if camera in (None, "absolute") else (0.0,)
    if len(pitches) > 1 and len(pitches) != len(yaws):
        raise click.BadParameter("give one --pitch, or one per --yaw", param_hint="--pitch")
    pitches = pitches if len(pitches) == len(yaws) else (pitches[0] if pitches else 0.0,) * len(yaws)
    views = []
    for yaw, pitch in zip(yaws, pitches):
        name = "novel" if len(yaws) == 1 else f"yaw{yaw:+.2f}".replace(".", "p")
        views.append({"name": name, "mode": camera or "absolute", "yaw": yaw, "pitch": pitch})
    return views


def build_flags(**o: Any) -> dict:
    """Command-line flags -> a nested config mapping (only the flags that were given)."""
    flags: dict = {}

    def put(path: str, value: Any) -> None:
        if value is None:
            return
        node = flags
        *parents, leaf = path.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value

    views = view_flags(o["yaw"], o["pitch"], o["camera"])
    if views:
        put("render.views", views)
    put("composite.layout", o["layout"])
    put("composite.views_output", "separate" if o["separate_views"] else None)
    put("invert.cttr_steps", None if o["cttr"] is None else int(o["cttr"]))
    put("render.depth_samples", o["depth_samples"])
    put("render.importance_samples", o["importance_samples"])
    put("runtime.batch_size", o["batch_size"])
    put("runtime.device", o["device"])
    put("model.weights", o["weights"])
    put("model.size", o["model_size"])
    put("output.format", o["fmt"])
    put("input.format", o["input_format"])
    put("input.raw_size", o["raw_size"])
    put("input.raw_pix_fmt", o["raw_pix_fmt"])
    put("input.raw_rate", o["raw_rate"])
    return flags


def folder_suffix(fmt: Optional[str]) -> str:
    """Extension of the outputs of a folder run for ``--format`` (mp4 by default)."""
    from vidtriplane.io.writer import ALIASES, EXTENSIONS

    by_format = {v: k for k, v in EXTENSIONS.items() if k not in (".m4v", ".raw")}
    return by_format.get(ALIASES.get(fmt, fmt) if fmt else "mp4", ".mp4")


@click.command(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.argument("src", metavar="INPUT")
@click.option("-o", "--output", "dst", required=True, metavar="OUTPUT",
              help="Output file, folder (for a folder INPUT; mirrors its tree) or - for stdout.")
@click.option("--pipeline", default="default", show_default=True,
              help="Named pipeline (default, aligned, fast-cpu, orbit, paste; `vidtriplane presets`) or a .yaml path.")
@config_options("render")
@click.option("--yaw", type=float, multiple=True, help="Novel-camera yaw in radians (repeat for several views).")
@click.option("--pitch", type=float, multiple=True, help="Novel-camera pitch in radians.")
@click.option("--camera", type=click.Choice(["absolute", "relative", "sway", "orbit"]), default=None,
              help="absolute: fixed camera; relative: offset from each frame's pose; sway/orbit: moving camera.")
@click.option("--layout", type=click.Choice(["crop", "side_by_side", "paste"]), default=None,
              help="Novel view only, input|same-view|novel (the default), or the reconstruction pasted into the frame.")
@click.option("--separate-views", is_flag=True,
              help="One output file per view (OUTPUT_<view>.ext) instead of one grid; crop and side_by_side layouts.")
@click.option("--cttr/--no-cttr", default=None, help="Cascaded test-time refinement (one pass, v1).")
@click.option("--depth-samples", type=click.IntRange(2, 512), default=None, help="Coarse samples per ray [96].")
@click.option("--importance-samples", type=click.IntRange(0, 512), default=None, help="Fine samples per ray [96].")
@batch_size_option()
@device_option
@click.option("--weights", default=None, metavar="registry|generated|FILE",
              help="registry: the official checkpoints [default]; generated: random weights for tests and "
                   "benchmarks (meaningless output); or a TriPlaneNet checkpoint file (e.g. from `vidtriplane train`).")
@click.option("--model-size", type=click.Choice(["full", "tiny"]), default=None,
              help="tiny: plumbing tests (generated weights). Render settings stay as configured: "
                   "`--config generated-tiny` gives the matching fast ones (12/12 samples, 32 px rays).")
@click.option("-f", "--format", "fmt", default=None,
              help="Output container: mp4, mkv, nut, mpegts, y4m, rawvideo, mov (required for -o -).")
@input_options
@click.option("-r", "--recursive", is_flag=True, help="Folder input: include subfolders.")
@overwrite_option("Replace existing outputs (folders: redo finished files).")
@report_option
@engine_options(segments=True)
@verbosity_options
def command(src: str, dst: str, pipeline: str, configs: tuple[str, ...], overrides: tuple[str, ...],
            dry_run: bool, recursive: bool, overwrite: bool, report: bool, quiet: bool, verbose: bool,
            engine, **flag_values: Any) -> None:
    """Render INPUT (a video, a folder of videos, or - for stdin) from novel cameras.

    \b
    Examples:
      vidtriplane render samples/astronaut.mp4 --yaw 0.3 -o out.mp4
      vidtriplane render in.mp4 --yaw -0.4 --yaw 0.4 --layout crop -o views.mp4
      vidtriplane render in.mp4 --camera orbit -o orbit.mkv --cttr
      vidtriplane render clips/ -r -o rendered/            # resumes: finished files are skipped
      ffmpeg -i in.mp4 -f nut - | vidtriplane render - -o - --format nut | ffmpeg -i - out.mp4
      vidtriplane render in.mp4 -o out.mp4 --set render.depth_samples=48 --dry-run
      vidtriplane render clips/ -r -o rendered/ --engine ray --gpus-per-worker 1
      vidtriplane render long.mp4 -o out.mp4 --engine ray --address auto --segment-frames 1000
    """
    setup_logging(quiet, verbose)
    from vidtriplane.config import dump, resolve
    from vidtriplane.io.writer import resolve_format
    from vidtriplane.runners.jobs import check_outputs_writable, plan
    from vidtriplane.runners.render import FOLDER_CONFIG_NAME, RenderTask

    try:
        flags = build_flags(**flag_values)
    except click.BadParameter as exc:
        raise click.UsageError(str(exc)) from None
    cfg = resolve("render", pipeline=pipeline, configs=configs, flags=flags, overrides=overrides)
    check_raw_input(cfg.input)
    folder_input = src != "-" and Path(src).is_dir()
    task = RenderTask(cfg, save_report=report, save_config=not folder_input, progress=not quiet and engine.local)
    jobs, folder = plan(src, dst, recursive=recursive, suffix=folder_suffix(cfg.output.format),
                        outputs_of=task.outputs)
    for job in jobs:
        resolve_format(job.target, cfg.output)
    if dry_run:
        click.echo(dump(cfg), nl=False)
        for job in jobs:
            click.echo(f"{job.source} -> {', '.join(job.outputs) or job.target}", err=True)
        return
    engine.check(jobs)
    check_outputs_writable(jobs, dst if folder else None)
    from vidtriplane.runners.local import log_summary, pending

    if not folder and src != "-":
        pending(jobs, folder=False, overwrite=overwrite)  # an existing output is refused first (a usage error)
        _check_input(src, cfg)

    if folder:
        if pending(jobs, folder=True, overwrite=overwrite)[0]:
            Path(dst).mkdir(parents=True, exist_ok=True)
            (Path(dst) / FOLDER_CONFIG_NAME).write_text(dump(cfg))
    summary = engine.run(jobs, task, folder=folder, overwrite=overwrite)
    if folder:
        _write_folder_report(dst, summary, report)
        log_summary(summary)
    if not engine.local:
        from vidtriplane.runners.ray import log_workers

        log_workers(summary)
    if not summary.ok:
        sys.exit(1)


def _check_input(src: str, cfg) -> None:
    """A single input file is opened before the models load, so a file that is not a video fails at once."""
    from vidtriplane.io.reader import open_video

    with open_video(src, cfg.input):
        pass


def _write_folder_report(dst: str, summary, wanted: bool) -> None:
    """The folder's report (every job, failures with their error and traceback): with --report, or
    whenever something failed."""
    import json

    from vidtriplane.runners.render import folder_report_path
    from vidtriplane.weights.store import atomic_write_text

    if wanted or not summary.ok:
        path = folder_report_path(dst)
        atomic_write_text(path, json.dumps(summary.to_dict(), indent=1, default=str) + "\n")
        log.info("folder report: %s", path)
