"""The ``vidtriplane evaluate`` configuration (``kind: evaluate``); nothing heavy is imported.

The protocol is the official one (``tpn:scripts/inference.py`` + ``tpn:metrics/metrics.py``): aligned
crops resized to 256, same-view reconstruction scored with MSE on [-1, 1], AlexNet LPIPS, MS-SSIM and
CurricularFace ID similarity; novel views rendered at fixed absolute yaws and scored with ID against the
input; 96 + 96 depth samples.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from vidtriplane.config.render import ModelConfig

NOVEL_VIEW_YAWS = (-0.8, -0.6, -0.4, -0.2, 0.2, 0.4, 0.6, 0.8)
"""Absolute yaws (radians) of the novel-view ID table: the paper's -0.8 .. 0.8 range in steps of 0.2."""


@dataclass(frozen=True)
class EvalConfig:
    """Everything ``vidtriplane evaluate`` does."""

    model: ModelConfig = ModelConfig()
    """The TriPlaneNet to evaluate (registry, generated, or a checkpoint file such as best.pt)."""
    yaws: tuple[float, ...] = NOVEL_VIEW_YAWS
    """Novel-view yaws for the ID table (absolute, radians, pitch 0, like the official inference)."""
    depth_samples: int = 96
    """Coarse samples per ray (the official inference doubles the checkpoint's 48)."""
    importance_samples: int = 96
    """Importance samples per ray."""
    sampling: Literal["deterministic", "stochastic"] = "deterministic"
    """Depth sampling of the renders (stochastic = the official renderer's jitter)."""
    cttr: bool = False
    """One cascaded test-time refinement pass (v1)."""
    size: int = 256
    """Images are compared at size x size (the official ``Resize((256, 256))``)."""
    id_model: Literal["curricularface", "ir-se50"] = "curricularface"
    """ID metric backbone: CurricularFace IR-101 (the official metric) or ArcFace IR-SE-50 (the ID loss's)."""
    id_fallback: bool = True
    """Use IR-SE-50 when the CurricularFace weights are missing (said in the output)."""
    strips: bool = False
    """Write OUT_DIR/strips/NAME.png: input | same view | novel views."""
    batch_size: int = 4
    """Images per batch."""
    device: str = "auto"
    """auto (cuda if available), cpu, cuda, cuda:1."""
    workers: int = 2
    """DataLoader worker processes reading the images."""

    def __post_init__(self) -> None:
        if self.batch_size < 1 or self.size < 16 or self.workers < 0:
            raise ValueError("batch_size must be >= 1, size >= 16 and workers >= 0")
        if self.depth_samples < 2 or self.importance_samples < 0:
            raise ValueError("depth_samples must be >= 2 and importance_samples >= 0")


__all__ = ["NOVEL_VIEW_YAWS", "EvalConfig"]
