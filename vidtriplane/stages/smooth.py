"""Temporal smoothing of per-frame geometry (crop squares, head rotation, landmarks) for video.

A One-Euro filter (Casiez et al., CHI 2012): an exponential low-pass whose cut-off rises with the
signal's speed, so a still head stops jittering while fast turns keep little lag. It is causal, so it
works on streams; ``lookahead`` > 0 first averages each sample with up to that many following samples
of the same batch (and as many preceding ones), trading that much latency for less jitter. State that
crosses batches is returned and passed back in explicitly.

Frames marked invalid (no face) are skipped: their output is NaN and the filter state is kept, unless
the gap grows beyond ``reset_after_gap`` frames, which restarts the filter at the next valid frame (a face
that reappears elsewhere jumps there instead of sliding).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import numpy as np


@dataclass(frozen=True)
class SmoothConfig:
    """One-Euro filter settings (shared by the crop and pose signals, which are made unitless first)."""

    enabled: bool = True
    """Smooth crop squares and head pose over time (video); off = every frame on its own."""
    min_cutoff: float = 1.0
    """Cut-off frequency in Hz when the head is still: lower = steadier, more lag on slow moves."""
    beta: float = 1.5
    """Speed coefficient: higher = less lag on fast moves, more jitter kept."""
    d_cutoff: float = 1.0
    """Cut-off in Hz of the speed estimate."""
    lookahead: int = 0
    """Frames of look-ahead within a batch (0 = strictly causal)."""
    reset_after_gap: int = 2
    """Restart the filter after this many consecutive frames without a face."""
    smooth_landmarks: bool = False
    """Also smooth the landmarks stored in the batch (they are not used for the crop or pose)."""

    def __post_init__(self) -> None:
        if self.min_cutoff <= 0 or self.d_cutoff <= 0 or self.beta < 0 or self.lookahead < 0:
            raise ValueError("smooth: min_cutoff and d_cutoff must be > 0, beta and lookahead >= 0")


@dataclass(frozen=True)
class SmoothState:
    """Filter memory for one signal."""

    value: Optional[np.ndarray] = None
    """Last filtered value [D] (None before the first valid sample)."""
    speed: Optional[np.ndarray] = None
    """Last filtered derivative [D] per second."""
    gap: int = 0
    """Invalid frames since the last valid one."""
    tail: Optional[np.ndarray] = None
    """The last ``lookahead`` raw valid samples [k, D] of the previous batch."""


def _alpha(cutoff: np.ndarray | float, rate: float) -> np.ndarray | float:
    tau = 1.0 / (2.0 * math.pi * cutoff)
    return 1.0 / (1.0 + tau * rate)


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


def one_euro(
    x: np.ndarray, valid: np.ndarray, state: SmoothState, fps: float, cfg: SmoothConfig = SmoothConfig()
) -> tuple[np.ndarray, SmoothState]:
    """Filter samples [N, D] (rows with ``valid`` False are skipped and returned as NaN)."""
    x = np.asarray(x, dtype=np.float64)
    valid = np.asarray(valid, dtype=bool) & np.isfinite(x).all(axis=1)
    out = np.full_like(x, np.nan)
    if not cfg.enabled:
        out[valid] = x[valid]
        return out, state
    rate = float(fps) if fps and fps > 0 else 30.0
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
            a = _alpha(cfg.min_cutoff + cfg.beta * np.abs(speed), rate)
            value = value + a * (xin[i] - value)
        gap = 0
        out[i] = value
    tail = state.tail
    if cfg.lookahead:
        raw = x[valid]
        prev = tail if tail is not None else np.zeros((0, x.shape[1]))
        tail = np.concatenate([prev, raw], axis=0)[-cfg.lookahead :]
    return out, SmoothState(value=value, speed=speed, gap=gap, tail=tail)


def crop_to_signal(params: np.ndarray) -> np.ndarray:
    """Crop squares (cx, cy, side) [N, 3] -> unitless (cx / side, cy / side, log side) for filtering."""
    p = np.asarray(params, dtype=np.float64)
    return np.stack([p[:, 0] / p[:, 2], p[:, 1] / p[:, 2], np.log(p[:, 2])], axis=1)


def signal_to_crop(sig: np.ndarray) -> np.ndarray:
    """Inverse of :func:`crop_to_signal`."""
    side = np.exp(sig[:, 2])
    return np.stack([sig[:, 0] * side, sig[:, 1] * side, side], axis=1)
