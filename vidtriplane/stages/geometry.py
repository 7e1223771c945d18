"""Per-frame geometry from landmarks: crop squares and head poses, smoothed, with held and fallback frames.

    geo, trace, state = from_landmarks(lms, size, fps, state, cfg, mode)

``mode`` is ``'causal'`` (a batch of a stream; the filters' state crosses batches), ``'offline'`` (the whole
video at once) or ``'off'``. ``geo`` holds the arrays of :data:`vidtriplane.cache.GEOMETRY` except
``confidence`` (plus ``pose_landmarks`` when the pose came from other landmarks than the crop, MTCNN with
dlib's 68 points); ``trace`` the raw and smoothed :data:`~vidtriplane.stages.steadiness.AXES` of frames
with a face, for the jitter report.

Frames without a face never disappear. For ``hold_frames`` frames after the last face, the last good
crop and pose are held (``held`` = True). After that, or before the first face, the fallback applies:
``fallback="hold"`` keeps holding the last good crop and pose indefinitely (or, before any face, uses
the centre crop), ``fallback="center"`` uses a centred square crop of side ``min(W, H)`` with a frontal
camera label. Either way the frame is counted in ``fallback``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

from vidtriplane.config.preprocess import PreprocessConfig
from vidtriplane.stages import align, pose, smooth, steadiness


@dataclass(frozen=True)
class GeometryState:
    """What crosses batch boundaries in a stream (offline runs start and end with a fresh one)."""

    crop_filter: smooth.SmoothState = smooth.SmoothState()
    pose_filter: smooth.SmoothState = smooth.SmoothState()
    landmark_filter: smooth.SmoothState = smooth.SmoothState()
    last_params: Optional[np.ndarray] = None
    """Crop square (cx, cy, side) of the last frame with a face."""
    last_pose: Optional[np.ndarray] = None
    """Head pose signal (rotvec, tx/tz, ty/tz, log tz) of the last frame with a face."""
    since_face: int = 0
    """Frames since the last face."""


def pose_signal(rot: np.ndarray, trans: np.ndarray) -> np.ndarray:
    """Rotation vectors [N, 3] + translations [N, 3] -> the smoothed signal (rotvec, tx/tz, ty/tz, log tz)."""
    tz = trans[:, 2:3]
    return np.concatenate([rot, trans[:, :2] / tz, np.log(np.abs(tz))], axis=1)


def signal_pose(sig: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Inverse of :func:`pose_signal`."""
    tz = np.exp(sig[:, 5:6])
    return sig[:, :3], np.concatenate([sig[:, 3:5] * tz, tz], axis=1)


def center_params(width: int, height: int) -> np.ndarray:
    """The centred square of side min(W, H)."""
    side = float(min(width, height))
    return np.array([(width - 1) / 2.0, (height - 1) / 2.0, side])


FRONTAL_SIGNAL = np.array([0.0, 0.0, 0.0, 0.0, 0.0, np.log(pose.FOCAL * 700.0 / 300.0)])


def _smooth(x: np.ndarray, valid: np.ndarray, state: smooth.SmoothState, fps: float, cfg: PreprocessConfig,
            mode: str, noise: smooth.Noise) -> tuple[np.ndarray, smooth.SmoothState]:
    if mode == "offline":
        return smooth.offline(x, valid, fps, cfg.smooth, noise), state
    if mode == "causal":
        return smooth.causal(x, valid, state, fps, cfg.smooth, noise)
    if mode == "off":
        return np.where(valid[:, None], x, np.nan), state
    raise ValueError(f"smoothing mode must be offline, causal or off, got {mode!r}")


def _hold(found: np.ndarray, params: np.ndarray, pose_sig: np.ndarray, state: GeometryState, size: tuple[int, int],
          cfg: PreprocessConfig) -> tuple[np.ndarray, np.ndarray, tuple]:
    """Fill frames without a face in place: hold, then fall back. Returns (held, fallback, memory)."""
    n = len(found)
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
            params[i], pose_sig[i] = center_params(*size), FRONTAL_SIGNAL
            fallback[i] = True
    return held, fallback, (last_params, last_pose, since)


def from_landmarks(
    lms: np.ndarray, size: tuple[int, int], fps: float, state: GeometryState, cfg: PreprocessConfig, mode: str,
    pose_lms: Optional[np.ndarray] = None,
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], GeometryState]:
    """Geometry of frames with landmarks [N, 68 or 5, 2] (NaN rows: no face) of ``size`` = (W, H); the head
    pose comes from ``pose_lms`` [N, 68, 2] when given (MTCNN's crop points + dlib's pose points); see the module."""
    n = len(lms)
    width, height = size
    found = np.isfinite(lms).all(axis=(1, 2))

    # 1. crop squares, smoothed (or the official integer crop, which is not smoothed)
    official = align.official_matrices(lms, width, height, cfg.align) if cfg.align.official_rounding else None
    crop_filter = state.crop_filter
    if official is not None:
        params = np.full((n, 3), np.nan)
        params[found] = align.params_of(official[found], cfg.align.out_size)
        raw_params = params.copy()
    else:
        raw_params = align.crop_params(lms, height, cfg.align)
        sig, crop_filter = _smooth(smooth.crop_to_signal(raw_params, height), found, crop_filter, fps, cfg, mode,
                                   smooth.CROP_NOISE)
        params = smooth.signal_to_crop(sig, height)

    # 2. head pose in the (smoothed) crop, smoothed
    mats = official if official is not None else align.crop_matrices(np.where(np.isfinite(params), params, 1.0), cfg.align)
    rot, trans = pose.estimate(lms if pose_lms is None else pose_lms, mats, cfg.align.out_size, cfg.pose)
    found &= np.isfinite(rot).all(axis=1)  # a failed pose counts as a frame without a face
    raw_pose = pose_signal(rot, trans)
    pose_sig, pose_filter = _smooth(raw_pose, found, state.pose_filter, fps, cfg, mode, smooth.POSE_NOISE)
    trace = {"raw": steadiness.axes(raw_params, raw_pose), "smoothed": steadiness.axes(params, pose_sig),
             "found": found.copy()}

    # 3. frames without a face: hold, then fall back
    held, fallback, (last_params, last_pose, since) = _hold(found, params, pose_sig, state, size, cfg)
    mats = align.crop_matrices(params, cfg.align)
    if official is not None:
        mats[found] = official[found]
    labels = pose.labels(*signal_pose(pose_sig), cfg.pose)

    # 4. the stored landmarks (optionally smoothed)
    out_lms = lms
    landmark_filter = state.landmark_filter
    if cfg.smooth.smooth_landmarks:
        flat, landmark_filter = _smooth(lms.reshape(n, -1), found, landmark_filter, fps, cfg, mode,
                                        smooth.LANDMARK_NOISE)
        out_lms = flat.reshape(lms.shape).astype(np.float32)

    new_state = GeometryState(crop_filter=crop_filter, pose_filter=pose_filter, landmark_filter=landmark_filter,
                              last_params=last_params, last_pose=last_pose, since_face=since)
    geo = {
        "landmarks": out_lms,
        "face_found": found,
        "held": held,
        "crop_matrix": mats.astype(np.float32),
        "labels": labels,
        "fallback": fallback,
    }
    if pose_lms is not None:
        geo["pose_landmarks"] = np.asarray(pose_lms, dtype=np.float32)
    return geo, trace, new_state
