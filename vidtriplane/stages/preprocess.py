"""The preprocessing chain: landmarks -> EG3D crop -> head pose -> smoothing -> held frames -> crops (-> matting).

A live stream (stdin), batch by batch with the causal smoother:

    models = load_models(cfg)
    state = PreprocessState()
    for batch in reader.batches(16):
        batch, state = apply(batch, state, models, cfg)   # same frame count out as in

A file, with the offline smoother: a geometry pass over the whole video first, then the crops:

    geo, stats = sequence_geometry(reader.batches(16), models, cfg)        # whole-video geometry
    runner = Preprocessor(models, cfg, cached=geo)                          # as a pose cache hit
    for batch in other_reader.batches(16):
        batch = runner(batch)

Fields added (see :class:`~vidtriplane.types.FrameBatch`): ``landmarks``, ``face_found``, ``confidence``,
``held``, ``crop_matrix``, ``labels``, ``crops``, with matting ``alpha`` and, with the MTCNN backend's
dlib pose points, ``pose_landmarks``. ``extras["preprocess"]``
has the per-batch counts and the ``fallback`` mask. Frames without a face are held, then fall back
(:mod:`vidtriplane.stages.geometry`).
"""
from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field, replace
from typing import Any, Iterable, Optional

import numpy as np

from vidtriplane.cache import GEOMETRY, OPTIONAL_GEOMETRY, concat_geometry
from vidtriplane.config.preprocess import PreprocessConfig
from vidtriplane.stages import align, geometry as geometry_stage, landmarks, matting, steadiness
from vidtriplane.types import FrameBatch

GEOMETRY_FIELDS = tuple(GEOMETRY)
OPTIONAL_GEOMETRY_FIELDS = tuple(OPTIONAL_GEOMETRY)  # pose_landmarks: MTCNN with dlib's 68 pose points
log = logging.getLogger(__name__)


@dataclass
class PreprocessModels:
    """Loaded models: the face backend and (with matting) a matting runner."""

    face: Optional[landmarks.AnyBackend] = None
    matting: Any = None
    device: str = "cpu"
    """Where the crop warp runs: CUDA (one batched ``grid_sample``) when the face models run there."""


def load_models(cfg: PreprocessConfig, *, geometry: bool = True, device: Optional[str] = None) -> PreprocessModels:
    """Load what ``cfg`` needs (``geometry=False`` skips the face model, e.g. when the pose cache hits).

    ``device`` is what ``landmarks.device: auto`` means here (the render run's device; None: CUDA when
    available); a matting network with ``matting.device: auto`` runs on the landmark device too.
    """
    from vidtriplane.stages import matting_backends

    face_device = cfg.landmarks.device if cfg.landmarks.device != "auto" else (device or "auto")
    face = landmarks.load_backend(cfg.landmarks, device=face_device) if geometry else None
    runner = None
    if cfg.matting.enabled:
        matting_cfg = cfg.matting
        if matting_cfg.device == "auto" and face_device != "auto":
            matting_cfg = replace(matting_cfg, device=face_device)
        runner = matting_backends.load_runner(matting_cfg)
    return PreprocessModels(face=face, matting=runner, device=_warp_device(face_device))


def _warp_device(face_device: str) -> str:
    """The crop warp runs where the face models run: CUDA (``auto`` with a GPU, or a ``cuda:N``), else the CPU."""
    if face_device == "auto":
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    return face_device if face_device.startswith("cuda") else "cpu"


@dataclass(frozen=True)
class PreprocessState:
    """What crosses batch boundaries."""

    tracker: landmarks.LandmarkState = landmarks.LandmarkState()
    geometry: geometry_stage.GeometryState = geometry_stage.GeometryState()
    counts: tuple[int, int, int, int] = (0, 0, 0, 0)
    """Cumulative (frames, faces, held, fallback)."""
    steps: tuple[tuple[str, int], ...] = ()
    """Cumulative tracker steps (:attr:`LandmarkState.step`: detect, redetect, track, flow) as (name, count)."""
    trace: Optional[dict[str, np.ndarray]] = field(default=None, compare=False)
    """Raw and smoothed jitter axes of the last batch (``geometry_stage.from_landmarks``'s trace)."""
    matting: matting.KeyState = matting.KeyState()
    """The last key crop and alpha of matting with carried alphas, and its counts."""


def _fps(batch: FrameBatch) -> float:
    return float(batch.meta.fps) if batch.meta.fps else 30.0


def track(batch: FrameBatch, tracker: landmarks.LandmarkState, models: PreprocessModels, cfg: PreprocessConfig
          ) -> tuple[landmarks.Landmarks, landmarks.LandmarkState]:
    """The batch's landmarks ([N, 68 or 5, 2], NaN: no face; confidences; tracker steps; pose points) and
    the tracker state."""
    if models.face is None:
        raise ValueError("preprocessing needs the face model: load_models(cfg) with geometry=True")
    return landmarks.detect_batch(batch.frames, tracker, models.face, cfg.landmarks)


