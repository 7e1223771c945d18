"""The render pipeline: the only place stages meet.

    models = load_models(cfg)                    # once per process (folders reuse them)
    report = render_video("in.mp4", "out.mp4", models, cfg)

Data flows one way, streamed in batches through bounded queues so memory does not grow with the
video's length:

    decode (thread) -> preprocess | aligned (thread) -> invert + render on the device (this thread)
    -> composite (this thread) -> encode + audio remux (thread)

The device batch size comes from free GPU memory (CUDA) or ``runtime.cpu_batch_size``; an out-of-memory
error halves it and retries the same frames, down to 1. Every input frame gives exactly one output
frame with the input's timestamp; audio packets are copied through unchanged.
"""
from __future__ import annotations

import json
import logging
import queue
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Callable, Optional

import numpy as np
import torch

from vidtriplane.io.reader import open_video
from vidtriplane.io.writer import VideoWriter
from vidtriplane.config.render import PipelineConfig
from vidtriplane.stages import aligned, composite, invert, render
from vidtriplane.types import FrameBatch

log = logging.getLogger(__name__)


class OutOfMemory(RuntimeError):
    """The device ran out of memory even with one frame per batch."""


class PipelineError(RuntimeError):
    """A request the pipeline cannot honour (message says what to change)."""


# --------------------------------------------------------------------------------------------------
# models


@dataclass
class Models:
    """Everything loaded once and reused for every video of a run."""

    net: torch.nn.Module
    device: torch.device
    generated: bool
    preprocess: Optional[Any] = None
    """The preprocess stage's loaded models (face detector, matting), when the pipeline has it."""


def load_models(cfg: PipelineConfig) -> Models:
    """Build the inversion network (and the preprocessing models) on the configured device."""
    device = invert.resolve_device(cfg.runtime.device)
    if cfg.runtime.torch_threads:
        torch.set_num_threads(cfg.runtime.torch_threads)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = cfg.runtime.tf32
        torch.backends.cudnn.allow_tf32 = cfg.runtime.tf32
        torch.backends.cudnn.benchmark = True  # fixed frame shapes: let cuDNN pick its fastest kernels
    if device.type == "cpu":
        log.warning("running on the CPU: expect seconds per frame with the full-size model "
                    "(a CUDA GPU is 100x faster)")
    if cfg.model.version == 2 and cfg.invert.cttr_steps:
        raise PipelineError("CTTR (invert.cttr_steps) exists for TriPlaneNet v1 only; set it to 0 for v2")
    net = invert.load_inverter(cfg.model, device)
    pre = None
    if "preprocess" in cfg.stages:
        from vidtriplane.stages import preprocess

        pre = preprocess.load(cfg.preprocess)
    return Models(net=net, device=device, generated=cfg.model.weights == "generated", preprocess=pre)


