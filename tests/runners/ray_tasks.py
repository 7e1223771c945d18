"""Render tasks that misbehave on purpose, for the Ray runner's fault tests (imported by the workers).

A crash is the worker process ending at once (``os._exit``), as when it is killed or runs out of memory,
at a known point: when it starts the chosen unit. ``marker`` makes it happen once (the file is created by
the first crash; a retried unit finds it and runs normally); ``always`` makes the unit kill every worker
that tries it. No sleeps: the unit itself is the synchronisation point.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from vidtriplane.errors import VidtriplaneError
from vidtriplane.runners.render import RenderTask


@dataclass(frozen=True)
class CrashingTask(RenderTask):
    """Kills its worker when it starts segment ``segment`` or the whole-video unit of ``video``."""

    marker: str = ""
    segment: int = -1
    video: str = ""
    always: bool = False

    def _crash(self) -> None:
        if self.always or not Path(self.marker).exists():
            Path(self.marker).touch()
            os._exit(1)

    def run(self, job, models, on_frames=None):
        if Path(job.source).name == self.video:
            self._crash()
        return super().run(job, models, on_frames)

    def render_segment(self, job, models, plan, index, on_frames=None):
        if index == self.segment:
            self._crash()
        return super().render_segment(job, models, plan, index, on_frames)


class BrokenSegment(VidtriplaneError):
    """A segment that fails with an ordinary error (its worker lives on)."""


@dataclass(frozen=True)
class FailingSegmentTask(RenderTask):
    """Segment ``segment`` raises :class:`BrokenSegment`; the others render normally."""

    segment: int = -1

    def render_segment(self, job, models, plan, index, on_frames=None):
        if index == self.segment:
            raise BrokenSegment(f"segment {index} is broken on purpose")
        return super().render_segment(job, models, plan, index, on_frames)


@dataclass(frozen=True)
class PausingTask(RenderTask):
    """Segment ``segment`` writes a byte to the fifo ``sync`` and waits for one on the fifo ``hold``, so a
    test can signal the driver while that segment is being rendered."""

    segment: int = -1
    sync: str = ""
    hold: str = ""

    def render_segment(self, job, models, plan, index, on_frames=None):
        if index == self.segment:
            with open(self.sync, "wb") as f:
                f.write(b"!")
            with open(self.hold, "rb") as f:
                f.read(1)
        return super().render_segment(job, models, plan, index, on_frames)
