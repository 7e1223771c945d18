"""One long video as several work units: the plan, its work folder, and stitching the pieces into one file.

    key = plan_key(job, cfg, segment_frames)        # the driver: what a finished piece was made for
    plan = load_plan(work_folder(job.target), key)  # None: plan it on a worker (runners/segment_render.py)
    ...                                              # workers render each Segment into a lossless file
    stitch(job, plan, cfg)                           # the driver: one output, encoded like a local run

Identical to a local run by construction:

* **frames**: segments are cut at frame numbers that are multiples of the batch size, so every model
  batch holds the same frames as in a whole-video run; the segment reader seeks to the keyframe before
  its first frame and drops frames by timestamp, and checks that it got exactly the frames the container
  index promised (:class:`SegmentMismatch` otherwise);
* **geometry** (face tracking and smoothing run frame after frame): one sequential pass over the whole
  video before the segments (stored in the work folder and, as usual, in the pose cache); segments only
  look their frames' geometry up;
* **matting** with carried alphas (``matting.every`` K > 1): keys fall on frame numbers that are multiples
  of K and segments start at multiples of K too, so a segment's first crop is a key in both runs;
* **time**: every segment is given the video's first timestamp, so ``seconds`` (moving cameras) match;
* **encoding**: segments are written losslessly (FFV1 in nut); :func:`stitch` decodes them in order and
  encodes the output once, with the run's writer settings, the input's timestamps and its audio packets
  copied through, exactly as ``render_video`` writes them.

The work folder ``.<output stem>.ray/`` lies beside the output (on the storage every worker shares): the
plan (``plan.json``), the geometry (``geometry.npz``) and the finished segments (``seg-NNNNN*.nut`` with a
``seg-NNNNN.json`` written last). A rerun with the same input and config reuses them; another config or a
changed input starts again. The folder is removed once the output is complete.
"""
from __future__ import annotations

import hashlib
import json
import logging
import math
import shutil
import threading
import time
from dataclasses import asdict, dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, Iterator, Optional

import numpy as np

from vidtriplane.config.media import WriterConfig
from vidtriplane.errors import VidtriplaneError
from vidtriplane.runners.jobs import Job

log = logging.getLogger(__name__)

#: how segments are stored until stitched: lossless RGB (FFV1 keeps every 8-bit RGB value exactly)
LOSSLESS = WriterConfig(format="nut", codec="ffv1", pix_fmt="bgr0", audio=False)
PLAN_NAME = "plan.json"
GEOMETRY_NAME = "geometry.npz"


class SegmentMismatch(VidtriplaneError):
    """The decoded frames of a video do not match its container index, so it cannot be cut exactly."""


class StitchStopped(VidtriplaneError):
    """The run was interrupted while the segments were being stitched."""


@dataclass(frozen=True)
class Plan:
    """How one video is cut: written by the planning unit, read by the segments and the stitcher."""

    key: str
    """What the pieces were made for (input file state + config + segment length), see :func:`plan_key`."""
    source: str
    batch_size: int
    """Frames per model batch in every segment (segment starts are multiples of it)."""
    segments: tuple[tuple[int, int], ...]
    """(first frame, end frame) of each segment."""
    pts: tuple[int, ...]
    """Every frame's timestamp (time-base units), from the container index, checked while decoding."""
    fps: str
    time_base: str
    shapes: dict[str, tuple[int, int]]
    """{output name: (width, height)} of the composed frames."""
    geometry: bool
    """Whether ``geometry.npz`` holds the whole video's preprocessing geometry."""

    @property
    def n_frames(self) -> int:
        return len(self.pts)

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> "Plan":
        data = json.loads(text)
        data["segments"] = tuple(tuple(s) for s in data["segments"])
        data["pts"] = tuple(int(p) for p in data["pts"])
        data["shapes"] = {k: tuple(v) for k, v in data["shapes"].items()}
        return cls(**data)


# --------------------------------------------------------------------------------------------------
# planning (no decoding: cheap enough for the driver)


def work_folder(target: str | Path) -> Path:
    """``out/clip.mp4`` -> ``out/.clip.ray``: where the pieces of one output wait to be stitched."""
    path = Path(target)
    return path.with_name(f".{path.stem}.ray")


def plan_key(job: Job, cfg_text: str, segment_frames: Optional[int]) -> str:
    """A digest of what the pieces depend on: the input file (path, size, mtime), the config, the length."""
    stat = Path(job.source).stat()
    data = [str(Path(job.source).resolve()), stat.st_size, stat.st_mtime_ns, cfg_text, segment_frames]
    return hashlib.sha256(json.dumps(data).encode()).hexdigest()[:32]


def load_plan(folder: Path, key: str) -> Optional[Plan]:
    """The plan in ``folder`` when it was made for ``key``; a folder made for anything else is emptied."""
    path = folder / PLAN_NAME
    if path.exists():
        try:
            plan = Plan.from_json(path.read_text())
            if plan.key == key:
                return plan
        except (ValueError, TypeError, KeyError):
            pass
        log.info("%s was made for another input or config; starting its segments again", folder)
    if folder.exists():
        shutil.rmtree(folder)
    return None


def frame_times(source: str | Path) -> Optional[list[int]]:
    """Every frame's timestamp from the container index (demuxed, not decoded), in display order.

    None when the video cannot be cut by timestamp: a packet without one, or two frames with the same one.
    """
    import av

    with av.open(str(source)) as container:
        stream = container.streams.video[0]
        pts = []
        for packet in container.demux(stream):
            if not packet.size or packet.is_discard:
                continue
            if packet.pts is None:
                return None
            pts.append(int(packet.pts))
    pts.sort()
    if any(b <= a for a, b in zip(pts, pts[1:])):
        return None
    return pts


