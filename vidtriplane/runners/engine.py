"""Which runner a command uses: ``--engine local`` (this process) or ``--engine ray`` (a Ray cluster).

    engine = Engine("ray", RayOptions(workers=4, gpus_per_worker=1))
    engine.check(jobs)                       # before any model loads: Ray installed, no stdin/stdout
    summary = engine.run(jobs, task, folder=True, overwrite=False)

Light to import (no ray, torch or av): the commands build it from their options.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Optional

from vidtriplane.errors import UsageError
from vidtriplane.runners.jobs import Job

ENGINES = ("local", "ray")
RAY_MISSING = "--engine ray needs Ray, which is not installed: pip install 'vidtriplane[ray]' (or 'ray>=2.50')"


class RayMissing(UsageError):
    """``--engine ray`` without Ray installed (exit code 2)."""


@dataclass(frozen=True)
class RayOptions:
    """How a run is spread over a Ray cluster."""

    address: Optional[str] = None
    """Cluster to join (``auto``, ``HOST:PORT``); None: ``$RAY_ADDRESS`` when set, else start Ray here."""
    workers: int = 0
    """Worker processes (each loads the models once); 0 = as many as the cluster's resources hold."""
    gpus_per_worker: Optional[float] = None
    """GPUs reserved per worker (fractions share a GPU); None = 1 when the cluster has GPUs, else 0."""
    cpus_per_worker: float = 1.0
    """CPUs reserved per worker (decode, preprocessing and encode threads run there)."""
    segment_frames: Optional[int] = None
    """Frames per segment of a long video; None = a single video is cut into two segments per worker
    (folders: whole videos); 0 = never cut."""
    max_retries: int = 2
    """How often a unit whose worker died is run again before it is reported as failed."""
    progress: bool = True
    """The aggregated progress line on stderr."""
    log_level: int = logging.WARNING
    """Level of the workers' log lines (forwarded to this terminal by Ray)."""


def require_ray():
    """The ``ray`` module, or :class:`RayMissing` saying how to install it."""
    try:
        import ray
    except ImportError:
        raise RayMissing(RAY_MISSING) from None
    return ray


@dataclass(frozen=True)
class Engine:
    """A runner and its options; ``run`` has the signature of ``run_local``."""

    name: str = "local"
    ray: RayOptions = field(default_factory=RayOptions)

    @property
    def local(self) -> bool:
        return self.name == "local"

    def check(self, jobs: list[Job]) -> None:
        """Refuse what this engine cannot run, before any work starts (usage errors, exit code 2)."""
        if self.local:
            return
        require_ray()
        if any(job.source == "-" or job.target == "-" for job in jobs):
            raise UsageError("--engine ray reads inputs and writes outputs as files on storage every worker "
                             "shares; stdin and stdout need --engine local")

    def run(self, jobs: list[Job], task, *, folder: bool, overwrite: bool):
        """Run ``jobs``; returns a RunSummary (a RaySummary, with per-worker figures, for Ray)."""
        if self.local:
            from vidtriplane.runners.local import run_local

            return run_local(jobs, task, folder=folder, overwrite=overwrite)
        from vidtriplane.runners.ray import run_ray

        return run_ray(jobs, task, folder=folder, overwrite=overwrite, options=self.ray)
