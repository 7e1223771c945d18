"""Building what a render run needs from its config: the loaded models and, per video, the stage chain.

    models = load_models(cfg, weights)           # once per process (folders reuse them)
    chain = build_chain(cfg, models, source)     # per video: the stages in order, their state, the cache

``weights`` says where the TriPlaneNet (and EG3D) files are; the command layer resolves registry names
to files (``vidtriplane.commands.models.resolve_weights``), so nothing here downloads anything.
Generated weights (``model.weights=generated``) need no file at all.

The chain is the only place the stages meet: ``prepare`` (aligned crops, or face preprocessing with the
pose cache), ``infer`` (invert + render in micro-batches, halving the micro-batch on out-of-memory
errors), ``compose``. Each takes a :class:`~vidtriplane.types.FrameBatch` and returns it grown.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import torch

from vidtriplane import runtime
from vidtriplane.config.render import ModelConfig, PipelineConfig
from vidtriplane.devices import resolve_device
from vidtriplane.errors import VidtriplaneError
from vidtriplane.models.compile import compile_network
from vidtriplane.models.eg3d.backends import BackendUnavailable, resolve_backend
from vidtriplane.stages import aligned, composite, invert, render
from vidtriplane.types import FrameBatch

log = logging.getLogger(__name__)

GENERATED_WARNING = (
    "USING GENERATED (RANDOM) WEIGHTS: the output only exercises the pipeline, it is NOT a reconstruction "
    "of the input. Use model.weights=registry with the official checkpoints for real output."
)


class PipelineError(VidtriplaneError, RuntimeError):
    """A request the pipeline cannot honour (the message says what to change)."""


class OutOfMemory(VidtriplaneError, RuntimeError):
    """The device ran out of memory even with one frame per batch."""


@dataclass(frozen=True)
class WeightFiles:
    """Files the inversion network is loaded from (resolved by the command layer)."""

    checkpoint: Path
    """TriPlaneNet v1/v2 checkpoint (official format)."""
    eg3d: Optional[Path] = None
    """EG3D file giving latent_avg and the generator's settings (None: the checkpoint alone)."""


@dataclass
class Models:
    """Everything loaded once and reused for every video of a run."""

    net: torch.nn.Module
    device: torch.device
    generated: bool
    preprocess: Optional[Any] = None
    """The preprocess stage's loaded models (face detector, matting), when the pipeline has it."""
    static_shapes: bool = False
    """The network is compiled for fixed batch sizes: a short last batch is padded to the batch size."""


# --------------------------------------------------------------------------------------------------
# models


def build_generated(cfg: ModelConfig) -> torch.nn.Module:
    """A TriPlaneNet with deterministic random weights (seeded), in eval mode."""
    from vidtriplane.models.triplanenet import TriPlaneNet, TriPlaneNetConfig, TriPlaneNetV2

    if cfg.size == "tiny":
        net_cfg = TriPlaneNetConfig.tiny(version=cfg.version)
    else:
        net_cfg = TriPlaneNetConfig() if cfg.version == 1 else TriPlaneNetConfig.v2()
    with torch.random.fork_rng(devices=[]):  # seeded without disturbing the caller's RNG
        torch.manual_seed(cfg.seed)
        net = TriPlaneNet(net_cfg) if cfg.version == 1 else TriPlaneNetV2(net_cfg)
    return net.eval().requires_grad_(False)


def build_network(cfg: ModelConfig, weights: Optional[WeightFiles]) -> torch.nn.Module:
    """The inversion network: generated, or loaded from ``weights`` (official checkpoint format)."""
    if cfg.weights == "generated":
        log.warning(GENERATED_WARNING)
        return build_generated(cfg)
    if weights is None:
        raise PipelineError("model.weights is not 'generated', so the checkpoint files must be given")
    from vidtriplane import checkpoints

    net = checkpoints.load_triplanenet(weights.checkpoint, eg3d=weights.eg3d)
    return net.eval().requires_grad_(False)


def load_models(cfg: PipelineConfig, weights: Optional[WeightFiles] = None) -> Models:
    """Build the inversion network (and the preprocessing models) on the configured device."""
    device = resolve_device(cfg.runtime.device)
    if cfg.model.version == 2 and cfg.invert.cttr_steps:
        raise PipelineError("CTTR (invert.cttr_steps, --cttr) exists for TriPlaneNet v1 only; set it to 0 for v2")
    runtime.configure(device, threads=cfg.runtime.torch_threads, tf32=cfg.runtime.tf32)
    try:
        backend = resolve_backend(cfg.render.backend, device)
    except BackendUnavailable as exc:
        raise PipelineError(f"render.backend={cfg.render.backend}: {exc}") from None
    if device.type == "cpu" and cfg.model.size == "full":
        log.warning("running on the CPU: expect seconds per frame with the full-size model "
                    "(a CUDA GPU is 100x faster)")
    net = build_network(cfg.model, weights).to(device)
    mode = cfg.render.compile_network
    if mode == "auto":
        mode = "off" if backend == "eager" else "default"
    if mode != "off":
        compiled = compile_network(net, mode=mode)
        log.info("render backend %s, precision %s; compiled %s (%s); the first batch compiles (cached on disk)",
                 backend, cfg.render.precision, ", ".join(compiled), mode)
    pre = None
    if "preprocess" in cfg.stages:
        from vidtriplane.stages import preprocess

        pre = preprocess.load_models(cfg.preprocess, device=str(device))
    return Models(net=net, device=device, generated=cfg.model.weights == "generated", preprocess=pre,
                  static_shapes=mode != "off")


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


