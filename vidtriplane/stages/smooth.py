"""Temporal smoothing of per-frame geometry (crop squares, head pose, landmarks) for video.

Two smoothers, chosen by ``smooth.mode`` (:func:`resolve_mode`: files -> offline, stdin -> causal):

* **offline** (the whole video is known): :func:`offline`, a Rauch-Tung-Striebel smoother over a
  constant-velocity model that raises its process noise where the head turns
  (:func:`vidtriplane.stages.kalman.smooth_adaptive`): a still head holds still, a turn is followed
  without delay, because every output sees the frames after it too.
* **causal** (live pipes): :func:`causal`, a One-Euro filter (Casiez et al., CHI 2012): an exponential
  low-pass whose cut-off rises with the signal's speed beyond what noise alone gives. It measured better than a causal Kalman filter at
  the same jitter (``benchmarks/preprocess_bench.py --parts smoother``). ``lookahead`` > 0 first averages
  each sample with up to that many following samples of the same batch (and as many preceding ones).

Both work in units of each dimension's measurement noise, estimated from the track itself
(:func:`vidtriplane.stages.kalman.robust_noise`; the causal filter over the last ``noise_window`` frames),
so one setting fits every signal and every video. State that crosses batches is passed explicitly.

Frames marked invalid (no face) are skipped: their output is NaN and the filter state is kept, unless
the gap grows to ``reset_after_gap`` frames, which restarts the filter at the next valid frame.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import numpy as np

from vidtriplane.config.preprocess import SmoothConfig
from vidtriplane.errors import UsageError
from vidtriplane.stages import kalman

@dataclass(frozen=True)
class Noise:
    """Bounds of a signal's measurement-noise std: ``floor`` (the least it is taken to be) and ``prior``
    (what a stream assumes before it has seen enough frames to estimate it), scalars or [D]."""

    floor: np.ndarray | float
    prior: np.ndarray | float


CROP_NOISE = Noise(floor=np.array([1e-4, 1e-4, 2e-4]), prior=np.array([2e-3, 1.5e-3, 3e-3]))
"""Crop signal (centre / frame height, log side): floor 0.07 px at 720p; prior about 1.4 px at 720p and
0.3 % of the side, like dlib's landmarks on a small face (``benchmarks/preprocess_bench.py``)."""
POSE_NOISE = Noise(floor=np.array([1e-3, 1e-3, 1e-3, 1e-4, 1e-4, 2e-4]),
                   prior=np.array([8e-3, 5e-3, 3e-3, 3e-4, 3e-4, 3e-3]))
"""Pose signal (rotation vector in radians, tx/tz, ty/tz, log tz): floor 0.06 degrees, prior about 0.4."""
LANDMARK_NOISE = Noise(floor=0.05, prior=0.5)
"""Landmark coordinates, in pixels."""


@dataclass(frozen=True)
class SmoothState:
    """Causal filter memory for one signal."""

    value: Optional[np.ndarray] = None
    """Last filtered value [D] (None before the first valid sample)."""
    speed: Optional[np.ndarray] = None
    """Last filtered derivative [D] per second."""
    gap: int = 0
    """Invalid frames since the last valid one."""
    tail: Optional[np.ndarray] = None
    """The last ``lookahead`` raw valid samples [k, D] of the previous batch."""
    history: Optional[np.ndarray] = None
    """The last ``noise_window`` raw samples [k, D] (NaN where invalid), for the noise estimate."""


class SmoothingModeError(UsageError, ValueError):
    """The smoothing mode cannot work on this input."""


def resolve_mode(cfg: SmoothConfig, source: str) -> str:
    """'offline', 'causal' or 'off' for an input ``source`` (a path, or '-' for stdin)."""
    live = str(source) == "-"
    if cfg.mode == "offline" and live:
        raise SmoothingModeError("smooth.mode=offline needs the whole video before the first crop, but stdin "
                                 "is read once; use smooth.mode=auto (causal for stdin) or give a file")
    if cfg.mode != "auto":
        return cfg.mode
    return "causal" if live else "offline"


def _alpha(cutoff: np.ndarray | float, rate: float) -> np.ndarray | float:
    tau = 1.0 / (2.0 * math.pi * cutoff)
    return 1.0 / (1.0 + tau * rate)


def noise_speed(rate: float, cfg: SmoothConfig) -> float:
    """Std of :func:`one_euro`'s speed estimate, in noise stds per second, for a still value plus white
    noise while the cut-off rests at ``min_cutoff``: the speed is ``rate`` times a low-pass (``d_cutoff``)
    of the innovation ``x[t] - value[t-1]``, itself ``x[t]`` less a low-pass (``min_cutoff``) of the
    samples before it; both are linear in the noise, so the std is the norm of the impulse response."""
    a, b = float(_alpha(cfg.min_cutoff, rate)), float(_alpha(cfg.d_cutoff, rate))
    n = int(np.ceil(np.log(1e-12) / np.log(1.0 - min(a, b)))) + 2
    innovation = np.concatenate([[1.0], -a * (1.0 - a) ** np.arange(n - 1)])
    speed = rate * b * np.convolve((1.0 - b) ** np.arange(n), innovation)[:n]
    return float(np.sqrt(np.sum(speed**2)))


