"""The worker's side of a video cut into segments (see :mod:`vidtriplane.runners.segments`).

    plan = plan_video(job, cfg, models, key=..., segment_frames=None, workers=4)   # once per video
    report = render_segment(job, cfg, models, plan, index)                          # per segment

``plan_video`` fixes the batch size (as a local run on this worker would choose it), reads the frame
timestamps from the container index, cuts the video at multiples of the batch size and, for pipelines
with face preprocessing, runs the geometry over the whole video in order (the pose cache is used and
filled as in a local run). ``render_segment`` renders frames [start, end) through the usual stage chain
into lossless files, with the whole video's frame numbers and first timestamp.
"""
from __future__ import annotations

import json
import logging
import math
import os
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Callable, Iterator, Optional

import numpy as np

from vidtriplane.config.base import dump
from vidtriplane.config.render import PipelineConfig
from vidtriplane.runners.jobs import Job
from vidtriplane.runners.segments import (GEOMETRY_NAME, LOSSLESS, PLAN_NAME, Plan, SegmentMismatch, auto_length,
                                          cut, frame_times, segment_files, segment_name, work_folder)
from vidtriplane.types import FrameBatch

log = logging.getLogger(__name__)


def _atomic_save(path: Path, write: Callable[[str], None], suffix: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=suffix)
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)


def _mismatch(source: str, detail: str) -> SegmentMismatch:
    return SegmentMismatch(f"{source} cannot be cut into segments exactly ({detail}); render it whole with "
                           "--segment-frames 0")


def geometry_pass(source: str, cfg: PipelineConfig, models, batch_size: int, pts: list[int],
                  on_frames: Optional[Callable[[int], None]] = None) -> dict[str, np.ndarray]:
    """The preprocessing geometry of every frame, as a local run's ``Prepare`` gets it for this file.

    A pose cache entry for this input and these settings is used as is. Otherwise the offline smoother
    (``preprocess.smooth.mode`` auto/offline) runs its pass over the whole video
    (:func:`vidtriplane.pipeline.geometry.video_geometry`), and the causal one goes batch by batch in
    order, as the stream would; either is stored in the pose cache, as a local run does.
    """
    from vidtriplane.cache import PoseCache, concat_geometry, hash_file
    from vidtriplane.io.reader import open_video
    from vidtriplane.pipeline.geometry import video_geometry
    from vidtriplane.stages import preprocess, smooth

    key = None
    if cfg.runtime.pose_cache:
        key = (hash_file(source), cfg.preprocess.geometry_settings())
        cached = PoseCache().load(*key)
        if cached is not None and len(cached["labels"]) == len(pts):
            log.info("pose cache hit for %s: the geometry pass is skipped", source)
            return cached
    if smooth.resolve_mode(cfg.preprocess.smooth, source) == "offline":
        geometry, report = video_geometry(source, cfg.preprocess, models.preprocess, cfg.input)
        if report["frames"] != len(pts):
            raise _mismatch(source, f"{report['frames']} decoded frames, {len(pts)} in its index")
    else:
        state = preprocess.PreprocessState()
        parts, seen = [], []
        with open_video(source, replace(cfg.input, audio=False)) as reader:
            for batch in reader.batches(batch_size):
                geo, state = preprocess.geometry(batch, state, models.preprocess, cfg.preprocess)
                parts.append(geo)
                seen.extend(int(p) for p in batch.pts)
        if seen != list(pts):
            raise _mismatch(source, f"{len(seen)} decoded frame timestamps differ from the {len(pts)} of its index")
        geometry = concat_geometry(parts)
    if on_frames is not None:
        on_frames(len(pts))
    if key is not None:
        PoseCache().save(*key, geometry, source=source)
    return geometry


def matting_period(cfg: PipelineConfig, models) -> int:
    """Frames between matting's key crops (1 without matting): segments start on a key, as in a whole run."""
    from vidtriplane.stages import matting

    if "preprocess" not in cfg.stages or not cfg.preprocess.matting.enabled:
        return 1
    return matting.period(models.preprocess.matting, cfg.preprocess.matting)


def plan_video(job: Job, cfg: PipelineConfig, models, *, key: str, segment_frames: Optional[int], workers: int,
               on_frames: Optional[Callable[[int], None]] = None) -> Optional[Plan]:
    """Cut ``job``'s video into segments and write the plan (and geometry); None: render it whole."""
    from vidtriplane.io.reader import open_video
    from vidtriplane.pipeline.build import choose_batch_size
    from vidtriplane.stages import composite
    from vidtriplane.weights.store import atomic_write_text

    batch_size = choose_batch_size(cfg, models.device)
    pts = frame_times(job.source)
    if pts is None:
        log.warning("%s has frames without (or with repeated) timestamps: rendering it whole", job.source)
        return None
    length = auto_length(len(pts), workers) if segment_frames is None else segment_frames
    multiple = math.lcm(batch_size, matting_period(cfg, models))  # segments start on a batch and a matting key
    segments = cut(len(pts), length, multiple) if length else ((0, len(pts)),)
    if len(segments) < 2:
        return None
    with open_video(job.source, replace(cfg.input, audio=False)) as reader:
        meta = reader.meta
    folder = work_folder(job.target)
    folder.mkdir(parents=True, exist_ok=True)
    geometry = "preprocess" in cfg.stages
    if geometry:
        arrays = geometry_pass(job.source, cfg, models, batch_size, pts, on_frames)
        _atomic_save(folder / GEOMETRY_NAME, lambda tmp: np.savez(tmp, **arrays), ".npz")
    shapes = {name: tuple(size) for name, size in composite.output_shapes(meta, cfg).items()}
    plan = Plan(key=key, source=job.source, batch_size=batch_size, segments=segments, pts=tuple(pts),
                fps=str(meta.fps), time_base=str(meta.time_base), shapes=shapes, geometry=geometry)
    (folder / "config.yaml").write_text(dump(cfg))
    atomic_write_text(folder / PLAN_NAME, plan.to_json())  # written last: the plan is complete
    log.info("%s: %d frames in %d segments of up to %d frames", job.source, len(pts), len(segments),
             segments[0][1] - segments[0][0])
    return plan