def choose_batch_size(cfg: PipelineConfig, device: torch.device) -> int:
    """``runtime.batch_size``, or from free CUDA memory, or ``runtime.cpu_batch_size`` on the CPU."""
    rt = cfg.runtime
    if rt.batch_size:
        return rt.batch_size
    if device.type != "cuda":
        return rt.cpu_batch_size
    free, _ = torch.cuda.mem_get_info(device)
    samples = cfg.render.depth_samples + cfg.render.importance_samples
    scale = (samples / 192) * (cfg.render.neural_rendering_resolution / 128) ** 2
    per_frame = rt.gib_per_frame * max(scale, 0.25) * (1 + 0.5 * cfg.invert.cttr_steps) * 2**30
    return int(max(1, min(rt.max_batch_size, (0.85 * free) // per_frame)))


def _is_oom(exc: BaseException) -> bool:
    if isinstance(exc, torch.OutOfMemoryError):
        return True
    text = str(exc)
    return isinstance(exc, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text)


# --------------------------------------------------------------------------------------------------
# report


@dataclass
class RunReport:
    """What one video run did (written as JSON with ``--report``)."""

    input: str
    outputs: dict[str, str]
    frames: int = 0
    faces_found: Optional[int] = None
    held: Optional[int] = None
    fallback: Optional[int] = None
    """Frames that got the fallback crop/pose (no face for longer than preprocess.hold_frames)."""
    batch_size: int = 0
    device: str = ""
    weights: str = ""
    seconds: float = 0.0
    fps: float = 0.0
    stage_seconds: dict[str, float] = field(default_factory=dict)
    """Busy time per stage (stages overlap in threads, so these add up to more than ``seconds``)."""

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)


def output_targets(target: str | Path, names: list[str]) -> dict[str, str]:
    """{output name: path or "-"}; several outputs get ``<stem>_<view><suffix>`` names."""
    if names == [""]:
        return {"": str(target)}
    if str(target) == "-":
        raise PipelineError("one output per view cannot go to stdout; use composite.views_output=grid")
    path = Path(target)
    return {name: str(path.with_name(f"{path.stem}_{name}{path.suffix}")) for name in names}


# --------------------------------------------------------------------------------------------------
# streaming plumbing


class _End:
    """End-of-stream marker; carries the audio demuxed after the last video frame."""

    def __init__(self, audio: list) -> None:
        self.audio = audio


class _Channel:
    """A bounded queue whose put/get give up when the run is stopped (an error elsewhere)."""

    def __init__(self, size: int, stop: threading.Event) -> None:
        self._q: queue.Queue = queue.Queue(maxsize=size)
        self._stop = stop

    def put(self, item: Any) -> bool:
        while not self._stop.is_set():
            try:
                self._q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def get(self) -> Any:
        while not self._stop.is_set():
            try:
                return self._q.get(timeout=0.1)
            except queue.Empty:
                continue
        return None


class _Timer:
    """Thread-safe busy-time accumulator per stage."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._lock = threading.Lock()

    def add(self, stage: str, start: float) -> None:
        with self._lock:
            self.seconds[stage] = self.seconds.get(stage, 0.0) + time.perf_counter() - start


class _Prepare:
    """The preprocessing part of one video: ``aligned`` crops, or face preprocessing with the pose cache.

    With ``runtime.pose_cache`` and a file input, the per-frame geometry (landmarks, crops, labels) is
    looked up by the file's content hash + the geometry settings: a hit skips face detection and pose
    estimation (re-rendering another camera of the same video); a miss stores it when the video is done.
    """

    def __init__(self, source: str | Path, cfg: PipelineConfig, models: Models) -> None:
        self.cfg = cfg
        self._runner: Optional[Callable[[FrameBatch], FrameBatch]] = None
        self._cache_key: Optional[tuple[str, dict]] = None
        if "aligned" in cfg.stages:
            return
        from vidtriplane.stages import preprocess

        cached = None
        if cfg.runtime.pose_cache and str(source) != "-":
            from vidtriplane.cache import PoseCache, hash_file

            self._cache_key = (hash_file(source), cfg.preprocess.geometry_settings())
            cached = PoseCache().load(*self._cache_key)
            if cached is not None:
                log.info("pose cache hit for %s: skipping face detection and pose estimation", source)
        self._runner = preprocess.Preprocessor(models.preprocess, cfg.preprocess, cached=cached)
        self._cached = cached is not None

    def __call__(self, batch: FrameBatch) -> FrameBatch:
        if self._runner is None:
            return aligned.apply(batch, self.cfg.aligned)
        return self._runner(batch)

    def finish(self, source: str | Path) -> None:
        """Store the geometry of a completed video in the pose cache (a miss only)."""
        if self._cache_key is None or self._cached or not self._runner.geometry_parts:
            return
        from vidtriplane.cache import PoseCache, concat_geometry

        PoseCache().save(*self._cache_key, concat_geometry(self._runner.geometry_parts), source=str(source))


class _ModelStep:
    """Invert + render a batch in micro-batches, halving the micro-batch on out-of-memory errors."""

    def __init__(self, models: Models, cfg: PipelineConfig, batch_size: int) -> None:
        self.models, self.cfg, self.size = models, cfg, batch_size
        self.same_view = composite.needs_same_view(cfg.composite)
        self.kwargs = render.synthesis_kwargs(cfg.render)

    def __call__(self, batch: FrameBatch, times: np.ndarray, timer: _Timer) -> dict[str, np.ndarray]:
        n = len(batch)
        parts: list[dict[str, np.ndarray]] = []
        i = 0
        while i < n:
            j = min(n, i + self.size)
            try:
                start = time.perf_counter()
                inv = invert.invert(self.models.net, batch.crops[i:j], batch.labels[i:j], self.cfg.invert,
                                    self.models.device, **self.kwargs)
                timer.add("invert", start)
                start = time.perf_counter()
                parts.append(render.render_views(self.models.net, inv, times[i:j], self.cfg.render,
                                                 same_view=self.same_view))
                timer.add("render", start)
                del inv
            except Exception as exc:  # only out-of-memory is retried; everything else propagates
                if not _is_oom(exc):
                    raise
                inv = None
                if self.models.device.type == "cuda":
                    torch.cuda.empty_cache()
                if j - i == 1:
                    raise OutOfMemory(
                        "the device ran out of memory with one frame per batch; lower render.depth_samples / "
                        "render.importance_samples or render.neural_rendering_resolution, or use a larger GPU"
                    ) from None
                self.size = max(1, (j - i) // 2)
                log.warning("out of memory at batch size %d; retrying with %d", j - i, self.size)
                continue
            i = j
        return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


# --------------------------------------------------------------------------------------------------
# one video


def render_video(
    source: str | Path,
    target: str | Path,
    models: Models,
    cfg: PipelineConfig,
    *,
    progress: bool = True,
    stdin: BinaryIO | None = None,
    stdout: BinaryIO | None = None,
) -> RunReport:
    """Render one video ``source`` (path or "-") into ``target`` (path or "-"); see the module docstring.

    File outputs are complete and renamed into place only when this returns; on any error no output
    file is left behind. Raises ``InputError``, ``OutputError``, ``PipelineError`` or ``OutOfMemory``.
    """
    t0 = time.perf_counter()
    timer = _Timer()
    reader = open_video(source, cfg.input, stdin=stdin)
    writers: dict[str, VideoWriter] = {}
    try:
        meta = reader.meta
        shapes = composite.output_shapes(meta, cfg.composite, cfg.render)
        targets = output_targets(target, list(shapes))
        for name, (w, h) in shapes.items():
            writers[name] = VideoWriter(targets[name], width=w, height=h, fps=meta.fps, time_base=meta.time_base,
                                        audio_stream=reader.audio_stream, cfg=cfg.output, stdout=stdout)
        batch_size = choose_batch_size(cfg, models.device)
        report = RunReport(input=str(source), outputs=targets, batch_size=batch_size, device=str(models.device),
                           weights="generated" if models.generated else "registry")
        log.info("%s: %dx%d, %s fps, %s frames; batch size %d on %s", source, meta.width, meta.height,
                 float(meta.fps), meta.n_frames or "?", batch_size, models.device)
        _stream(reader, writers, models, cfg, batch_size, timer, report, progress)
        for writer in writers.values():
            writer.close(ok=True)
    finally:
        for writer in writers.values():
            writer.close(ok=False)
        reader.close()
    report.seconds = time.perf_counter() - t0
    report.fps = report.frames / report.seconds if report.seconds else 0.0
    report.stage_seconds = {k: round(v, 3) for k, v in timer.seconds.items()}
    return report


def _stream(reader, writers: dict[str, VideoWriter], models: Models, cfg: PipelineConfig, batch_size: int,
            timer: _Timer, report: RunReport, progress: bool) -> None:
    """Run the four-part stream; re-raise the first error of any thread here."""
    from tqdm import tqdm

    stop = threading.Event()
    errors: list[BaseException] = []
    decoded = _Channel(cfg.runtime.queue_size, stop)
    prepared = _Channel(cfg.runtime.queue_size, stop)
    composed = _Channel(cfg.runtime.queue_size, stop)
    prep = _Prepare(reader.meta.source, cfg, models)
    step = _ModelStep(models, cfg, batch_size)
    bar = tqdm(total=reader.meta.n_frames, unit="frame", file=sys.stderr, disable=not progress,
               desc=Path(str(reader.meta.source)).name or "stdin", dynamic_ncols=True)

    def guarded(fn: Callable[[], None]) -> Callable[[], None]:
        def run() -> None:
            try:
                fn()
            except BaseException as exc:  # handed to the main thread, which re-raises it
                errors.append(exc)
                stop.set()
        return run

    def decode() -> None:
        start = time.perf_counter()
        for batch in reader.batches(batch_size):
            timer.add("decode", start)
            if not decoded.put(batch):
                return
            start = time.perf_counter()
        decoded.put(_End(reader.remaining_audio()))

    def preprocess() -> None:
        while (item := decoded.get()) is not None:
            if isinstance(item, _End):
                prepared.put(item)
                return
            start = time.perf_counter()
            out = prep(item)
            timer.add("preprocess", start)
            if not prepared.put(out):
                return

    def encode() -> None:
        while (item := composed.get()) is not None:
            if isinstance(item, _End):
                for writer in writers.values():
                    writer.write_audio(item.audio)
                return
            batch, outputs = item
            start = time.perf_counter()
            for name, writer in writers.items():
                writer.write(outputs[name], batch.pts)
                writer.write_audio(batch.extras.get("audio_packets", ()))
            timer.add("encode", start)
            bar.update(len(batch))

    threads = [threading.Thread(target=guarded(f), name=f"vidtriplane-{f.__name__}", daemon=True)
               for f in (decode, preprocess, encode)]
    for t in threads:
        t.start()
    first_pts: Optional[int] = None
    try:
        while (item := prepared.get()) is not None:
            if isinstance(item, _End):
                composed.put(item)
                break
            batch: FrameBatch = item
            first_pts = int(batch.pts[0]) if first_pts is None else first_pts
            times = (batch.pts - first_pts).astype(np.float64) * float(batch.meta.time_base)
            rendered = step(batch, times, timer)
            start = time.perf_counter()
            outputs = composite.compose(batch, rendered, cfg.composite, cfg.render)
            timer.add("composite", start)
            report.frames += len(batch)
            if batch.face_found is not None:
                report.faces_found = (report.faces_found or 0) + int(np.sum(batch.face_found))
            if batch.held is not None:
                report.held = (report.held or 0) + int(np.sum(batch.held))
            if "preprocess" in batch.extras:
                report.fallback = (report.fallback or 0) + int(batch.extras["preprocess"].get("fallbacks", 0))
            if not composed.put((batch, outputs)):
                break
    except BaseException as exc:
        errors.insert(0, exc)
        stop.set()
    finally:
        for t in threads:
            while t.is_alive():
                t.join(timeout=0.2)
                if errors:
                    stop.set()
        bar.close()
    report.batch_size = step.size
    if errors:
        raise errors[0]
    prep.finish(reader.meta.source)
