"""Presentation timestamps that strictly increase, repaired with the smallest change that keeps every frame.

Broken inputs (screen recorders, concatenated clips, cameras that restart their clock) carry frame
timestamps that repeat or go backwards. Muxers refuse such video (``Invalid argument ... returned 22``)
or write two frames at one instant, so the reader and the writer both pass their timestamps through
:class:`MonotonicPts`, which keeps every frame in its order and moves a repeated or backwards timestamp
to just after the previous one (``min_step`` ticks later), leaving every good timestamp untouched.

    fix = MonotonicPts()
    [fix(p) for p in (0, 40, 40, 120, 80, 160)]   # -> [0, 40, 41, 120, 121, 160]; fix.repaired == 2
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from typing import Optional


@dataclass
class MonotonicPts:
    """Makes a stream of integer timestamps strictly increasing; counts the frames it moved."""

    min_step: int = 1
    """Smallest gap (in ticks) between two timestamps handed out; a closer one is moved to ``last + min_step``."""
    last: Optional[int] = None
    """The last timestamp handed out."""
    repaired: int = 0
    """How many timestamps were moved so far."""

    def __call__(self, pts: int) -> int:
        pts = int(pts)
        if self.last is not None and pts < self.last + self.min_step:
            pts = self.last + self.min_step
            self.repaired += 1
        self.last = pts
        return pts


def min_step(time_base: Fraction, container_tick: Optional[Fraction]) -> int:
    """Ticks of ``time_base`` that make two timestamps distinct once a muxer rounds them to ``container_tick``.

    Matroska stores milliseconds whatever the stream's time base, so two frames 1/90000 s apart would
    share a timestamp there: the gap must be at least one container tick.
    """
    if container_tick is None or container_tick <= time_base:
        return 1
    return math.ceil(container_tick / time_base)


def repair_message(count: int, total: int, where: str) -> str:
    """The one warning a reader or writer gives about repaired timestamps."""
    return (f"{where}: {count} of {total} frame timestamps repeated or went backwards; each was moved to "
            "just after the previous frame (every frame is kept, in its input order)")
