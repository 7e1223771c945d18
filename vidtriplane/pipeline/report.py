"""What one video run did (``--report`` writes it as JSON) and the per-stage busy-time clock."""
from __future__ import annotations

import contextlib
import json
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Iterator, Optional

import numpy as np

from vidtriplane.types import FrameBatch


@dataclass
class RunReport:
    """What one video run did."""

    input: str
    outputs: dict[str, str]
    frames: int = 0
    faces_found: Optional[int] = None
    held: Optional[int] = None
    """Frames without a face that kept the last good crop and pose."""
    fallback: Optional[int] = None
    """Frames that got the fallback crop/pose (no face for longer than preprocess.hold_frames)."""
    batch_size: int = 0
    device: str = ""
    weights: str = ""
    seconds: float = 0.0
    fps: float = 0.0
    stage_seconds: dict[str, float] = field(default_factory=dict)
    """Busy time per stage (stages overlap in threads, so these add up to more than ``seconds``)."""
    repaired_timestamps: int = 0
    """Input timestamps that repeated or went backwards and were moved forward in the output."""
    preprocess: Optional[dict] = None
    """Face preprocessing: counts, the tracker's counts (detections, redetections, tracked, flow frames) and
    the jitter of the raw and smoothed crop / pose axes (``stages/steadiness.py``), with matting the crops the
    network ran on and those whose alpha was carried; None for aligned input."""

    def count(self, batch: FrameBatch) -> None:
        """Add one composed batch's frame, face, held and fallback counts."""
        self.frames += len(batch)
        if batch.face_found is not None:
            self.faces_found = (self.faces_found or 0) + int(np.sum(batch.face_found))
        if batch.held is not None:
            self.held = (self.held or 0) + int(np.sum(batch.held))
        if "preprocess" in batch.extras:
            self.fallback = (self.fallback or 0) + int(batch.extras["preprocess"].get("fallbacks", 0))

    def to_dict(self) -> dict:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)


class StageClock:
    """Thread-safe busy-time accumulator per stage: ``with clock("render"): ...``."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def __call__(self, stage: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            with self._lock:
                self.seconds[stage] = self.seconds.get(stage, 0.0) + time.perf_counter() - start

    def rounded(self) -> dict[str, float]:
        with self._lock:
            return {k: round(v, 3) for k, v in self.seconds.items()}
