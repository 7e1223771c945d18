"""How steady the crops and poses are: jitter per axis (raw vs smoothed), and the lag behind a head turn.

The axes: crop centre x and y (frame pixels), crop scale (percent of the side), head yaw and pitch
(degrees; the rotation vector's y and x components, which equal yaw and pitch for the moderate angles of
a face). **Jitter** is the mean absolute second difference over runs of three frames with a face: white
measurement noise of std s gives about ``1.95 s`` (the mean of |N(0, 6 s^2)|), a head moving smoothly at
video rates almost nothing, so on real footage without ground truth it still separates shake from motion.
With known ground truth (synthetic clips), :func:`step_error` is the mean absolute difference between
the frame-to-frame steps of a track and those of the truth, and :func:`turn_lag` the delay, in frames,
with which a track crosses the levels of a turn.
"""
from __future__ import annotations

from typing import Mapping

import numpy as np

AXES = ("centre_x_px", "centre_y_px", "scale_pct", "yaw_deg", "pitch_deg")


def head_track(n: int = 300, *, seed: int = 0, noise: float = 1.0, sway: float = 8.0, turn: float = 40.0,
               turn_start: int = 150, turn_frames: int = 3, fps: float = 30.0) -> tuple[np.ndarray, np.ndarray]:
    """A synthetic 1-D head track with known truth, for tests and benchmarks: (truth [n], measured [n]).

    Sway of about ``sway`` (three sines at 0.15, 0.4 and 0.9 Hz), plus a smoothstep turn of ``turn`` over
    ``turn_frames`` frames from ``turn_start`` (0: a step), plus white noise N(0, noise**2).
    """
    rng = np.random.default_rng(seed)
    t = np.arange(n) / fps
    truth = np.zeros(n)
    for f in (0.15, 0.4, 0.9):
        truth += sway * rng.uniform(0.3, 1.0) / (1 + f) * np.sin(2 * np.pi * f * t + rng.uniform(0, 2 * np.pi))
    s = np.clip((np.arange(n) - turn_start + 1) / max(turn_frames, 1), 0.0, 1.0)
    truth += turn * (3 * s**2 - 2 * s**3)
    return truth, truth + rng.normal(0.0, noise, n)


def axes(params: np.ndarray, pose_signal: np.ndarray) -> np.ndarray:
    """Crop squares (cx, cy, side) [N, 3] + pose signals [N, 6] (rotation vector, ...) -> [N, 5] in :data:`AXES`."""
    p = np.asarray(params, np.float64)
    rot = np.degrees(np.asarray(pose_signal, np.float64)[:, :3])
    return np.stack([p[:, 0], p[:, 1], 100.0 * np.log(p[:, 2]), rot[:, 1], rot[:, 0]], axis=1)


def jitter(values: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Mean absolute second difference per column of [N, K] over runs of 3 valid frames (NaN if none)."""
    v = np.asarray(values, np.float64)
    if len(v) < 3:
        return np.full(v.shape[1], np.nan)
    ok = valid[2:] & valid[1:-1] & valid[:-2] & np.isfinite(v).all(axis=1)[2:] & np.isfinite(v).all(axis=1)[:-2]
    if not ok.any():
        return np.full(v.shape[1], np.nan)
    return np.abs(v[2:] - 2.0 * v[1:-1] + v[:-2])[ok].mean(axis=0)


def step_error(track: np.ndarray, truth: np.ndarray, valid: np.ndarray | None = None) -> np.ndarray:
    """Mean |step of track - step of truth| per column of [N, K] (steps between consecutive valid frames)."""
    t, g = np.asarray(track, np.float64), np.asarray(truth, np.float64)
    ok = np.ones(len(t), bool) if valid is None else np.asarray(valid, bool)
    pair = ok[1:] & ok[:-1]
    return np.abs(np.diff(t, axis=0) - np.diff(g, axis=0))[pair].mean(axis=0)


def _crossings(y: np.ndarray, level: float, sign: float) -> np.ndarray:
    """Fractional frame positions where ``y`` passes ``level`` going in direction ``sign``."""
    d = sign * (np.asarray(y, np.float64) - level)
    i = np.flatnonzero((d[:-1] < 0) & (d[1:] >= 0))
    return i + (-d[i] / (d[i + 1] - d[i]))


def turn_lag(track: np.ndarray, truth: np.ndarray, start: int, stop: int, levels: int = 9) -> float:
    """Largest delay (frames) with which ``track`` [N] crosses the levels 10 .. 90 % of the move of ``truth``
    [N] from frame ``start`` to ``stop`` (positive = later than the truth; linear interpolation between
    frames; the track's crossing nearest to the truth's counts, inf when it never crosses)."""
    a, b = float(truth[start]), float(truth[stop])
    sign = 1.0 if b >= a else -1.0
    delays = []
    for f in np.linspace(0.1, 0.9, levels):
        level = a + f * (b - a)
        want = _crossings(truth[start:stop + 1], level, sign)
        if len(want) == 0:
            continue
        t = start + float(want[0])
        got = _crossings(track, level, sign)
        delays.append(float(got[np.argmin(np.abs(got - t))] - t) if len(got) else float("inf"))
    return float(max(delays)) if delays else 0.0


def summary(raw: np.ndarray, smoothed: np.ndarray, valid: np.ndarray, mode: str) -> dict:
    """Jitter of the raw and the smoothed axes [N, 5] and their ratio, as a JSON-able dict."""
    r, s = jitter(raw, valid), jitter(smoothed, valid)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = s / r

    def named(v: np.ndarray) -> dict:
        return {k: (None if not np.isfinite(x) else round(float(x), 4)) for k, x in zip(AXES, v)}

    return {"mode": mode, "frames_with_face": int(np.sum(valid)), "raw": named(r), "smoothed": named(s),
            "ratio": named(ratio)}


def tracker_counts(steps: Mapping[str, int]) -> dict:
    """The landmark tracker's counts in the report's names."""
    return {"detections": int(steps.get("detect", 0)), "redetections": int(steps.get("redetect", 0)),
            "tracked": int(steps.get("track", 0)), "flow": int(steps.get("flow", 0))}
