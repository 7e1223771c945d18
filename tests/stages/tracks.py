"""Synthetic head tracks with known truth: slow sway, one fast turn, white measurement noise."""
from __future__ import annotations

import numpy as np

FPS = 30.0


def head_track(n: int = 300, *, seed: int = 0, noise: float = 1.0, sway: float = 8.0, turn: float = 40.0,
               turn_start: int = 150, turn_frames: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """(truth [n], measured [n]): sway of about ``sway`` (three sines, 0.15-0.9 Hz) plus a smoothstep turn of
    ``turn`` over ``turn_frames`` frames from ``turn_start`` (0 frames: a step), plus N(0, noise**2)."""
    rng = np.random.default_rng(seed)
    t = np.arange(n) / FPS
    truth = np.zeros(n)
    for f in (0.15, 0.4, 0.9):
        truth += sway * rng.uniform(0.3, 1.0) / (1 + f) * np.sin(2 * np.pi * f * t + rng.uniform(0, 2 * np.pi))
    s = np.clip((np.arange(n) - turn_start + 1) / max(turn_frames, 1), 0.0, 1.0)
    truth += turn * (3 * s**2 - 2 * s**3)
    return truth, truth + rng.normal(0.0, noise, n)