def is_out_of_memory(exc: BaseException) -> bool:
    """Whether ``exc`` is a device (or host) allocation failure."""
    if isinstance(exc, torch.OutOfMemoryError):
        return True
    text = str(exc)
    return isinstance(exc, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text)


def pad_frames(batch: FrameBatch, size: int) -> FrameBatch:
    """``batch`` (crops, labels, seconds) repeated from its last frame up to ``size`` frames."""
    idx = np.minimum(np.arange(size), len(batch) - 1)
    return FrameBatch(
        meta=batch.meta, index=batch.index[idx], pts=batch.pts[idx], frames=batch.frames[idx],
        crops=batch.crops[idx], labels=batch.labels[idx], seconds=batch.seconds[idx])


# --------------------------------------------------------------------------------------------------
# the per-video chain


class Prepare:
    """The preprocessing part of one video: ``aligned`` crops, or face preprocessing with the pose cache.

    With ``runtime.pose_cache`` and a file input, the per-frame geometry (landmarks, crops, labels) is
    looked up by the file's content hash + the geometry settings: a hit skips face detection and pose
    estimation (re-rendering another camera of the same video). On a miss, a file with the offline
    smoother (``preprocess.smooth.mode`` auto/offline) gets a geometry pass over the whole video first
    (:func:`vidtriplane.pipeline.geometry.video_geometry`), stored at once; a stream (stdin, or the causal
    smoother) computes it batch by batch and stores it when the video is done.
    """

    def __init__(self, source: str | Path, cfg: PipelineConfig, models: Models) -> None:
        self.cfg = cfg
        self._runner: Optional[Callable[[FrameBatch], FrameBatch]] = None
        self._cache_key: Optional[tuple[str, dict]] = None
        self.geometry_seconds = 0.0
        """Time of the geometry pass (0 without one)."""
        if "aligned" in cfg.stages:
            return
        from vidtriplane.stages import preprocess, smooth

        cached, report = None, None
        if cfg.runtime.pose_cache and str(source) != "-":
            from vidtriplane.cache import PoseCache, hash_file

            self._cache_key = (hash_file(source), cfg.preprocess.geometry_settings())
            cached = PoseCache().load(*self._cache_key)
            if cached is not None:
                log.info("pose cache hit for %s: skipping face detection and pose estimation", source)
        if cached is None and smooth.resolve_mode(cfg.preprocess.smooth, str(source)) == "offline":
            from vidtriplane.pipeline.geometry import video_geometry

            cached, report = video_geometry(source, cfg.preprocess, models.preprocess, cfg.input)
            self.geometry_seconds = report["seconds"]
            log.info("geometry pass of %s: %d frames in %.1f s", source, report["frames"], report["seconds"])
            self._store(source, cached)
        self._runner = preprocess.Preprocessor(models.preprocess, cfg.preprocess, cached=cached, report=report)

    def __call__(self, batch: FrameBatch) -> FrameBatch:
        if self._runner is None:
            return aligned.apply(batch, self.cfg.aligned, self.cfg.crop_size)
        return self._runner(batch)

    @property
    def report(self) -> Optional[dict[str, Any]]:
        """The preprocessing report (counts, tracker counts, jitter, matting counts), None for aligned input."""
        return None if self._runner is None else self._runner.report

    def _store(self, source: str | Path, geometry: Optional[dict[str, np.ndarray]]) -> None:
        if geometry is None or self._cache_key is None:
            return
        from vidtriplane.cache import PoseCache

        PoseCache().save(*self._cache_key, geometry, source=str(source))
        self._cache_key = None  # stored once

    def finish(self, source: str | Path) -> None:
        """Store the geometry of a completed video in the pose cache (a miss computed while streaming)."""
        if self._runner is not None and self._cache_key is not None:
            self._store(source, self._runner.new_geometry)


class Infer:
    """Invert + render a batch in micro-batches, halving the micro-batch on out-of-memory errors."""

    def __init__(self, models: Models, cfg: PipelineConfig, batch_size: int) -> None:
        self.models, self.cfg, self.size = models, cfg, batch_size
        self.same_view = composite.needs_same_view(cfg.composite)
        self.kwargs = render.synthesis_kwargs(cfg.render)

    def __call__(self, batch: FrameBatch, timer: Any) -> FrameBatch:
        n = len(batch)
        parts: list[dict[str, np.ndarray]] = []
        i = 0
        while i < n:
            j = min(n, i + self.size)
            try:
                chunk = batch.slice(i, j)
                if self.models.static_shapes and j - i < self.size:
                    chunk = pad_frames(chunk, self.size)  # compiled for this batch size: no recompile
                with timer("invert"):
                    part = invert.apply(chunk, self.models.net, self.cfg.invert, self.models.device,
                                        **self.kwargs)
                with timer("render"):
                    rendered = render.apply(part, self.models.net, self.cfg.render, same_view=self.same_view).rendered
                parts.append({k: v[: j - i] for k, v in rendered.items()})
                del part
            except Exception as exc:  # only out-of-memory is retried; everything else propagates
                if not is_out_of_memory(exc):
                    raise
                part = None
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
        return batch.with_fields(rendered={k: np.concatenate([p[k] for p in parts]) for k in parts[0]})


@dataclass
class Chain:
    """The stages of one video, in order."""

    prepare: Prepare
    infer: Infer
    compose: Callable[[FrameBatch], FrameBatch]


def build_chain(cfg: PipelineConfig, models: Models, source: str | Path, batch_size: int) -> Chain:
    """The stage chain for one video (fresh per-video state: tracking, smoothing, pose cache)."""
    return Chain(
        prepare=Prepare(source, cfg, models),
        infer=Infer(models, cfg, batch_size),
        compose=lambda batch: composite.apply(batch, cfg),
    )