def _lookahead(x: np.ndarray, valid: np.ndarray, tail: Optional[np.ndarray], k: int) -> np.ndarray:
    """Centred mean over up to k valid samples before and after each valid sample."""
    if k == 0:
        return x
    idx = np.flatnonzero(valid)
    vals = x[idx]
    prev = tail if tail is not None else np.zeros((0, x.shape[1]))
    seq = np.concatenate([prev, vals], axis=0)
    off = len(prev)
    out = x.copy()
    for j, i in enumerate(idx):
        lo, hi = max(0, off + j - k), min(len(seq), off + j + k + 1)
        out[i] = seq[lo:hi].mean(axis=0)
    return out


def _valid(x: np.ndarray, valid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(x, dtype=np.float64)
    return x, np.asarray(valid, dtype=bool) & np.isfinite(x).all(axis=1)


def _causal_noise(x: np.ndarray, valid: np.ndarray, history: Optional[np.ndarray], window: int,
                  noise: Noise) -> tuple[np.ndarray, np.ndarray]:
    """Per-frame noise stds [N, D] from each frame and the ``window`` frames before it; the new history."""
    seq = np.where(valid[:, None], x, np.nan)
    if history is not None:
        seq = np.concatenate([history, seq], axis=0)
    off = len(seq) - len(x)
    scale = np.empty_like(x)
    for i in range(len(x)):
        past = seq[max(0, off + i + 1 - window): off + i + 1]
        scale[i] = kalman.robust_noise(np.nan_to_num(past), np.isfinite(past).all(axis=1), noise.floor, noise.prior)
    return scale, seq[-window:]


def one_euro(
    x: np.ndarray, valid: np.ndarray, state: SmoothState, fps: float, cfg: SmoothConfig = SmoothConfig(),
    scale: np.ndarray | float = 1.0,
) -> tuple[np.ndarray, SmoothState]:
    """One-Euro filter of samples [N, D] (rows with ``valid`` False are skipped and returned as NaN).

    ``beta`` applies to the speed divided by ``scale`` (scalar, [D] or per frame [N, D]), less
    ``speed_deadzone`` times :func:`noise_speed` (what noise alone gives).
    """
    x, valid = _valid(x, valid)
    out = np.full_like(x, np.nan)
    scale = np.broadcast_to(np.asarray(scale, np.float64), x.shape)
    rate = float(fps) if fps and fps > 0 else 30.0
    deadzone = cfg.speed_deadzone * noise_speed(rate, cfg)
    xin = _lookahead(x, valid, state.tail, cfg.lookahead)
    value, speed, gap = state.value, state.speed, state.gap
    for i in range(len(x)):
        if not valid[i]:
            gap += 1
            continue
        if value is None or gap >= cfg.reset_after_gap:
            value, speed = xin[i].copy(), np.zeros_like(xin[i])
        else:
            d = (xin[i] - value) * rate
            speed = speed + _alpha(cfg.d_cutoff, rate) * (d - speed)
            a = _alpha(cfg.min_cutoff + cfg.beta * np.maximum(np.abs(speed) / scale[i] - deadzone, 0.0), rate)
            value = value + a * (xin[i] - value)
        gap = 0
        out[i] = value
    tail = state.tail
    if cfg.lookahead:
        prev = tail if tail is not None else np.zeros((0, x.shape[1]))
        tail = np.concatenate([prev, x[valid]], axis=0)[-cfg.lookahead :]
    return out, SmoothState(value=value, speed=speed, gap=gap, tail=tail, history=state.history)


def causal(x: np.ndarray, valid: np.ndarray, state: SmoothState, fps: float, cfg: SmoothConfig,
           noise: Noise) -> tuple[np.ndarray, SmoothState]:
    """The causal smoother: One-Euro with ``beta`` per (online-estimated) noise std; state across batches."""
    x, valid = _valid(x, valid)
    scale, history = _causal_noise(x, valid, state.history, cfg.noise_window, noise)
    out, state = one_euro(x, valid, state, fps, cfg, scale * cfg.measurement_noise)
    return out, SmoothState(value=state.value, speed=state.speed, gap=state.gap, tail=state.tail, history=history)


def offline(x: np.ndarray, valid: np.ndarray, fps: float, cfg: SmoothConfig, noise: Noise) -> np.ndarray:
    """The offline smoother over a whole sequence [N, D] (NaN where invalid)."""
    x, valid = _valid(x, valid)
    if not valid.any():
        return np.full_like(x, np.nan)
    std = kalman.robust_noise(x, valid, noise.floor, noise.prior) * cfg.measurement_noise
    rate = float(fps) if fps and fps > 0 else 30.0
    return kalman.smooth_adaptive(x, valid, rate, std, cfg.process_noise, cfg.maneuver_sigma, cfg.maneuver_gain,
                                  reset_after=cfg.reset_after_gap)


def crop_to_signal(params: np.ndarray, height: float) -> np.ndarray:
    """Crop squares (cx, cy, side) [N, 3] of a frame ``height`` pixels high -> (cx / height, cy / height,
    log side) for filtering: resolution-free, and the centre does not move when only the side is noisy
    (a centre divided by the side would pick up the side's noise times the centre's distance from the
    frame's corner)."""
    p = np.asarray(params, dtype=np.float64)
    return np.stack([p[:, 0] / height, p[:, 1] / height, np.log(p[:, 2])], axis=1)


def signal_to_crop(sig: np.ndarray, height: float) -> np.ndarray:
    """Inverse of :func:`crop_to_signal`."""
    return np.stack([sig[:, 0] * height, sig[:, 1] * height, np.exp(sig[:, 2])], axis=1)
