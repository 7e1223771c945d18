"""Running planned ``render`` jobs: load the models once, skip finished outputs, keep going on errors.

Kept apart from ``render.py`` so that ``vidtriplane render --help`` imports nothing heavy.
"""
from __future__ import annotations

import logging
import sys
from pathlib import Path

import click

from vidtriplane.config import dump
from vidtriplane.io.reader import InputError
from vidtriplane.io.writer import OutputError
from vidtriplane.pipeline import OutOfMemory, PipelineError, RunReport, load_models, output_targets, render_video
from vidtriplane.config.render import PipelineConfig
from vidtriplane.stages.composite import output_names

log = logging.getLogger("vidtriplane")

FOLDER_CONFIG_NAME = "vidtriplane-render.yaml"

#: errors that fail one video of a folder run and are reported in one line (no traceback);
#: OSError covers a full disk and FFmpeg's own I/O errors
JOB_ERRORS = (InputError, OutputError, PipelineError, OutOfMemory, ValueError, OSError)


def _stdout_closed() -> click.ClickException:
    """The process reading our stdout went away: silence stdout and say so on stderr."""
    import os

    try:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    except (OSError, ValueError):
        pass
    return click.ClickException("the program reading stdout closed the pipe before the video was complete")


def _expected_outputs(dst: str, cfg: PipelineConfig) -> list[Path]:
    """The files a job will write (several with one output per view)."""
    if dst == "-":
        return []
    return [Path(p) for p in output_targets(dst, output_names(cfg.composite, cfg.render)).values()]


def _save_sidecars(dst: str, cfg: PipelineConfig, report: RunReport, *, want_report: bool, folder: bool) -> None:
    if dst == "-":
        if want_report:
            print(report.to_json(), file=sys.stderr)
        return
    out = Path(dst)
    if not folder:
        out.with_name(f"{out.stem}.config.yaml").write_text(dump(cfg))
    if want_report:
        out.with_name(f"{out.stem}.report.json").write_text(report.to_json() + "\n")


def _load(cfg: PipelineConfig):
    from vidtriplane.checkpoints import CheckpointError
    from vidtriplane.weights import DownloadError, UnknownWeights, WeightsMissing

    try:
        return load_models(cfg)
    except (WeightsMissing, UnknownWeights, DownloadError) as exc:
        raise click.ClickException(
            f"{exc}\n(To try the pipeline without the official weights: --weights generated, whose output "
            "is meaningless.)") from None
    except (PipelineError, CheckpointError) as exc:
        raise click.ClickException(str(exc)) from None


def run_jobs(jobs: list[tuple[str, str]], cfg: PipelineConfig, *, out_folder: Path | None, overwrite: bool,
             report: bool, progress: bool) -> list[tuple[str, str]]:
    """Render every (input, output) job; returns [(input, reason)] of the failed ones.

    ``out_folder`` is set for a folder run: finished outputs are skipped, a failing video does not stop
    the others, the resolved config is saved once in the folder and a summary is logged.
    """
    folder = out_folder is not None
    todo = []
    skipped = 0
    for src, dst in jobs:
        existing = [p for p in _expected_outputs(dst, cfg) if p.exists()]
        if existing and not overwrite:
            if not folder:
                raise click.ClickException(f"output {existing[0]} exists; pass --overwrite to replace it")
            if len(existing) == len(_expected_outputs(dst, cfg)):
                skipped += 1
                continue
        todo.append((src, dst))
    if skipped:
        log.info("%d of %d outputs are already finished; skipping them (--overwrite redoes them)", skipped, len(jobs))
    if not todo:
        log.info("nothing to do")
        return []
    models = _load(cfg)
    if out_folder is not None:
        out_folder.mkdir(parents=True, exist_ok=True)
        (out_folder / FOLDER_CONFIG_NAME).write_text(dump(cfg))
    failed: list[tuple[str, str]] = []
    for i, (src, dst) in enumerate(todo):
        if folder:
            log.info("[%d/%d] %s -> %s", i + 1, len(todo), src, dst)
        try:
            result = render_video(src, dst, models, cfg, progress=progress)
        except JOB_ERRORS as exc:
            if isinstance(exc, BrokenPipeError) and dst == "-":
                raise _stdout_closed() from None
            if not folder:
                raise click.ClickException(str(exc)) from None
            log.error("%s failed: %s", src, exc)
            failed.append((src, str(exc)))
            continue
        if models.generated:
            log.warning("%s was rendered with GENERATED weights: not a real reconstruction", dst)
        _save_sidecars(dst, cfg, result, want_report=report, folder=folder)
        log.info("%s: %d frames in %.1f s (%.2f frames/s)", dst, result.frames, result.seconds, result.fps)
    if folder:
        done = len(todo) - len(failed)
        log.warning("summary: %d rendered, %d skipped (finished earlier), %d failed", done, skipped, len(failed)) \
            if failed else log.info("summary: %d rendered, %d skipped (finished earlier), 0 failed", done, skipped)
        for src, reason in failed:
            log.warning("  failed: %s: %s", src, reason)
    return failed

