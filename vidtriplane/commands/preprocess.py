"""``vidtriplane preprocess``: aligned 512 crops + ``dataset.json`` camera labels from a video or images."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Optional

import click

from vidtriplane.commands.common import setup_logging
from vidtriplane.commands.options import (check_raw_input, config_options, device_option, engine_options,
                                          input_options, overwrite_option, verbosity_options)
from vidtriplane.errors import PlanError

log = logging.getLogger("vidtriplane")

FOLDER_REPORT_NAME = "vidtriplane-preprocess.report.json"


def resolve_config(configs: tuple[str, ...], overrides: tuple[str, ...], matting: Optional[bool], official: bool,
                   device: Optional[str] = None):
    """Presets -> flags -> ``--set`` overrides, as a PreprocessConfig."""
    from vidtriplane.config import resolve

    flags: dict[str, Any] = {}
    if device is not None:
        flags["landmarks"] = {"device": device}
    if matting is not None:
        flags["matting"] = {"enabled": matting}
    if official:
        flags["align"] = {"official_rounding": True}
        flags["smooth"] = {"mode": "off"}
    return resolve("preprocess", configs=configs, flags=flags, overrides=overrides)


@click.command(
    "preprocess",
    epilog="""\b
Examples:
  vidtriplane preprocess talk.mp4 -o data/talk
  vidtriplane preprocess photos/ -o data/photos --official --mirror
  ffmpeg -i in.mov -f nut - | vidtriplane preprocess - -o data/clip
  vidtriplane preprocess talk.mp4 -o out --matting --set matting.background=[0,0,0]
  vidtriplane preprocess talks/ -r -o datasets/             # one dataset folder per video
  vidtriplane preprocess talks/ -r -o datasets/ --engine ray --workers 8
  vidtriplane preprocess talk.mp4 -o out --set landmarks.backend=mtcnn --device cuda
""",
)
@click.argument("input", type=str)
@click.option("-o", "--output", "output", required=True, type=click.Path(file_okay=False),
              help="Output folder (written under a hidden temporary name and renamed when complete).")
@config_options("preprocess")
@click.option("--matting/--no-matting", default=None,
              help="Replace the crop background (rembg).  [default: from config: off]")
@click.option("--official", is_flag=True,
              help="Official integer crop, no smoothing (dataset parity with the EG3D code).")
@click.option("--mirror", is_flag=True, help="Also write mirrored crops NAME_mirror.png with mirrored labels.")
@click.option("--batch-size", type=click.IntRange(1, 4096), default=16, show_default=True, help="Frames per batch.")
@device_option
@click.option("--cache-dir", type=click.Path(file_okay=False),
              help="Pose cache folder.  [default: $VIDTRIPLANE_CACHE/poses, else poses/ in $VIDTRIPLANE_HOME "
                   "(~/.cache/vidtriplane)]")
@click.option("--no-cache", is_flag=True, help="Neither read nor write the pose cache.")
@input_options
@overwrite_option("Replace an output folder that already holds files (folders of videos: redo finished datasets).")
@click.option("-r", "--recursive", is_flag=True, help="Folder of videos: include subfolders.")
@engine_options()
@verbosity_options
def command(input: str, output: str, configs, overrides, dry_run, matting, official, mirror, batch_size, device,
            cache_dir, no_cache, input_format, raw_size, raw_pix_fmt, raw_rate, overwrite, recursive, engine, quiet,
            verbose) -> None:
    """Write aligned 512x512 face crops (PNG) and dataset.json camera labels for INPUT.

    INPUT is a video file, a folder of images, a folder of videos (one dataset folder per video:
    OUTPUT/<relative path without suffix>/, finished ones are skipped), or - for a video on stdin. Every
    input frame gives one crop: frames without a face hold the last good crop and pose, then fall back
    (counted, listed in preprocess.json). dataset.json has the official format
    {"labels": [[name, [25 floats]], ...]}. --device (landmarks.device) places the MTCNN detector
    (landmarks.backend=mtcnn) and, when matting.device is auto, the matting network.
    """
    from vidtriplane.config import dump
    from vidtriplane.config.media import ReaderConfig
    from vidtriplane.runners.jobs import Job, check_writable, refuse_output_over_input
    from vidtriplane.runners.preprocess import PreprocessTask

    setup_logging(quiet, verbose)
    cfg = resolve_config(configs, overrides, matting, official, device)
    given = {"format": input_format, "raw_size": raw_size, "raw_pix_fmt": raw_pix_fmt, "raw_rate": raw_rate}
    reader = ReaderConfig(**{k: v for k, v in given.items() if v is not None}, audio=False)
    check_raw_input(reader)
    if dry_run:
        click.echo(dump(cfg), nl=False)
        return
    task = PreprocessTask(cfg, mirror=mirror, batch_size=batch_size, cache_dir=cache_dir, use_cache=not no_cache,
                          reader=reader)
    if input != "-" and Path(input).is_dir() and _holds_videos(Path(input), recursive):
        _run_folder(input, output, task, engine, recursive=recursive, overwrite=overwrite)
        return
    out = Path(output)
    if input != "-" and Path(input).exists():
        refuse_output_over_input(Path(input), out, "the dataset replaces the whole output folder, so choose "
                                                   "another one (a new folder, or one beside the input)")
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise PlanError(f"output folder {out} already holds files; pass --overwrite to replace it")
    if input != "-" and not Path(input).exists():
        raise PlanError(f"input {input} does not exist (give a video, an image folder, or - for stdin)")
    job = Job(input, output, (output,))
    engine.check([job])
    check_writable(out)
    engine.run([job], task, folder=False, overwrite=True)
    log.info("wrote %s", out)


def _holds_videos(folder: Path, recursive: bool) -> bool:
    """A folder of videos (True) or of images (False; also when it holds neither: run() says so)."""
    from vidtriplane.pipeline.dataset import IMAGE_EXTENSIONS
    from vidtriplane.runners.jobs import VIDEO_EXTENSIONS

    top = [p for p in folder.iterdir() if p.is_file()]
    images = any(p.suffix.lower() in IMAGE_EXTENSIONS for p in top)
    files = folder.glob("**/*") if recursive else top
    videos = any(p.suffix.lower() in VIDEO_EXTENSIONS and p.is_file() for p in files)
    if images and videos:
        raise PlanError(f"{folder} holds both images and videos; put the images (one dataset) and the videos "
                        "(one dataset each) in separate folders")
    return videos


def _run_folder(src: str, dst: str, task, engine, *, recursive: bool, overwrite: bool) -> None:
    """One dataset folder per video, through the engine's runner; failures are reported, the rest finish."""
    import json
    import sys

    from vidtriplane.runners.jobs import check_outputs_writable, plan
    from vidtriplane.runners.local import log_summary
    from vidtriplane.weights.store import atomic_write_text

    jobs, _ = plan(src, dst, recursive=recursive, suffix="", outputs_of=task.outputs)
    engine.check(jobs)
    check_outputs_writable(jobs, dst)
    summary = engine.run(jobs, task, folder=True, overwrite=overwrite)
    log_summary(summary)
    if not engine.local:
        from vidtriplane.runners.ray import log_workers

        log_workers(summary)
    if not summary.ok:
        path = Path(dst) / FOLDER_REPORT_NAME
        atomic_write_text(path, json.dumps(summary.to_dict(), indent=1, default=str) + "\n")
        log.info("folder report: %s", path)
        sys.exit(1)
