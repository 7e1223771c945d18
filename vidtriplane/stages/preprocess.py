"""The preprocessing chain: landmarks -> EG3D crop -> head pose -> smoothing -> held frames -> crops (-> matting).

    models = load_models(cfg)
    state = PreprocessState()
    for batch in reader.batches(16):
        batch, state = apply(batch, state, models, cfg)   # same frame count out as in

Fields added (see :class:`~vidtriplane.types.FrameBatch`): ``landmarks``, ``face_found``, ``confidence``,
``held``, ``crop_matrix``, ``labels``, ``crops`` and, with matting, ``alpha``. ``extras["preprocess"]``
has the per-batch counts and the ``fallback`` mask.

Frames without a face never disappear. For ``hold_frames`` frames after the last face, the last good
crop and pose are held (``held`` = True). After that, or before the first face, the fallback applies:
``fallback="hold"`` keeps holding the last good crop and pose indefinitely (or, before any face, uses
the centre crop), ``fallback="center"`` uses a centred square crop of side ``min(W, H)`` with a frontal
camera label. Either way the frame is counted in ``fallback``.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Literal, Optional

import numpy as np

from vidtriplane.stages import align, landmarks, matting, pose, smooth
from vidtriplane.types import FrameBatch

GEOMETRY_FIELDS = ("landmarks", "face_found", "held", "confidence", "crop_matrix", "labels", "fallback")
OPTIONAL_GEOMETRY = ("pose_landmarks",)  # present only with the MTCNN backend's 68 pose points


@dataclass(frozen=True)
class PreprocessConfig:
    """Everything that turns frames into aligned crops + camera labels."""

    landmarks: landmarks.LandmarkConfig = field(default_factory=landmarks.LandmarkConfig)
    """Face detection, tracking and the landmarks (68 dlib points or MTCNN's 5)."""
    align: align.AlignConfig = field(default_factory=align.AlignConfig)
    """The EG3D crop (section 5.2 of the official spec)."""
    pose: pose.PoseConfig = field(default_factory=pose.PoseConfig)
    """Head pose -> EG3D camera label."""
    smooth: smooth.SmoothConfig = field(default_factory=smooth.SmoothConfig)
    """Temporal smoothing of the crop and the pose (video)."""
    matting: matting.MattingConfig = field(default_factory=matting.MattingConfig)
    """Background replacement on the crops."""
    hold_frames: int = 15
    """Frames without a face that keep the last good crop and pose before the fallback applies."""
    fallback: Literal["hold", "center"] = "hold"
    """After ``hold_frames`` (or before the first face): 'hold' keeps the last good crop and pose forever,
    'center' switches to a centred square crop of side min(W, H) with the frontal camera."""

    def __post_init__(self) -> None:
        if self.hold_frames < 0:
            raise ValueError(f"hold_frames must be >= 0, got {self.hold_frames}")

    def geometry_settings(self) -> dict[str, Any]:
        """The settings that decide landmarks, crops and labels (the pose cache key; matting excluded)."""
        from vidtriplane.config import to_mapping

        data = to_mapping(self)
        data.pop("matting")
        return data


@dataclass
class PreprocessModels:
    """Loaded models: the face backend and (with matting) a rembg session."""

    face: Optional[landmarks.AnyBackend] = None
    matting: Any = None


def load_models(cfg: PreprocessConfig, *, geometry: bool = True) -> PreprocessModels:
    """Load what ``cfg`` needs (``geometry=False`` skips the face model, e.g. when the pose cache hits)."""
    face = landmarks.load_backend(cfg.landmarks) if geometry else None
    session = matting.load_session(cfg.matting) if cfg.matting.enabled else None
    return PreprocessModels(face=face, matting=session)


@dataclass(frozen=True)
class PreprocessState:
    """What crosses batch boundaries."""

    tracker: landmarks.LandmarkState = landmarks.LandmarkState()
    crop_filter: smooth.SmoothState = smooth.SmoothState()
    pose_filter: smooth.SmoothState = smooth.SmoothState()
    landmark_filter: smooth.SmoothState = smooth.SmoothState()
    last_params: Optional[np.ndarray] = None
    """Crop square (cx, cy, side) of the last frame with a face."""
    last_pose: Optional[np.ndarray] = None
    """Head pose signal (rotvec, tx/tz, ty/tz, log tz) of the last frame with a face."""
    since_face: int = 0
    """Frames since the last face."""
    counts: tuple[int, int, int, int] = (0, 0, 0, 0)
    """Cumulative (frames, faces, held, fallback)."""


def _pose_signal(rot: np.ndarray, trans: np.ndarray) -> np.ndarray:
    tz = trans[:, 2:3]
    return np.concatenate([rot, trans[:, :2] / tz, np.log(np.abs(tz))], axis=1)


def _signal_pose(sig: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    tz = np.exp(sig[:, 5:6])
    return sig[:, :3], np.concatenate([sig[:, 3:5] * tz, tz], axis=1)


def _center_params(width: int, height: int) -> np.ndarray:
    side = float(min(width, height))
    return np.array([(width - 1) / 2.0, (height - 1) / 2.0, side])


_FRONTAL_SIGNAL = np.array([0.0, 0.0, 0.0, 0.0, 0.0, np.log(pose.FOCAL * 700.0 / 300.0)])


def _frame_size(batch: FrameBatch) -> tuple[int, int]:
    return int(batch.frames.shape[2]), int(batch.frames.shape[1])


def geometry(
    batch: FrameBatch, state: PreprocessState, models: PreprocessModels, cfg: PreprocessConfig
) -> tuple[dict[str, np.ndarray], PreprocessState]:
    """Per-frame geometry of a batch (the arrays of :data:`GEOMETRY_FIELDS`) and the new state."""
    n = len(batch)
    width, height = _frame_size(batch)
    fps = float(batch.meta.fps) if batch.meta.fps else 30.0
    if models.face is None:
        raise ValueError("preprocessing needs the face model: load_models(cfg) with geometry=True")

    # 1. landmarks (detect / track)
    found_lms, tracker = landmarks.detect_batch(batch.frames, state.tracker, models.face, cfg.landmarks)
    lms, conf = found_lms.points, found_lms.confidence
    pose_lms = found_lms.pose_points if found_lms.pose_points is not None else lms
    found = np.isfinite(lms).all(axis=(1, 2))

    # 2. crop squares, smoothed (or the official integer crop, which is not smoothed)
    official = align.official_matrices(lms, width, height, cfg.align) if cfg.align.official_rounding else None
    if official is not None:
        params = np.full((n, 3), np.nan)
        params[found] = align.params_of(official[found], cfg.align.out_size)
        crop_filter = state.crop_filter
    else:
        raw = align.crop_params(lms, height, cfg.align)
        sig, crop_filter = smooth.one_euro(smooth.crop_to_signal(raw), found, state.crop_filter, fps, cfg.smooth)
        params = smooth.signal_to_crop(sig)

    # 3. head pose in the crop, smoothed
    if official is not None:
        mats = official
    else:
        mats = align.crop_matrices(np.where(np.isfinite(params), params, 1.0), cfg.align)
    rot, trans = pose.estimate(pose_lms, mats, cfg.align.out_size, cfg.pose)
    found &= np.isfinite(rot).all(axis=1)  # a failed pose counts as a frame without a face
    pose_sig, pose_filter = smooth.one_euro(_pose_signal(rot, trans), found, state.pose_filter, fps, cfg.smooth)

    # 4. frames without a face: hold, then fall back
    held = np.zeros(n, dtype=bool)
    fallback = np.zeros(n, dtype=bool)
    last_params, last_pose, since = state.last_params, state.last_pose, state.since_face
    for i in range(n):
        if found[i]:
            last_params, last_pose, since = params[i].copy(), pose_sig[i].copy(), 0
            continue
        since += 1
        if last_params is not None and (since <= cfg.hold_frames or cfg.fallback == "hold"):
            params[i], pose_sig[i] = last_params, last_pose
            held[i] = since <= cfg.hold_frames
            fallback[i] = not held[i]
        else:
            params[i], pose_sig[i] = _center_params(width, height), _FRONTAL_SIGNAL
            fallback[i] = True
    mats = align.crop_matrices(params, cfg.align)
    if official is not None:
        mats[found] = official[found]
    labels = pose.labels(*_signal_pose(pose_sig), cfg.pose)

    out_lms = lms
    landmark_filter = state.landmark_filter
    if cfg.smooth.smooth_landmarks:
        flat, landmark_filter = smooth.one_euro(lms.reshape(n, -1), found, landmark_filter, fps, cfg.smooth)
        out_lms = flat.reshape(lms.shape).astype(np.float32)

    c = state.counts
    counts = (c[0] + n, c[1] + int(found.sum()), c[2] + int(held.sum()), c[3] + int(fallback.sum()))
    new_state = PreprocessState(
        tracker=tracker,
        crop_filter=crop_filter,
        pose_filter=pose_filter,
        landmark_filter=landmark_filter,
        last_params=last_params,
        last_pose=last_pose,
        since_face=since,
        counts=counts,
    )
    geo = {
        "landmarks": out_lms,
        "face_found": found,
        "held": held,
        "confidence": conf,
        "crop_matrix": mats.astype(np.float32),
        "labels": labels,
        "fallback": fallback,
    }
    if found_lms.pose_points is not None:
        geo["pose_landmarks"] = found_lms.pose_points
    return geo, new_state


def with_geometry(
    batch: FrameBatch, geo: dict[str, np.ndarray], models: PreprocessModels, cfg: PreprocessConfig
) -> FrameBatch:
    """Add the geometry fields, cut the crops and (with matting) replace their background."""
    if len(geo["labels"]) != len(batch):
        raise ValueError(f"geometry for {len(geo['labels'])} frames given to a batch of {len(batch)}")
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
    fields = {k: geo[k] for k in GEOMETRY_FIELDS + OPTIONAL_GEOMETRY if k != "fallback" and k in geo}
    batch = batch.with_fields(**fields, extras=extras)
    if cfg.matting.enabled:
        if models.matting is None:
            raise ValueError("matting is enabled but no rembg session was loaded (load_models(cfg))")
        return matting.apply(batch, crops, models.matting, cfg.matting)
    return batch.with_fields(crops=crops)


def apply(
    batch: FrameBatch, state: PreprocessState, models: PreprocessModels, cfg: PreprocessConfig
) -> tuple[FrameBatch, PreprocessState]:
    """One batch through the whole chain; returns the grown batch and the state for the next batch."""
    geo, state = geometry(batch, state, models, cfg)
    return with_geometry(batch, geo, models, cfg), state


def load(cfg: PreprocessConfig) -> PreprocessModels:
    """Alias of :func:`load_models` with the face model (the name the render pipeline uses)."""
    return load_models(cfg)


class Preprocessor:
    """Thin stateful wrapper for streaming: ``runner(batch) -> batch``, one video per instance.

    With ``cached`` (the per-video arrays of a pose cache hit, see :mod:`vidtriplane.cache`) it skips
    detection and pose and only cuts crops (and mattes). Otherwise it keeps every batch's geometry in
    ``self.geometry_parts`` so the caller can store it in the pose cache at the end.
    """

    def __init__(
        self, models: PreprocessModels, cfg: PreprocessConfig, cached: Optional[dict[str, np.ndarray]] = None
    ) -> None:
        self.models, self.cfg, self.cached = models, cfg, cached
        self.state = PreprocessState()
        self.geometry_parts: list[dict[str, np.ndarray]] = []

    def __call__(self, batch: FrameBatch) -> FrameBatch:
        if self.cached is not None:
            if int(batch.index[-1]) >= len(self.cached["labels"]):
                raise ValueError("the pose cache holds fewer frames than the input; delete the cache entry")
            geo = {k: v[batch.index] for k, v in self.cached.items()}
            c = self.state.counts
            self.state = replace(self.state, counts=(
                c[0] + len(batch), c[1] + int(geo["face_found"].sum()),
                c[2] + int(geo["held"].sum()), c[3] + int(geo["fallback"].sum())))
        else:
            geo, self.state = geometry(batch, self.state, self.models, self.cfg)
            self.geometry_parts.append(geo)
        return with_geometry(batch, geo, self.models, self.cfg)

    @property
    def counts(self) -> dict[str, int]:
        """Cumulative frame counts: frames, faces, held, fallback."""
        return dict(zip(("frames", "faces", "held", "fallback"), self.state.counts))


def start(models: PreprocessModels, cfg: PreprocessConfig) -> Preprocessor:
    """A fresh per-video :class:`Preprocessor` (tracking and smoothing state start empty)."""
    return Preprocessor(models, cfg)