def segment_batches(reader, start: int, pts: tuple[int, ...], size: int) -> Iterator[FrameBatch]:
    """Batches of ``size`` frames numbered from ``start`` whose timestamps must be ``pts`` (checked).

    Seeks to the keyframe before the first frame (a segment after the first) and drops earlier frames.
    """
    if start > 0:
        reader.seek(pts[0])
    frames: list[np.ndarray] = []
    got = 0
    for batch in reader.batches(size):
        for p, image in zip(batch.pts.tolist(), batch.frames):
            if got == 0 and p < pts[0]:
                continue  # decoded from the keyframe before the segment
            if got == len(pts):
                return
            if p != pts[got]:
                raise _mismatch(reader.source, f"frame {start + got} has timestamp {p}, its index says {pts[got]}")
            frames.append(image)
            got += 1
            if len(frames) == size or got == len(pts):
                first = start + got - len(frames)
                index = np.arange(first, start + got, dtype=np.int64)
                yield FrameBatch(meta=batch.meta, index=index, pts=np.asarray(pts[first - start : got], np.int64),
                                 frames=np.stack(frames))
                frames = []
    if got < len(pts):
        raise _mismatch(reader.source, f"decoding gave {got} of the {len(pts)} frames from {start} on")


class _CachedPrepare:
    """The prepare step of a segment: crops (and matting) from the whole video's stored geometry."""

    def __init__(self, cfg: PipelineConfig, models, geometry: dict[str, np.ndarray]) -> None:
        from vidtriplane.stages import preprocess

        self._runner = preprocess.Preprocessor(models.preprocess, cfg.preprocess, cached=geometry)

    def __call__(self, batch: FrameBatch) -> FrameBatch:
        return self._runner(batch)


def render_segment(job: Job, cfg: PipelineConfig, models, plan: Plan, index: int,
                   on_frames: Optional[Callable[[int], None]] = None) -> dict:
    """Render segment ``index`` of ``plan`` into its lossless files; returns its report (also saved)."""
    from vidtriplane.io.reader import open_video
    from vidtriplane.io.writer import VideoWriter
    from vidtriplane.pipeline import stream
    from vidtriplane.pipeline.build import Chain, Infer, Prepare
    from vidtriplane.pipeline.report import RunReport, StageClock
    from vidtriplane.stages import composite
    from vidtriplane.weights.store import atomic_write_text

    t0 = time.perf_counter()
    folder = work_folder(job.target)
    start, end = plan.segments[index]
    pts = plan.pts[start:end]
    if plan.geometry:
        with np.load(folder / GEOMETRY_NAME, allow_pickle=False) as data:
            prepare = _CachedPrepare(cfg, models, {k: data[k] for k in data.files})
    else:  # the aligned pipeline: per-frame crops, no state
        prepare = Prepare(job.source, replace(cfg, runtime=replace(cfg.runtime, pose_cache=False)), models)
    chain = Chain(prepare=prepare, infer=Infer(models, cfg, plan.batch_size),
                  compose=lambda batch: composite.apply(batch, cfg))
    clock = StageClock()
    report = RunReport(input=job.source, outputs={}, batch_size=plan.batch_size, device=str(models.device),
                       weights="generated" if models.generated else "loaded")
    writers: dict[str, VideoWriter] = {}
    with open_video(job.source, replace(cfg.input, audio=False)) as reader:
        try:
            for name, path in segment_files(folder, index, plan.shapes).items():
                w, h = plan.shapes[name]
                writers[name] = VideoWriter(path, width=w, height=h, fps=reader.meta.fps,
                                            time_base=reader.meta.time_base, cfg=LOSSLESS)

            def write(batch: FrameBatch) -> None:
                for name, writer in writers.items():
                    writer.write(batch.outputs[name], batch.pts)
                if on_frames is not None:
                    on_frames(len(batch))

            stream.run(segment_batches(reader, start, pts, plan.batch_size), lambda: [], chain, write, lambda _: None,
                       queue_size=cfg.runtime.queue_size, clock=clock, report=report, start_pts=plan.pts[0])
            for writer in writers.values():
                writer.close(ok=True)
        finally:
            for writer in writers.values():
                writer.close(ok=False)
    report.seconds = time.perf_counter() - t0
    report.fps = report.frames / report.seconds if report.seconds else 0.0
    report.stage_seconds = clock.rounded()
    data = {**report.to_dict(), "segment": index, "start": start, "end": end}
    atomic_write_text(folder / f"{segment_name(index)}.json", json.dumps(data))
    return data
