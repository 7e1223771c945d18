"""The preprocess task: what a runner does for one ``vidtriplane preprocess`` job (one dataset folder).

Picklable (config + options), so the local and the Ray runner run the same thing: ``load()`` once per
process or worker, ``run(job, models)`` per input, which writes the dataset folder under a hidden
temporary name (``.NAME.partial``) and renames it when complete, so an existing folder is a finished one.
"""
from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

from vidtriplane.config.media import ReaderConfig
from vidtriplane.config.preprocess import PreprocessConfig
from vidtriplane.runners.jobs import Job


class PreprocessModels:
    """The preprocessing models, loaded on first use and kept: the face model only when a video's geometry
    is not in the pose cache."""

    def __init__(self, cfg: PreprocessConfig) -> None:
        self.cfg = cfg
        self._loaded = None
        self._with_face = False

    def get(self, *, geometry: bool):
        """``stages.preprocess.PreprocessModels`` with (``geometry=True``) or without the face model."""
        if self._loaded is None or (geometry and not self._with_face):
            from vidtriplane.stages import preprocess

            self._loaded = preprocess.load_models(self.cfg, geometry=geometry)
            self._with_face = geometry
        return self._loaded


@dataclass(frozen=True)
class PreprocessTask:
    """Preprocess one video (or image folder, or stdin) per job into a dataset folder."""

    cfg: PreprocessConfig
    mirror: bool = False
    """Also write mirrored crops with mirrored labels."""
    batch_size: int = 16
    cache_dir: Optional[str] = None
    """Pose cache folder (None: the default one)."""
    use_cache: bool = True
    reader: ReaderConfig = ReaderConfig(audio=False)
    """How to open the input (``--input-format``, rawvideo geometry)."""

    def outputs(self, target: str) -> list[str]:
        """The dataset folder (it appears under its name only when complete)."""
        return [target]

    def load(self) -> PreprocessModels:
        return PreprocessModels(self.cfg)

    def run(self, job: Job, models: PreprocessModels,
            on_frames: Optional[Callable[[int], None]] = None) -> dict:
        from vidtriplane.pipeline.dataset import run

        out = Path(job.target)
        partial = out.with_name(f".{out.name}.partial")
        if partial.exists():
            shutil.rmtree(partial)
        try:
            report = run(job.source, partial, self.cfg, mirror=self.mirror, batch_size=self.batch_size,
                         cache_dir=self.cache_dir, use_cache=self.use_cache, reader_cfg=self.reader,
                         models=models, final_dir=out)
            if out.exists():
                shutil.rmtree(out)
            partial.rename(out)
        finally:
            if partial.exists():
                shutil.rmtree(partial, ignore_errors=True)
        if on_frames is not None:
            on_frames(report.get("frames", 0))
        return report
