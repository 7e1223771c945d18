"""``vidtriplane render``: talking-head video in, novel-view video out (file, folder or pipe)."""
from __future__ import annotations

import logging
import signal
import sys
from pathlib import Path
from typing import Any, Optional

import click

from vidtriplane.commands.common import setup_logging

log = logging.getLogger("vidtriplane")

VIDEO_EXTENSIONS = {".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".nut", ".ts", ".y4m", ".mpg", ".mpeg",
                    ".flv", ".wmv", ".3gp"}


def _terminate(signum, frame) -> None:  # SIGTERM -> SystemExit so that `finally` removes temp files
    raise SystemExit(128 + signum)


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


# --------------------------------------------------------------------------------------------------
# planning: which inputs go to which outputs


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve()
    except OSError:
        return False


def plan_jobs(src: str, dst: str, *, recursive: bool, fmt: Optional[str]) -> list[tuple[str, str]]:
    """[(input, output)] for a file, a folder (mirrored into the output folder) or "-"."""
    from vidtriplane.io.writer import ALIASES, EXTENSIONS

    if src == "-":
        return [("-", dst)]
    path = Path(src)
    if not path.exists():
        raise click.ClickException(f"input {src} does not exist")
    if path.is_file():
        if dst != "-" and Path(dst).is_dir():
            raise click.ClickException(f"output {dst} is a folder; give an output file for one input file")
        if dst != "-" and _same_file(path, Path(dst)):
            raise click.ClickException("the output is the input file; choose another output name")
        return [(src, dst)]
    if dst == "-":
        raise click.ClickException("a folder of videos cannot be written to stdout; give an output folder")
    out_dir = Path(dst)
    if (out_dir.exists() and not out_dir.is_dir()) or (not out_dir.exists() and out_dir.suffix.lower() in EXTENSIONS):
        raise click.ClickException(f"input {src} is a folder, so the output must be a folder, but {dst} is a file")
    ext = {v: k for k, v in EXTENSIONS.items() if k not in (".m4v", ".raw")}.get(
        ALIASES.get(fmt, fmt) if fmt else "mp4", ".mp4")
    pattern = "**/*" if recursive else "*"
    jobs = []
    for f in sorted(path.glob(pattern)):
        if not f.is_file() or f.suffix.lower() not in VIDEO_EXTENSIONS or f.name.startswith("."):
            continue
        if _same_file(f.parent, out_dir) or out_dir.resolve() in f.resolve().parents:
            continue  # never read our own outputs back
        out = out_dir / f.relative_to(path).with_suffix(ext)
        if _same_file(f, out):
            raise click.ClickException(f"output {out} would overwrite its input; choose another output folder")
        jobs.append((str(f), str(out)))
    if not jobs:
        raise click.ClickException(f"no videos in {src}" + ("" if recursive else " (use --recursive for subfolders)"))
    return jobs


# --------------------------------------------------------------------------------------------------