def cut(n_frames: int, length: int, multiple: int) -> tuple[tuple[int, int], ...]:
    """Segments of ``length`` frames rounded up to a multiple of ``multiple`` (the batch size, and matting's
    key period when it carries alphas); the last one is shorter."""
    length = max(1, math.ceil(max(1, length) / multiple)) * multiple
    return tuple((s, min(n_frames, s + length)) for s in range(0, n_frames, length))


def auto_length(n_frames: int, workers: int) -> int:
    """Two segments per worker (a worker that finishes early takes another); 0 = not worth cutting."""
    return 0 if workers < 2 else math.ceil(n_frames / (2 * workers))


def segment_name(index: int, output: str = "") -> str:
    return f"seg-{index:05d}" + (f"_{output}" if output else "")


def segment_files(folder: Path, index: int, outputs) -> dict[str, Path]:
    """{output name: lossless file} of one segment."""
    return {name: folder / f"{segment_name(index, name)}.nut" for name in outputs}


def finished_segment(folder: Path, index: int) -> Optional[dict]:
    """The report of a segment whose files are complete (its .json is written last), else None."""
    path = folder / f"{segment_name(index)}.json"
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


# --------------------------------------------------------------------------------------------------
# stitching (the driver)


def _decoded(path: Path, count: int, chunk: int) -> Iterator[np.ndarray]:
    """The frames of a lossless segment file, ``chunk`` at a time; exactly ``count`` of them."""
    import av

    seen = 0
    frames: list[np.ndarray] = []
    with av.open(str(path)) as container:
        for frame in container.decode(video=0):
            frames.append(frame.to_ndarray(format="rgb24"))
            seen += 1
            if len(frames) == chunk:
                yield np.stack(frames)
                frames = []
    if frames:
        yield np.stack(frames)
    if seen != count:
        raise SegmentMismatch(f"{path} holds {seen} frames, expected {count}; delete it and run again")


def _audio_source(source: str, cfg) -> tuple[Any, Any, Iterator]:
    """(container, audio stream, packets) of the input, as the reader hands them out (None: no audio)."""
    import av

    if not cfg.input.audio:
        return None, None, iter(())
    container = av.open(source)
    if not container.streams.audio:
        container.close()
        return None, None, iter(())
    stream = container.streams.audio[0]
    packets = (p for p in container.demux(stream) if p.dts is not None and p.size)
    return container, stream, packets


def stitch(job: Job, plan: Plan, cfg, *, folder: Optional[Path] = None, stop: Optional[threading.Event] = None
           ) -> dict:
    """Encode the segments of ``job`` into its output(s) in order, with the input's audio; returns timings.

    The writers get the same frames, timestamps, size, rate, time base and settings as ``render_video``
    gives them, so the output decodes to the same frames as a local run's. Setting ``stop`` abandons the
    output (:class:`StitchStopped`; nothing is left under its name).
    """
    from vidtriplane.io.writer import VideoWriter
    from vidtriplane.pipeline.outputs import planned_outputs

    start = time.perf_counter()
    folder = folder or work_folder(job.target)
    targets = planned_outputs(job.target, cfg)
    container, audio, packets = _audio_source(job.source, cfg)
    time_base = Fraction(plan.time_base)
    writers: dict[str, VideoWriter] = {}
    pending: Optional[Any] = None
    try:
        for name, (w, h) in plan.shapes.items():
            writers[name] = VideoWriter(targets[name], width=w, height=h, fps=Fraction(plan.fps),
                                        time_base=time_base, audio_stream=audio, cfg=cfg.output)
        for index, (s, e) in enumerate(plan.segments):
            pts = plan.pts[s:e]
            for name, path in segment_files(folder, index, writers).items():
                done = 0
                for frames in _decoded(path, e - s, plan.batch_size):
                    if stop is not None and stop.is_set():
                        raise StitchStopped(f"stitching {job.target} was stopped")
                    writers[name].write(frames, pts[done : done + len(frames)])
                    done += len(frames)
            # the audio up to this segment's last frame (the writers interleave it by time)
            until = pts[-1] * time_base
            due = []
            while True:
                if pending is None:
                    pending = next(packets, None)
                if pending is None:
                    break
                t = pending.pts if pending.pts is not None else pending.dts
                if t * pending.time_base > until:
                    break
                due.append(pending)
                pending = None
            for writer in writers.values():
                writer.write_audio(due)
        rest = ([pending] if pending is not None else []) + list(packets)
        for writer in writers.values():
            writer.write_audio(rest)
            writer.close(ok=True)
    finally:
        for writer in writers.values():
            writer.close(ok=False)
        if container is not None:
            container.close()
    return {"stitch_seconds": round(time.perf_counter() - start, 3)}


def merge_reports(plan: Plan, segments: list[dict], outputs: dict[str, str], source: str) -> dict:
    """One video's report (the fields of ``RunReport``) from its segments' reports."""
    def total(key: str) -> Optional[int]:
        values = [r[key] for r in segments if r.get(key) is not None]
        return sum(values) if values else None

    stages: dict[str, float] = {}
    for r in segments:
        for k, v in r.get("stage_seconds", {}).items():
            stages[k] = round(stages.get(k, 0.0) + v, 3)
    first = segments[0] if segments else {}
    return {"input": source, "outputs": outputs, "frames": total("frames") or 0, "faces_found": total("faces_found"),
            "held": total("held"), "fallback": total("fallback"), "batch_size": plan.batch_size,
            "device": first.get("device", ""), "weights": first.get("weights", ""), "stage_seconds": stages,
            "repaired_timestamps": 0, "segments": len(plan.segments)}
