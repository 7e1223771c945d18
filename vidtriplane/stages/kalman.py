"""Constant-velocity Kalman filter and Rauch-Tung-Striebel smoother for per-frame geometry signals.

Every dimension of a signal [N, D] is its own 1-D track with state (value, velocity): a constant-velocity
model driven by white-noise acceleration of spectral density ``accel**2`` per second**3 (units of the signal
per second squared), observed with white measurement noise of std ``noise``. Per frame of ``dt = 1 / fps``
seconds (Bar-Shalom, Li & Kirubarajan, *Estimation with Applications to Tracking*, section 6.2.2):

    F = [[1, dt], [0, 1]]        Q = accel**2 * [[dt**3 / 3, dt**2 / 2], [dt**2 / 2, dt]]
    H = [1, 0]                   R = noise**2

:func:`filter_causal` is the forward pass (each output uses only the past: for live streams, with the state
passed from batch to batch). :func:`smooth_offline` adds the backward RTS pass (Rauch, Tung & Striebel,
AIAA J. 3(8), 1965): each output uses the whole sequence, so a still head holds still and a turn is
followed without the delay a causal filter has.

Frames marked invalid (no face) are prediction steps: nothing is observed and their output is NaN. After
``reset_after`` or more invalid frames in a row the track restarts at the next valid frame (a face that
comes back elsewhere jumps there instead of sliding).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

START_SPEED = 1.0
"""Prior std of the velocity at a track's start, in signal units per second (the first frames decide)."""


@dataclass(frozen=True)
class KalmanState:
    """Forward-filter memory of one signal, carried between the batches of a stream."""

    mean: Optional[np.ndarray] = None
    """[D, 2] value and velocity after the last frame (None before the first valid frame)."""
    cov: Optional[np.ndarray] = None
    """[D, 2, 2] covariance of ``mean``."""
    gap: int = 0
    """Invalid frames since the last valid one."""


def _model(dt: float, accel: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Transition F [2, 2] and process noise Q [N, D, 2, 2] for per-frame accelerations [N, D]."""
    f = np.array([[1.0, dt], [0.0, 1.0]])
    q = np.array([[dt**3 / 3.0, dt**2 / 2.0], [dt**2 / 2.0, dt]])
    return f, (np.asarray(accel, np.float64) ** 2)[..., None, None] * q


def _start(z: np.ndarray, noise: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mean = np.stack([z, np.zeros_like(z)], axis=1)
    cov = np.zeros((len(z), 2, 2))
    cov[:, 0, 0] = noise**2
    cov[:, 1, 1] = START_SPEED**2
    return mean, cov


def _update(mean: np.ndarray, cov: np.ndarray, z: np.ndarray, r: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Measurement update of [D, 2] / [D, 2, 2] with observations z [D] of variance r [D]."""
    s = cov[:, 0, 0] + r
    gain = cov[:, :, 0] / s[:, None]  # [D, 2]
    mean = mean + gain * (z - mean[:, 0])[:, None]
    cov = cov - gain[:, :, None] * cov[:, None, 0, :]
    return mean, 0.5 * (cov + np.swapaxes(cov, 1, 2))


def _forward(x: np.ndarray, valid: np.ndarray, state: KalmanState, f: np.ndarray, q: np.ndarray,
             noise: np.ndarray, reset_after: int):
    """The forward pass; returns predicted and filtered means/covs per frame, segment starts and the state."""
    n, d = x.shape
    r = noise**2
    pred_m, pred_c = np.full((n, d, 2), np.nan), np.full((n, d, 2, 2), np.nan)
    filt_m, filt_c = np.full((n, d, 2), np.nan), np.full((n, d, 2, 2), np.nan)
    starts = np.zeros(n, dtype=bool)
    mean, cov, gap = state.mean, state.cov, state.gap
    for i in range(n):
        if mean is not None and not (valid[i] and gap >= reset_after):
            mean = mean @ f.T
            cov = f @ cov @ f.T + q[i]
        if not valid[i]:
            gap += 1
            if mean is not None:
                filt_m[i], filt_c[i] = mean, cov
            continue
        if mean is None or gap >= reset_after:
            mean, cov = _start(x[i], noise)
            starts[i] = True
            pred_m[i], pred_c[i] = mean, cov
        else:
            pred_m[i], pred_c[i] = mean, cov
            mean, cov = _update(mean, cov, x[i], r)
        gap = 0
        filt_m[i], filt_c[i] = mean, cov
    return pred_m, pred_c, filt_m, filt_c, starts, KalmanState(mean=mean, cov=cov, gap=gap)


def _checked(x: np.ndarray, valid: np.ndarray, noise, accel) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"expected a signal of shape [N, D], got {x.shape}")
    valid = np.asarray(valid, dtype=bool) & np.isfinite(x).all(axis=1)
    noise = np.broadcast_to(np.asarray(noise, np.float64), (x.shape[1],)).copy()
    accel = np.broadcast_to(np.asarray(accel, np.float64), x.shape).copy()
    if (noise <= 0).any() or (accel <= 0).any():
        raise ValueError("Kalman noise and acceleration stds must be positive")
    return x, valid, noise, accel


def filter_causal(x: np.ndarray, valid: np.ndarray, state: KalmanState, fps: float, noise, accel,
                  reset_after: int = 2) -> tuple[np.ndarray, KalmanState]:
    """Forward Kalman filter of samples [N, D]; invalid rows come back NaN.

    ``noise``: measurement std, scalar or [D]; ``accel``: process acceleration std, scalar, [D] or [N, D].
    """
    x, valid, noise, accel = _checked(x, valid, noise, accel)
    f, q = _model(1.0 / fps, accel)
    _, _, filt_m, _, _, state = _forward(x, valid, state, f, q, noise, reset_after)
    out = filt_m[:, :, 0].copy()
    out[~valid] = np.nan
    return out, state