def _add(counts: tuple, geo: dict[str, np.ndarray]) -> tuple[int, int, int, int]:
    n = len(geo["labels"])
    return (counts[0] + n, counts[1] + int(geo["face_found"].sum()), counts[2] + int(geo["held"].sum()),
            counts[3] + int(geo["fallback"].sum()))


def _add_steps(steps: tuple, new: Counter) -> tuple[tuple[str, int], ...]:
    total = Counter(dict(steps))
    total.update(new)
    return tuple(sorted(total.items()))


def stream_mode(cfg: PreprocessConfig) -> str:
    """The smoothing of a batch-by-batch stream: 'causal' (also for 'auto') or 'off'."""
    mode = cfg.smooth.mode
    if mode == "offline":
        raise ValueError("smooth.mode=offline needs the whole video first: use sequence_geometry() (files), "
                         "or smooth.mode=causal for a stream")
    return "off" if mode == "off" else "causal"


def geometry(
    batch: FrameBatch, state: PreprocessState, models: PreprocessModels, cfg: PreprocessConfig
) -> tuple[dict[str, np.ndarray], PreprocessState]:
    """Per-frame geometry of one batch of a stream (causal smoothing) and the new state."""
    found, tracker = track(batch, state.tracker, models, cfg)
    size = (int(batch.frames.shape[2]), int(batch.frames.shape[1]))
    geo, trace, geo_state = geometry_stage.from_landmarks(found.points, size, _fps(batch), state.geometry, cfg,
                                                          stream_mode(cfg), pose_lms=found.pose_points)
    geo["confidence"] = found.confidence
    new_state = replace(state, tracker=tracker, geometry=geo_state, counts=_add(state.counts, geo),
                        steps=_add_steps(state.steps, Counter(found.steps)), trace=trace)
    return geo, new_state


