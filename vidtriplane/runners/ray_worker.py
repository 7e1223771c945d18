"""What runs inside a Ray worker: one unit of work at a time, models loaded once per worker.

A :class:`Unit` is a whole video (``video``), the planning of a long video (``plan``: batch size, frame
times, geometry pass; see :mod:`vidtriplane.runners.segment_render`) or one of its segments
(``segment``). :class:`Worker` is a plain class; the Ray runner turns it into an actor. Every Python error
of a unit comes back as a result (the message, plus the traceback of a bug), so only a worker that dies
(killed, out of memory, a crash in native code) reaches the driver as a Ray error.
"""
from __future__ import annotations

import logging
import os
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from vidtriplane.errors import VidtriplaneError
from vidtriplane.runners.jobs import Job
from vidtriplane.runners.local import failure

#: environment variables forwarded to the workers (caches, offline mode, the matting model's folder)
FORWARDED_ENV = ("VIDTRIPLANE_HOME", "VIDTRIPLANE_CACHE", "VIDTRIPLANE_OFFLINE", "U2NET_HOME", "XDG_CACHE_HOME")


class NotShared(VidtriplaneError):
    """A path the driver sees that a worker does not: inputs and outputs need shared storage."""


@dataclass(frozen=True)
class Unit:
    """One piece of work for a worker."""

    kind: str
    """video (a whole job), plan (cut a long video; geometry pass) or segment (frames of a planned video)."""
    job: Job
    index: int = -1
    """The segment's number."""
    count: int = 0
    """How many segments the video has."""
    key: str = ""
    """plan: what the plan is made for (see ``segments.plan_key``)."""
    segment_frames: Optional[int] = None
    """plan: the requested segment length (None: automatic)."""
    workers: int = 1
    """plan: workers in the pool (the automatic segment length depends on it)."""

    @property
    def id(self) -> tuple[str, str, int]:
        return (self.job.target, self.kind, self.index)

    @property
    def label(self) -> str:
        name = Path(self.job.source).name
        if self.kind == "segment":
            return f"{name} [segment {self.index + 1}/{self.count}]"
        return f"{name} [plan]" if self.kind == "plan" else name


class Worker:
    """Loads the task's models once; runs units; reports its progress (see the module docstring)."""

    def __init__(self, task: Any, slot: int, log_level: int, env: dict[str, str]) -> None:
        os.environ.update(env)
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter(f"vidtriplane[worker {slot}]: %(levelname)s: %(message)s"))
        logging.getLogger().handlers[:] = [handler]
        logging.getLogger().setLevel(log_level)
        self.task, self.slot = task, slot
        self.kind, self.frames = "", 0
        self.error: Optional[BaseException] = None
        start = time.perf_counter()
        try:
            self.models = task.load()
        except Exception as exc:  # reported by info() and by every unit, never a dead actor
            self.models, self.error = None, exc
        self.load_seconds = time.perf_counter() - start

    def info(self) -> dict:
        """Where this worker runs, how long its models took to load, and its load error if any."""
        error = None
        if self.error is not None:
            error = {"message": str(self.error), "exit_code": getattr(self.error, "exit_code", 1),
                     "type": type(self.error).__name__}
        return {"slot": self.slot, "host": socket.gethostname(), "pid": os.getpid(),
                "load_seconds": round(self.load_seconds, 3), "error": error}

    def progress(self) -> tuple[str, int]:
        """(kind of the unit in progress, frames it has done so far)."""
        return self.kind, self.frames

    def _count(self, n: int) -> None:
        self.frames += n

    def run(self, unit: Unit, plan: Any = None) -> dict:
        """Do one unit; returns {status, report | error (+ traceback), seconds, frames, host, pid}."""
        self.kind, self.frames = unit.kind, 0
        start = time.perf_counter()
        where = {"host": socket.gethostname(), "pid": os.getpid()}
        try:
            if self.error is not None:
                raise self.error
            if not Path(unit.job.source).exists():
                raise NotShared(f"{unit.job.source} does not exist on the worker's machine ({where['host']}); "
                                "inputs and outputs must be on storage every Ray node shares, at the same path")
            task = self.task
            if unit.kind == "video":
                report = task.run(unit.job, self.models, on_frames=self._count)
            elif unit.kind == "plan":
                report = task.plan_segments(unit.job, self.models, key=unit.key, segment_frames=unit.segment_frames,
                                            workers=unit.workers, on_frames=self._count)
            else:
                report = task.render_segment(unit.job, self.models, plan, unit.index, on_frames=self._count)
        except Exception as exc:
            result = failure(unit.job, exc, time.perf_counter() - start)
            return {"status": "failed", "error": result.error, "traceback": result.traceback,
                    "seconds": result.seconds, "frames": self.frames, **where}
        finally:
            self.kind = ""
        return {"status": "done", "report": report, "seconds": time.perf_counter() - start, "frames": self.frames,
                **where}