def smooth_offline(x: np.ndarray, valid: np.ndarray, fps: float, noise, accel, reset_after: int = 2) -> np.ndarray:
    """RTS smoother over a whole sequence [N, D] (each restart after a long gap is its own track).

    ``noise`` and ``accel`` as in :func:`filter_causal` (a per-frame ``accel`` [N, D] lets a track move
    faster where the head turns).
    """
    x, valid, noise, accel = _checked(x, valid, noise, accel)
    f, q = _model(1.0 / fps, accel)
    pred_m, pred_c, filt_m, filt_c, starts, _ = _forward(x, valid, KalmanState(), f, q, noise, reset_after)
    out_m = filt_m.copy()
    # backward pass; a track's first frame (a restart) does not look back across the gap before it
    for i in range(len(x) - 2, -1, -1):
        nxt = i + 1
        if np.isnan(filt_m[i]).any() or np.isnan(out_m[nxt]).any() or starts[nxt]:
            continue
        p_pred = f @ filt_c[i] @ f.T + q[nxt]  # [D, 2, 2]: prediction of frame i + 1 from frame i
        gain = filt_c[i] @ f.T @ np.linalg.inv(p_pred)
        out_m[i] = filt_m[i] + np.einsum("dij,dj->di", gain, out_m[nxt] - filt_m[i] @ f.T)
    out = out_m[:, :, 0]
    out[~valid] = np.nan
    return out


def robust_noise(x: np.ndarray, valid: np.ndarray, floor, prior=None) -> np.ndarray:
    """Measurement-noise std per dimension [D] of a noisy track [N, D], from its second differences.

    For white noise of std s the second difference ``x[t+1] - 2 x[t] + x[t-1]`` has std ``sqrt(6) s``, while
    a head moving smoothly at video rates adds almost nothing to it; the median absolute deviation keeps
    the few frames of a fast turn out of the estimate. Only runs of three valid frames count; with fewer
    than 8 of them ``prior`` is returned (``floor`` when None); the estimate is at least ``floor``
    (``floor`` and ``prior``: scalar or [D]).
    """
    x = np.asarray(x, np.float64)
    floor = np.broadcast_to(np.asarray(floor, np.float64), (x.shape[1],))
    ok = valid[2:] & valid[1:-1] & valid[:-2] if len(x) >= 3 else np.zeros(0, bool)
    if ok.sum() < 8:
        return np.broadcast_to(np.asarray(floor if prior is None else prior, np.float64), (x.shape[1],)).copy()
    d2 = (x[2:] - 2.0 * x[1:-1] + x[:-2])[ok]
    mad = np.median(np.abs(d2 - np.median(d2, axis=0)), axis=0)
    return np.maximum(1.4826 * mad / np.sqrt(6.0), floor)


def _one_sided_scores(r: np.ndarray, valid: np.ndarray, window: int) -> np.ndarray:
    """max(|mean of r over the last w valid-or-not frames|, |over the next w|) * sqrt(count) per frame."""
    r = np.where(valid[:, None], r, 0.0)
    c = np.concatenate([np.zeros((1, r.shape[1])), np.cumsum(r, axis=0)])
    k = np.concatenate([[0], np.cumsum(valid)])
    n = len(r)
    idx = np.arange(n)
    lo, hi = np.maximum(0, idx - window + 1), np.minimum(n, idx + window)
    left = (c[idx + 1] - c[lo]) / np.sqrt(np.maximum(k[idx + 1] - k[lo], 1))[:, None]
    right = (c[hi] - c[idx]) / np.sqrt(np.maximum(k[hi] - k[idx], 1))[:, None]
    return np.maximum(np.abs(left), np.abs(right))


def smooth_adaptive(x: np.ndarray, valid: np.ndarray, fps: float, noise, process: float, maneuver_sigma: float,
                    maneuver_gain: float, reset_after: int = 2, window: int = 3, step: float = 3.0) -> np.ndarray:
    """RTS smoother that lets the track move fast where the head turns: steady when still, no lag in turns.

    A plain smoother heavy enough to hold a still head rounds a fast turn off over several frames. So:
    1. Smooth with acceleration std ``process * noise`` (per second squared).
    2. Where the measurements stay on one side of that track for ``window`` frames before or after a frame
       by more than ``maneuver_sigma`` noise stds of their mean (a move the model did not follow), multiply
       the acceleration std of that frame and its two neighbours on each side by ``step``.
    3. Smooth again; repeat 2-3 until no frame is marked or the factor reaches ``maneuver_gain``. The
       factor grows only as far as the move needs: a slow nod a little, a fast turn by up to the gain.
    Returns the smoothed [N, D] (NaN where invalid).
    """
    x, valid, noise, _ = _checked(x, valid, noise, 1.0)
    base = np.broadcast_to(process * noise, x.shape)
    gain = np.ones(x.shape)
    out = smooth_offline(x, valid, fps, noise, base, reset_after)
    for _ in range(max(1, int(np.ceil(np.log(maneuver_gain) / np.log(step) - 1e-9)))):
        resid = np.where(valid[:, None], (x - np.nan_to_num(out)) / noise, 0.0)
        score = _one_sided_scores(resid, valid, window) > maneuver_sigma
        hit = score.copy()
        for shift in (1, 2):  # the frames next to a turn's edges change speed too
            hit[shift:] |= score[:-shift]
            hit[:-shift] |= score[shift:]
        hit &= gain < maneuver_gain
        if not hit.any():
            break
        gain[hit] = np.minimum(gain[hit] * step, maneuver_gain)
        out = smooth_offline(x, valid, fps, noise, base * gain, reset_after)
    return out