@click.command(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.argument("src", metavar="INPUT")
@click.option("-o", "--output", "dst", required=True, metavar="OUTPUT",
              help="Output file, folder (for a folder INPUT; mirrors its tree) or - for stdout.")
@click.option("--pipeline", default="default", show_default=True,
              help="Named pipeline in pipelines/ (default, aligned, ...) or a .yaml path.")
@click.option("--config", "configs", multiple=True, metavar="YAML",
              help="Preset name in configs/ or a YAML file (repeatable).")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override any config key, e.g. render.depth_samples=48.")
@click.option("--yaw", type=float, multiple=True, help="Novel-camera yaw in radians (repeat for several views).")
@click.option("--pitch", type=float, multiple=True, help="Novel-camera pitch in radians.")
@click.option("--camera", type=click.Choice(["absolute", "relative", "sway", "orbit"]), default=None,
              help="absolute: fixed camera; relative: offset from each frame's pose; sway/orbit: moving camera.")
@click.option("--layout", type=click.Choice(["crop", "side_by_side", "paste"]), default=None,
              help="Novel view only, input|same-view|novel, or the reconstruction pasted into the frame.")
@click.option("--separate-views", is_flag=True, help="One output file per view instead of a grid.")
@click.option("--cttr/--no-cttr", default=None, help="Cascaded test-time refinement (one pass).")
@click.option("--depth-samples", type=click.IntRange(2, 512), default=None, help="Coarse samples per ray [96].")
@click.option("--importance-samples", type=click.IntRange(0, 512), default=None, help="Fine samples per ray [96].")
@click.option("--batch-size", type=click.IntRange(0, 1024), default=None, help="Frames per device batch [auto].")
@click.option("--device", default=None, help="auto, cpu, cuda, cuda:1 [auto].")
@click.option("--weights", type=click.Choice(["registry", "generated"]), default=None,
              help="registry: official checkpoints; generated: random weights for tests/benchmarks "
                   "(meaningless output).")
@click.option("--model-size", type=click.Choice(["full", "tiny"]), default=None,
              help="tiny: plumbing tests (generated weights). Render settings stay as configured: "
                   "`--config generated-tiny` gives the matching fast ones (12/12 samples, 32 px rays).")
@click.option("-f", "--format", "fmt", default=None,
              help="Output container: mp4, mkv, nut, mpegts, y4m, rawvideo, mov (required for -o -).")
@click.option("--input-format", default=None,
              help="Force the input container (y4m, nut, matroska, mpegts, mp4, rawvideo).")
@click.option("--raw-size", default=None, metavar="WxH", help="rawvideo input: frame size.")
@click.option("--raw-pix-fmt", default=None, help="rawvideo input: pixel format [rgb24].")
@click.option("--raw-rate", default=None, help="rawvideo input: frame rate [25].")
@click.option("-r", "--recursive", is_flag=True, help="Folder input: include subfolders.")
@click.option("--overwrite", is_flag=True, help="Replace existing outputs (folders: redo finished files).")
@click.option("--report", is_flag=True, help="Write OUTPUT.report.json per output (stderr for -o -).")
@click.option("--dry-run", is_flag=True, help="Print the resolved config and the planned outputs; render nothing.")
@click.option("-q", "--quiet", is_flag=True, help="Warnings and errors only; no progress bar.")
def command(src: str, dst: str, pipeline: str, configs: tuple[str, ...], overrides: tuple[str, ...], recursive: bool,
            overwrite: bool, report: bool, dry_run: bool, quiet: bool, **flag_values: Any) -> None:
    """Render INPUT (a video, a folder of videos, or - for stdin) from novel cameras.

    \b
    Examples:
      vidtriplane render samples/astronaut.mp4 --yaw 0.3 -o out.mp4
      vidtriplane render in.mp4 --yaw -0.4 --yaw 0.4 --layout crop -o views.mp4
      vidtriplane render in.mp4 --camera orbit -o orbit.mkv --cttr
      vidtriplane render clips/ -r -o rendered/            # resumes: finished files are skipped
      ffmpeg -i in.mp4 -f nut - | vidtriplane render - -o - --format nut | ffmpeg -i - out.mp4
      vidtriplane render in.mp4 -o out.mp4 --set render.depth_samples=48 --dry-run
    """
    setup_logging(quiet)
    from vidtriplane.config import ConfigError, dump
    from vidtriplane.config import resolve

    try:
        cfg = resolve("render", pipeline=pipeline, configs=configs, flags=build_flags(**flag_values),
                             overrides=overrides)
    except (ConfigError, click.BadParameter) as exc:
        raise click.ClickException(str(exc)) from None
    jobs = plan_jobs(src, dst, recursive=recursive, fmt=cfg.output.format)
    from vidtriplane.io.writer import OutputError, resolve_format
    from vidtriplane.pipeline import PipelineError, output_targets
    from vidtriplane.stages.composite import output_names

    try:
        for _, out in jobs:
            resolve_format(out, cfg.output)
            output_targets(out, output_names(cfg.composite, cfg.render))
    except (OutputError, PipelineError) as exc:
        raise click.ClickException(str(exc)) from None
    if dry_run:
        click.echo(dump(cfg), nl=False)
        for s, d in jobs:
            click.echo(f"{s} -> {d}", err=True)
        return
    signal.signal(signal.SIGTERM, _terminate)
    from vidtriplane.commands._render_run import run_jobs

    is_folder = src != "-" and Path(src).is_dir()
    failed = run_jobs(jobs, cfg, out_folder=Path(dst) if is_folder else None, overwrite=overwrite,
                      report=report, progress=not quiet)
    if failed:
        sys.exit(1)