def sequence_geometry(
    batches: Iterable[FrameBatch], models: PreprocessModels, cfg: PreprocessConfig, mode: str = "offline"
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """The whole video's geometry (the pose cache arrays) from all its batches, and its report.

    Landmarks are tracked batch by batch; crops and poses are then smoothed over the whole sequence
    (``mode`` 'offline'; 'causal' and 'off' give what the stream would). The report holds the frame counts,
    the tracker's counts and the jitter of the raw and smoothed crop / pose axes.
    """
    tracker = landmarks.LandmarkState()
    parts: list[landmarks.Landmarks] = []
    size, fps = None, 30.0
    for batch in batches:
        found, tracker = track(batch, tracker, models, cfg)
        parts.append(found)
        size, fps = (int(batch.frames.shape[2]), int(batch.frames.shape[1])), _fps(batch)
    if size is None:
        raise ValueError("the video has no frames")
    lms = np.concatenate([p.points for p in parts])
    pose_lms = np.concatenate([p.pose_points for p in parts]) if parts[0].pose_points is not None else None
    geo, trace, _ = geometry_stage.from_landmarks(lms, size, fps, geometry_stage.GeometryState(), cfg, mode,
                                                  pose_lms=pose_lms)
    geo["confidence"] = np.concatenate([p.confidence for p in parts])
    report = dict(zip(("frames", "faces", "held", "fallback"), _add((0, 0, 0, 0), geo)))
    report["tracker"] = steadiness.tracker_counts(Counter(step for p in parts for step in p.steps))
    report["steadiness"] = steadiness.summary(trace["raw"], trace["smoothed"], trace["found"], mode)
    return {k: geo[k] for k in GEOMETRY_FIELDS + OPTIONAL_GEOMETRY_FIELDS if k in geo}, report


def with_geometry(
    batch: FrameBatch, geo: dict[str, np.ndarray], models: PreprocessModels, cfg: PreprocessConfig,
    keys: matting.KeyState = matting.KeyState(),
) -> tuple[FrameBatch, matting.KeyState]:
    """Add the geometry fields, cut the crops and (with matting) replace their background; ``keys`` is
    matting's state from the video's previous batch (returned updated)."""
    if len(geo["labels"]) != len(batch):
        raise ValueError(f"geometry for {len(geo['labels'])} frames given to a batch of {len(batch)}")
    if models.device.startswith("cuda"):
        from vidtriplane.geometry import warp_torch

        crops = warp_torch.warp_crops(batch.frames, geo["crop_matrix"].astype(np.float64), cfg.align.out_size,
                                      models.device, mode="bicubic" if cfg.align.interpolation != "linear" else
                                      "bilinear")
    else:
        crops = align.warp_crops(batch.frames, geo["crop_matrix"].astype(np.float64), cfg.align)
    if crops.ndim == 3 or crops.shape[-1] == 1:  # grey frames -> RGB crops
        crops = np.repeat(crops.reshape(crops.shape[:3] + (1,)), 3, axis=-1)
    extras = {
        "preprocess": {
            "fallback": geo["fallback"],
            "faces": int(geo["face_found"].sum()),
            "held": int(geo["held"].sum()),
            "fallbacks": int(geo["fallback"].sum()),
        }
    }
    fields = {k: geo[k] for k in GEOMETRY_FIELDS + OPTIONAL_GEOMETRY_FIELDS if k != "fallback" and k in geo}
    batch = batch.with_fields(**fields, extras=extras)
    if cfg.matting.enabled:
        if models.matting is None:
            raise ValueError("matting is enabled but no matting runner was loaded (load_models(cfg))")
        return matting.apply(batch, crops, models.matting, cfg.matting, keys)
    return batch.with_fields(crops=crops), keys


def apply(
    batch: FrameBatch, state: PreprocessState, models: PreprocessModels, cfg: PreprocessConfig
) -> tuple[FrameBatch, PreprocessState]:
    """One batch through the whole chain; returns the grown batch and the state for the next batch."""
    geo, state = geometry(batch, state, models, cfg)
    batch, keys = with_geometry(batch, geo, models, cfg, state.matting)
    return batch, replace(state, matting=keys)


def load(cfg: PreprocessConfig) -> PreprocessModels:
    """Alias of :func:`load_models` with the face model (the name the render pipeline uses)."""
    return load_models(cfg)


class Preprocessor:
    """Thin stateful wrapper for streaming: ``runner(batch) -> batch``, one video per instance.

    With ``cached`` (the per-video geometry arrays of a pose cache hit or of :func:`sequence_geometry`, see
    :mod:`vidtriplane.cache`) it skips detection and pose and only cuts crops (and mattes); ``report`` is
    then that geometry's report, if known. Otherwise it computes the geometry batch by batch (causal
    smoothing) and keeps it in ``self.geometry_parts`` so the caller can store it in the pose cache.
    """

    def __init__(self, models: PreprocessModels, cfg: PreprocessConfig, cached: Optional[dict[str, np.ndarray]] = None,
                 report: Optional[dict[str, Any]] = None) -> None:
        self.models, self.cfg, self.cached = models, cfg, cached
        self.state = PreprocessState()
        self.geometry_parts: list[dict[str, np.ndarray]] = []
        self._traces: list[dict[str, np.ndarray]] = []
        self._given_report = report
        self._complete = True

    def __call__(self, batch: FrameBatch) -> FrameBatch:
        if self.cached is not None and int(batch.index[-1]) >= len(self.cached["labels"]):
            log.warning("the pose cache entry holds %d frames but the input has more; computing the geometry "
                        "from frame %d on", len(self.cached["labels"]), int(batch.index[0]))
            self.cached = None
            self.geometry_parts = []  # an incomplete video's geometry is not stored
            self._given_report = None
            self._complete = False
        if self.cached is not None:
            geo = {k: v[batch.index] for k, v in self.cached.items()}
            self.state = replace(self.state, counts=_add(self.state.counts, geo))
        else:
            geo, self.state = geometry(batch, self.state, self.models, self.cfg)
            self.geometry_parts.append(geo)
            self._traces.append(self.state.trace)
        batch, keys = with_geometry(batch, geo, self.models, self.cfg, self.state.matting)
        self.state = replace(self.state, matting=keys)
        return batch

    @property
    def new_geometry(self) -> Optional[dict[str, np.ndarray]]:
        """The whole video's geometry when it was computed here (what the pose cache stores), else None."""
        if not self._complete or not self.geometry_parts:
            return None
        return concat_geometry(self.geometry_parts)

    @property
    def counts(self) -> dict[str, int]:
        """Cumulative frame counts: frames, faces, held, fallback."""
        return dict(zip(("frames", "faces", "held", "fallback"), self.state.counts))

    @property
    def report(self) -> dict[str, Any]:
        """Counts, and (when known) the tracker's counts and the jitter of raw vs smoothed crops and poses;
        with matting, the crops the network ran on and those whose alpha was carried."""
        out: dict[str, Any] = dict(self.counts)
        if self.cfg.matting.enabled:
            keys = self.state.matting
            out["matting"] = {"network": keys.network, "carried": keys.carried}
        if self._given_report is not None:
            out.update({k: v for k, v in self._given_report.items() if k in ("tracker", "steadiness")})
        elif self._traces:
            trace = {k: np.concatenate([t[k] for t in self._traces]) for k in self._traces[0]}
            out["tracker"] = steadiness.tracker_counts(dict(self.state.steps))
            out["steadiness"] = steadiness.summary(trace["raw"], trace["smoothed"], trace["found"],
                                                   stream_mode(self.cfg))
        return out


def start(models: PreprocessModels, cfg: PreprocessConfig) -> Preprocessor:
    """A fresh per-video :class:`Preprocessor` (tracking and smoothing state start empty)."""
    return Preprocessor(models, cfg)
