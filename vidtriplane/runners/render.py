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
from typing import Optional

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
            raise WeightsUnavailable(f"{exc}\n(To try the pipeline without the official weights: --weights "
                                     "generated, whose output is meaningless.)") from None
        return load_models(self.cfg, weights)

    def run(self, job: Job, models) -> dict:
        from vidtriplane.pipeline import render_video

        report = render_video(job.source, job.target, models, self.cfg, progress=self.progress)
        if models.generated:
            log.warning("%s was rendered with GENERATED weights: not a real reconstruction", job.target)
        log.info("%s: %d frames in %.1f s (%.2f frames/s)", job.target, report.frames, report.seconds, report.fps)
        if job.target == "-":
            if self.save_report:
                print(report.to_json(), file=sys.stderr)
        else:
            if self.save_config:
                sidecar(job.target, "config.yaml").write_text(dump(self.cfg))
            if self.save_report:
                sidecar(job.target, "report.json").write_text(report.to_json() + "\n")
        return report.to_dict()


def folder_report_path(folder: Optional[str | Path]) -> Optional[Path]:
    return None if folder is None else Path(folder) / FOLDER_REPORT_NAME
