"""The Ray runner's workers: how many, what each reserves, which are idle, and bringing back dead ones.

Each worker is a :class:`~vidtriplane.runners.ray_worker.Worker` actor that Ray restarts when its process
dies (``max_restarts=-1``; the models are loaded again). Ray itself never runs a unit twice
(``max_task_retries=0``): the driver decides that. A worker is handed units only once its ``info()`` has
answered, at the start and again after each restart, so no unit waits on a worker that is not there.
"""
from __future__ import annotations

import logging
import os
import time
from collections import deque
from typing import Any

from vidtriplane.errors import UsageError, VidtriplaneError
from vidtriplane.runners.engine import RayOptions
from vidtriplane.runners.ray_worker import FORWARDED_ENV, Worker

log = logging.getLogger(__name__)

#: seconds between two questions to a worker that Ray is restarting
PROBE_INTERVAL = 0.5


class WorkerError(VidtriplaneError):
    """The Ray workers could not start or load the models (the message is theirs)."""


class Pool:
    """The worker actors and their figures (units, frames, busy time, model load time, deaths)."""

    def __init__(self, ray, task: Any, options: RayOptions, wanted: int) -> None:
        resources = ray.cluster_resources()
        cpus, gpus = resources.get("CPU", 0.0), resources.get("GPU", 0.0)
        gpw = options.gpus_per_worker if options.gpus_per_worker is not None else (1.0 if gpus else 0.0)
        cpw = options.cpus_per_worker
        if gpw > gpus:
            raise UsageError(f"--gpus-per-worker {gpw:g}: the Ray cluster has {gpus:g} GPUs; use "
                             "--gpus-per-worker 0 for CPU workers")
        fit = int(cpus // cpw) if cpw else 1 << 30
        if gpw:
            fit = min(fit, int(gpus // gpw))
        n = options.workers or max(1, min(fit, wanted))
        if n > fit:
            log.warning("%d workers asked for, but the cluster has room for %d now (%g CPUs, %g GPUs); the others "
                        "start when resources free up", n, fit, cpus, gpus)
        self.ray, self.gpus_per_worker, self.cpus_per_worker = ray, gpw, cpw
        env = {k: os.environ[k] for k in FORWARDED_ENV if k in os.environ}
        cls = ray.remote(num_cpus=cpw, num_gpus=gpw, max_restarts=-1, max_task_retries=0, max_concurrency=2)(Worker)
        self._new = lambda slot: cls.remote(task, slot, options.log_level, env)
        self.actors = [self._new(i) for i in range(n)]
        self.starting: dict[Any, int] = {}
        """info() calls in flight: a worker starting, or coming back after a death."""
        self.idle: deque[int] = deque()
        self.recovering: set[int] = set()
        self._later: dict[int, float] = {}
        self.stats = [{"worker": i, "host": "", "pid": 0, "load_seconds": 0.0, "deaths": 0, "units": 0, "frames": 0,
                       "busy_seconds": 0.0} for i in range(n)]
        for slot in range(n):
            self.probe(slot)

    def probe(self, slot: int) -> None:
        self.starting[self.actors[slot].info.remote()] = slot

    def lost(self, slot: int) -> None:
        """The worker's process died: wait for Ray to restart it before it gets another unit."""
        self.stats[slot]["deaths"] += 1
        self.recovering.add(slot)
        self.probe(slot)

    def tick(self) -> None:
        """Ask again the restarting workers whose wait is over."""
        now = time.perf_counter()
        for slot, when in list(self._later.items()):
            if when <= now:
                del self._later[slot]
                self.probe(slot)

    def answered(self, ref) -> None:
        """A worker's info() came back: it is idle now (a load error, or a worker that cannot start at all,
        ends the run)."""
        ray = self.ray
        slot = self.starting.pop(ref)
        try:
            info = ray.get(ref)
        except ray.exceptions.ActorUnavailableError:  # Ray is restarting it
            self._later[slot] = time.perf_counter() + PROBE_INTERVAL
            return
        except ray.exceptions.RayError as exc:
            if slot in self.recovering:  # gone for good (e.g. its node): a new worker takes the slot
                log.warning("worker %d is gone; starting a new one in its place", slot)
                self.actors[slot] = self._new(slot)
                self.probe(slot)
                return
            last = (str(exc).strip().splitlines() or [type(exc).__name__])[-1]
            raise WorkerError(f"a Ray worker could not start ({last}); is this version of vidtriplane installed "
                              "on every node?") from None
        if info["error"] is not None:
            error = WorkerError(f"worker {slot} could not load the models: {info['error']['message']}")
            error.exit_code = info["error"]["exit_code"]
            raise error
        self.recovering.discard(slot)
        self.stats[slot].update(host=info["host"], pid=info["pid"], load_seconds=info["load_seconds"])
        self.idle.append(slot)

    @property
    def waiting(self) -> bool:
        return bool(self.starting or self._later)

    def table(self) -> list[dict]:
        """Per-worker figures for the report."""
        out = []
        for s in self.stats:
            fps = s["frames"] / s["busy_seconds"] if s["busy_seconds"] else 0.0
            out.append({**s, "busy_seconds": round(s["busy_seconds"], 3), "fps": round(fps, 3),
                        "gpus": self.gpus_per_worker, "cpus": self.cpus_per_worker})
        return out
