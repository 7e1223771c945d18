"""The local runner: every job in this process, one after another, models loaded once.

    summary = run_local(jobs, task, folder=True, overwrite=False)

Folder runs skip finished outputs (a file only ever appears under its final name when complete, so
"exists" means "finished"), keep going when a video fails (its error, and for an unexpected exception
its traceback, are recorded in the summary) and load the models only if there is work. A single job
raises its error to the caller instead. A second runner (``vidtriplane.runners.ray``) runs the same
:class:`Task` on a Ray cluster.
"""
from __future__ import annotations

import logging
import time
import traceback
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Protocol

from vidtriplane.errors import UsageError, VidtriplaneError
from vidtriplane.runners.jobs import Job

log = logging.getLogger(__name__)


class Task(Protocol):
    """What a runner runs: load models once, then one job at a time."""

    def load(self) -> Any:
        """Load the models (once per process or worker)."""

    def run(self, job: Job, models: Any) -> dict:
        """Do one job; return its report (JSON-able)."""


@dataclass
class JobResult:
    """How one job ended."""

    job: Job
    status: str
    """done, skipped or failed"""
    seconds: float = 0.0
    report: Optional[dict] = None
    error: Optional[str] = None
    traceback: Optional[str] = None
    """Only for unexpected exceptions (bugs)."""

    def to_dict(self) -> dict:
        return {"input": self.job.source, "output": self.job.target, "status": self.status,
                "seconds": round(self.seconds, 3), "report": self.report, "error": self.error,
                "traceback": self.traceback}


@dataclass
class RunSummary:
    """Every job's outcome."""

    results: list[JobResult] = field(default_factory=list)

    def count(self, status: str) -> int:
        return sum(r.status == status for r in self.results)

    @property
    def ok(self) -> bool:
        return self.count("failed") == 0

    def to_dict(self) -> dict:
        return {"done": self.count("done"), "skipped": self.count("skipped"), "failed": self.count("failed"),
                "jobs": [r.to_dict() for r in self.results]}


def failure(job: Job, exc: BaseException, seconds: float) -> JobResult:
    """A failed job: the message of a VidtriplaneError; for anything else (a bug) the traceback too."""
    if isinstance(exc, VidtriplaneError):
        return JobResult(job, "failed", seconds, error=str(exc))
    return JobResult(job, "failed", seconds, error=f"unexpected {type(exc).__name__}: {exc}",
                     traceback="".join(traceback.format_exception(exc)))


def log_failure(result: JobResult) -> None:
    """One error line for a failed job."""
    if result.traceback is None:
        log.error("%s failed: %s", result.job.source, result.error)
    else:
        log.error("%s failed with an %s (traceback in the report)", result.job.source, result.error)


def pending(jobs: list[Job], *, folder: bool, overwrite: bool) -> tuple[list[Job], list[Job]]:
    """(jobs to run, finished jobs to skip). A single job whose output exists needs ``overwrite``."""
    todo, skipped = [], []
    for job in jobs:
        existing = job.partly_done()
        if existing and not overwrite:
            if not folder:
                raise UsageError(f"output {existing[0]} exists; pass --overwrite to replace it")
            if job.finished():
                skipped.append(job)
                continue
        todo.append(job)
    return todo, skipped


def to_run(jobs: list[Job], summary: RunSummary, *, folder: bool, overwrite: bool) -> list[Job]:
    """The jobs to run (see :func:`pending`); the finished ones go into ``summary`` as skipped."""
    todo, skipped = pending(jobs, folder=folder, overwrite=overwrite)
    summary.results.extend(JobResult(job, "skipped") for job in skipped)
    if skipped:
        log.info("%d of %d outputs are already finished; skipping them (--overwrite redoes them)",
                 len(skipped), len(jobs))
    if not todo:
        log.info("nothing to do")
    return todo


def run_local(jobs: list[Job], task: Task, *, folder: bool, overwrite: bool,
              on_result: Callable[[JobResult], None] | None = None) -> RunSummary:
    """Run ``jobs`` here; see the module docstring."""
    summary = RunSummary()
    todo = to_run(jobs, summary, folder=folder, overwrite=overwrite)
    if not todo:
        return summary
    models = task.load()
    for i, job in enumerate(todo):
        if folder:
            log.info("[%d/%d] %s -> %s", i + 1, len(todo), job.source, job.target)
        start = time.perf_counter()
        try:
            report = task.run(job, models)
        except (KeyboardInterrupt, SystemExit, BrokenPipeError):
            raise
        except Exception as exc:  # bad input or a bug: record it and go on with the other videos
            if not folder:
                raise
            result = failure(job, exc, time.perf_counter() - start)
            log_failure(result)
        else:
            result = JobResult(job, "done", time.perf_counter() - start, report=report)
        summary.results.append(result)
        if on_result is not None:
            on_result(result)
    return summary


def log_summary(summary: RunSummary) -> None:
    """One summary line (a warning listing the failures when there were any)."""
    line = (f"summary: {summary.count('done')} done, {summary.count('skipped')} skipped (finished earlier), "
            f"{summary.count('failed')} failed")
    if summary.ok:
        log.info(line)
        return
    log.warning(line)
    for r in summary.results:
        if r.status == "failed":
            log.warning("  failed: %s: %s", r.job.source, r.error)
