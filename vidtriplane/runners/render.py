"""The render task: what a runner does for one ``vidtriplane render`` job.

It is a plain, picklable description (config + options), so the local runner and the Ray runner run the
same thing: ``load()`` once per process/worker (weights resolved from the registry here, in the command
layer, never by a stage), ``run(job, models)`` per video, which also writes the job's sidecar files.
"""
from __future__ import annotations

import logging
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

from vidtriplane.config.base import dump
from vidtriplane.config.render import ModelConfig, PipelineConfig
from vidtriplane.errors import VidtriplaneError
from vidtriplane.runners.jobs import Job

log = logging.getLogger(__name__)

FOLDER_CONFIG_NAME = "vidtriplane-render.yaml"
FOLDER_REPORT_NAME = "vidtriplane-render.report.json"


class WeightsUnavailable(VidtriplaneError):
    """The model's weight files could not be had (the message says how to get them)."""


def sidecar(target: str | Path, kind: str) -> Path:
    """``out.mp4`` -> ``out.config.yaml`` / ``out.report.json`` beside it."""
    path = Path(target)
    return path.with_name(f"{path.stem}.{kind}")


def resolve_weight_files(cfg: ModelConfig):
    """The files ``cfg`` needs: a checkpoint path as given, or registry entries (downloaded on first use
    unless offline; ``WeightsMissing`` says how to import them). None for generated weights."""
    from vidtriplane.pipeline import WeightFiles

    if cfg.weights == "generated":
        return None
    from vidtriplane.weights import resolve

    if cfg.weights == "registry":
        checkpoint = resolve(cfg.checkpoint or f"triplanenet-v{cfg.version}")
    else:
        checkpoint = Path(cfg.weights)
        # (train-loop) a `vidtriplane train` checkpoint carries its generator and latent_avg: no EG3D file
        from vidtriplane.train.checkpoint import is_self_contained

        if is_self_contained(checkpoint):
            return WeightFiles(checkpoint=checkpoint, eg3d=None)
    return WeightFiles(checkpoint=checkpoint, eg3d=resolve(cfg.eg3d) if cfg.eg3d else None)


@dataclass(frozen=True)
class RenderTask:
    """Render one video per job with ``cfg``."""

    cfg: PipelineConfig
    save_report: bool = False
    """Write ``<output stem>.report.json`` beside each output (stderr for stdout)."""
    save_config: bool = True
    """Write ``<output stem>.config.yaml`` beside a single output (folder runs save one for the folder)."""
    progress: bool = True

    def outputs(self, target: str) -> list[str]:
        from vidtriplane.pipeline.outputs import planned_outputs

        return list(planned_outputs(target, self.cfg).values())

    def load(self):
        from vidtriplane.pipeline import load_models

        try:
            weights = resolve_weight_files(self.cfg.model)
        except VidtriplaneError as exc:  # missing / unknown / undownloadable weights
            raise WeightsUnavailable(f"{exc}\n(To try the pipeline without the official weights: --config "
                                     "generated-tiny, a tiny model with random weights that runs in seconds on a "
                                     "CPU; its output is meaningless.)") from None
        return load_models(self.cfg, weights)

    def run(self, job: Job, models, on_frames: Optional[Callable[[int], None]] = None) -> dict:
        from vidtriplane.pipeline import render_video

        report = render_video(job.source, job.target, models, self.cfg, progress=self.progress, on_frames=on_frames)
        if models.generated:
            log.warning("%s was rendered with GENERATED weights: not a real reconstruction", job.target)
        log.info("%s: %d frames in %.1f s (%.2f frames/s)", job.target, report.frames, report.seconds, report.fps)
        self.write_sidecars(job, report.to_json())
        return report.to_dict()

    def write_sidecars(self, job: Job, report_json: str) -> None:
        """The config and (with ``save_report``) the report beside the output; the report on stderr for -."""
        if job.target == "-":
            if self.save_report:
                print(report_json, file=sys.stderr)
        else:
            if self.save_config:
                sidecar(job.target, "config.yaml").write_text(dump(self.cfg))
            if self.save_report:
                sidecar(job.target, "report.json").write_text(report_json + "\n")

    # one long video in segments (runners/segments.py), for runners that spread a video over workers

    def plan_segments(self, job: Job, models, *, key: str, segment_frames: Optional[int], workers: int,
                      on_frames: Optional[Callable[[int], None]] = None):
        """Cut ``job`` into segments on a worker (a :class:`~vidtriplane.runners.segments.Plan`, or None)."""
        from vidtriplane.runners.segment_render import plan_video

        return plan_video(job, self.cfg, models, key=key, segment_frames=segment_frames, workers=workers,
                          on_frames=on_frames)

    def render_segment(self, job: Job, models, plan, index: int,
                       on_frames: Optional[Callable[[int], None]] = None) -> dict:
        """Render one segment of ``plan`` into its lossless files; returns its report."""
        from vidtriplane.runners.segment_render import render_segment

        return render_segment(job, self.cfg, models, plan, index, on_frames)

    def stitch(self, job: Job, plan, segment_reports: list[dict], extra: Optional[dict] = None,
               stop=None) -> dict:
        """Encode the finished segments into the job's output(s), write its sidecars (the merged report plus
        ``extra``) and remove the segments; returns the report. ``stop`` (an Event) abandons it."""
        import json
        import shutil

        from vidtriplane.pipeline.outputs import planned_outputs
        from vidtriplane.runners.segments import merge_reports, stitch, work_folder

        report = merge_reports(plan, segment_reports, planned_outputs(job.target, self.cfg), job.source)
        report.update(stitch(job, plan, self.cfg, stop=stop))
        report.update(extra or {})
        self.write_sidecars(job, json.dumps(report, indent=2, default=str))
        shutil.rmtree(work_folder(job.target), ignore_errors=True)
        return report


def folder_report_path(folder: Optional[str | Path]) -> Optional[Path]:
    return None if folder is None else Path(folder) / FOLDER_REPORT_NAME
