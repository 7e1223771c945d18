"""The Ray runner: a run's jobs spread over Ray workers, with the outputs a local run writes.

    summary = run_ray(jobs, task, folder=True, overwrite=False, options=RayOptions(workers=4))

* **Workers**: ``options.workers`` actors, each reserving ``gpus_per_worker`` GPUs and ``cpus_per_worker``
  CPUs, each loading the task's models once (:class:`~vidtriplane.runners.ray_worker.Worker`). Ray is
  started here unless an address (``options.address`` or ``$RAY_ADDRESS``) names a cluster to join.
* **Units**: a folder's videos are whole units; a single long video (or, with ``segment_frames``, any
  video longer than that) is planned on a worker, rendered in segments by all of them and stitched here
  into one file identical to a local run's (:mod:`vidtriplane.runners.segments`).
* **Resume**: finished outputs are skipped as in a local run; finished segments of an unfinished video
  are kept in its work folder and skipped on the next run.
* **Faults**: a worker that dies is restarted by Ray (models loaded again) and its unit is run again, up
  to ``max_retries`` times; a unit that fails (bad input, a bug, or a worker that keeps dying) fails its
  job only, with its error in the summary, and every other job goes on. Inputs and outputs must be on
  storage every worker sees at the same path (plain paths; ``s3://`` URLs are not supported).
* **Progress**: one line on stderr with the frames of all workers, frames/s and units done/failed;
  :class:`RaySummary` adds per-unit and per-worker figures to the folder report.
"""
from __future__ import annotations

import logging
import shutil
import sys
import threading
import time
from collections import Counter, deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from vidtriplane.errors import VidtriplaneError
from vidtriplane.runners.engine import RayOptions, require_ray
from vidtriplane.runners.jobs import Job
from vidtriplane.runners.local import JobResult, RunSummary, failure, log_failure, to_run
from vidtriplane.runners.ray_cluster import connect, exit_code_of
from vidtriplane.runners.ray_pool import Pool
from vidtriplane.runners.ray_worker import Unit

log = logging.getLogger(__name__)


class UnitFailed(VidtriplaneError):
    """The one job of a single-video run failed on a worker (the message is its error)."""


@dataclass
class RaySummary(RunSummary):
    """A RunSummary with the Ray run's per-unit and per-worker figures."""

    units: list[dict] = field(default_factory=list)
    workers: list[dict] = field(default_factory=list)
    seconds: float = 0.0
    """Wall time from connecting to Ray to the last output."""
    startup_seconds: float = 0.0
    """Connecting (or starting Ray) and starting the workers, until the first one had its models."""

    def to_dict(self) -> dict:
        frames = sum(u["frames"] for u in self.units if u["kind"] != "plan" and u["status"] == "done")
        data = super().to_dict()
        data["engine"] = {"name": "ray", "seconds": round(self.seconds, 3), "frames": frames,
                          "fps": round(frames / self.seconds, 3) if self.seconds else 0.0,
                          "startup_seconds": round(self.startup_seconds, 3), "workers": self.workers,
                          "units": self.units}
        return data


@dataclass
class _JobState:
    job: Job
    start: float
    plan: Any = None
    plan_ref: Any = None
    todo: set[int] = field(default_factory=set)
    reports: dict[int, dict] = field(default_factory=dict)
    done: bool = False


class _Driver:
    """Schedules units on idle workers, retries units of dead workers, stitches, keeps the figures."""

    def __init__(self, ray, task: Any, options: RayOptions, summary: RaySummary, *, folder: bool,
                 overwrite: bool) -> None:
        self.ray, self.task, self.options, self.summary = ray, task, options, summary
        self.folder, self.overwrite = folder, overwrite
        self.queue: deque[Unit] = deque()
        self.inflight: dict[Any, tuple[int, Unit]] = {}
        self.polls: dict[Any, int] = {}
        self.live: dict[int, int] = {}  # frames of the unit in progress, per worker
        self.attempts: Counter = Counter()
        self.jobs: dict[str, _JobState] = {}
        self.stitcher = ThreadPoolExecutor(1, thread_name_prefix="vidtriplane-stitch")
        self.stitching: dict[Future, _JobState] = {}
        self.stop = threading.Event()  # abandons a stitch in progress when the run is interrupted
        self.frames = 0
        self.results: list[JobResult] = []
        self.pool: Optional[Pool] = None

    # ------------------------------------------------------------------------------------------
    # units

    def segmentable(self, job: Job) -> bool:
        seg = self.options.segment_frames
        return (hasattr(self.task, "render_segment") and seg != 0 and job.source != "-"
                and (seg is not None or not self.folder))

    def first_units(self, job: Job, workers: int) -> list[Unit]:
        from vidtriplane.config.base import dump
        from vidtriplane.runners.segments import load_plan, plan_key, work_folder

        state = self.jobs[job.target] = _JobState(job, time.perf_counter())
        if not self.segmentable(job):
            return [Unit("video", job)]
        folder = work_folder(job.target)
        if self.overwrite and folder.exists():
            shutil.rmtree(folder)
        key = plan_key(job, dump(self.task.cfg), self.options.segment_frames)
        plan = load_plan(folder, key)
        if plan is None:
            return [Unit("plan", job, key=key, segment_frames=self.options.segment_frames, workers=workers)]
        return self.segment_units(state, plan)

    def segment_units(self, state: _JobState, plan) -> list[Unit]:
        from vidtriplane.runners.segments import finished_segment, work_folder

        state.plan, state.plan_ref = plan, self.ray.put(plan)
        units = []
        for i in range(len(plan.segments)):
            report = finished_segment(work_folder(state.job.target), i)
            unit = Unit("segment", state.job, index=i, count=len(plan.segments))
            if report is None:
                state.todo.add(i)
                units.append(unit)
            else:  # finished by an earlier run
                state.reports[i] = report
                self.record(unit, None, {"status": "skipped", "seconds": 0.0, "frames": report["frames"]})
        if not state.todo:
            self.start_stitch(state)
        return units

    def record(self, unit: Unit, slot: Optional[int], out: dict) -> None:
        fps = out["frames"] / out["seconds"] if out["seconds"] else 0.0
        self.summary.units.append({
            "unit": unit.label, "kind": unit.kind, "input": unit.job.source, "output": unit.job.target,
            "segment": unit.index, "worker": slot, "host": out.get("host"), "status": out["status"],
            "seconds": round(out["seconds"], 3), "frames": out["frames"], "fps": round(fps, 3),
            "attempts": self.attempts[unit.id] + 1, "error": out.get("error")})

    # ------------------------------------------------------------------------------------------
    # outcomes

    def finish(self, state: _JobState, result: JobResult) -> None:
        state.done = True
        self.queue = deque(u for u in self.queue if u.job.target != state.job.target)
        self.results.append(result)
        if result.status == "failed":
            log_failure(result)
        else:
            log.info("done: %s -> %s (%.1f s)", state.job.source, state.job.target, result.seconds)

    def fail(self, state: _JobState, unit: Unit, error: str, traceback: Optional[str] = None) -> None:
        if unit.kind != "video":
            error = f"{unit.label}: {error}"
        self.finish(state, JobResult(state.job, "failed", time.perf_counter() - state.start, error=error,
                                     traceback=traceback))

    def start_stitch(self, state: _JobState) -> None:
        reports = [state.reports[i] for i in range(len(state.plan.segments))]
        units = [u for u in self.summary.units if u["output"] == state.job.target]
        extra = {"engine": "ray", "units": units, "workers": self.pool.table()}  # figures so far: all its units
        future = self.stitcher.submit(self.task.stitch, state.job, state.plan, reports, extra, self.stop)
        self.stitching[future] = state

    def collect_stitches(self) -> None:
        for future in [f for f in self.stitching if f.done()]:
            state = self.stitching.pop(future)
            seconds = time.perf_counter() - state.start
            try:
                report = future.result()
            except Exception as exc:
                result = failure(state.job, exc, seconds)
                result.error = f"stitching the segments: {result.error}"
                self.finish(state, result)
                continue
            report["seconds"], report["fps"] = round(seconds, 3), round(report["frames"] / seconds, 3)
            self.finish(state, JobResult(state.job, "done", seconds, report=report))

    def unit_done(self, ref) -> None:
        slot, unit = self.inflight.pop(ref)
        self.live.pop(slot, None)
        state = self.jobs[unit.job.target]
        try:
            out = self.ray.get(ref)
        except self.ray.exceptions.RayError as exc:
            self.worker_lost(slot, unit, state, exc)
            return
        self.pool.idle.append(slot)
        stats = self.pool.stats[slot]
        stats["units"] += 1
        stats["busy_seconds"] += out["seconds"]
        if unit.kind != "plan":
            stats["frames"] += out["frames"]
            if out["status"] == "done":
                self.frames += out["frames"]
        self.record(unit, slot, out)
        if state.done:
            return
        if out["status"] == "failed":
            self.fail(state, unit, out["error"], out.get("traceback"))
        elif unit.kind == "video":
            self.finish(state, JobResult(unit.job, "done", time.perf_counter() - state.start, report=out["report"]))
        elif unit.kind == "plan":
            plan = out["report"]
            self.queue.extendleft(reversed(self.segment_units(state, plan) if plan else [Unit("video", unit.job)]))
        else:
            state.reports[unit.index] = out["report"]
            state.todo.discard(unit.index)
            if not state.todo:
                self.start_stitch(state)

    def worker_lost(self, slot: int, unit: Unit, state: _JobState, exc: BaseException) -> None:
        """The worker died with ``unit`` in hand: Ray restarts it; the unit runs again or fails."""
        self.pool.lost(slot)
        self.attempts[unit.id] += 1
        tries = self.attempts[unit.id]
        reason = f"{type(exc).__name__}: its process ended (killed, out of memory or crashed)"
        _discard_partials(unit)
        if state.done:
            return
        if tries <= self.options.max_retries:
            log.warning("worker %d died while running %s (%s); running it again (retry %d of %d)", slot,
                        unit.label, reason, tries, self.options.max_retries)
            self.queue.appendleft(unit)
            return
        out = {"status": "failed", "seconds": 0.0, "frames": 0,
               "error": f"the worker running it died {tries} times ({reason}); giving up"}
        self.record(unit, slot, out)
        self.fail(state, unit, out["error"])

    # ------------------------------------------------------------------------------------------
    # the loop

    def run(self, todo: list[Job], start: float) -> None:
        import contextlib

        from tqdm import tqdm
        from tqdm.contrib.logging import logging_redirect_tqdm

        # as many workers as there are units to start with (a video in segments has work for all of them)
        wanted = 1 << 30 if any(self.segmentable(job) for job in todo) else len(todo)
        self.pool = Pool(self.ray, self.task, self.options, wanted)
        for job in todo:
            self.queue.extend(self.first_units(job, len(self.pool.actors)))
        show = self.options.progress
        bar = tqdm(unit="frame", file=sys.stderr, disable=not show, desc="ray", dynamic_ncols=True,
                   mininterval=0.5 if sys.stderr.isatty() else 10.0)
        try:
            with logging_redirect_tqdm() if show else contextlib.nullcontext():  # log lines above the bar
                self.loop(bar, start)
        except BaseException as exc:
            self.stop.set()
            for slot, unit in self.inflight.values():  # stop the work in progress, discard its files
                self.ray.kill(self.pool.actors[slot], no_restart=True)
                _discard_partials(unit)
            if isinstance(exc, SystemExit) and exit_code_of(exc) is not None:
                raise SystemExit(exit_code_of(exc)) from None  # the exit code of the signal, as locally
            raise
        finally:
            bar.close()
            self.stitcher.shutdown(wait=True)

    def loop(self, bar, start: float) -> None:
        """Until every unit and stitch is done: hand out units, collect results, show progress."""
        ray = self.ray
        last_poll, warned = 0.0, False
        while self.queue or self.inflight or self.stitching:
            while self.queue and self.pool.idle:
                slot, unit = self.pool.idle.popleft(), self.queue.popleft()
                ref = self.pool.actors[slot].run.remote(unit, self.jobs[unit.job.target].plan_ref)
                self.inflight[ref] = (slot, unit)
            self.pool.tick()
            waiting = list(self.inflight) + list(self.pool.starting)
            done, _ = ray.wait(waiting, num_returns=1, timeout=0.25) if waiting else ([], [])
            if not waiting:
                time.sleep(0.05)  # only stitches, or workers being restarted: wait for them
            for ref in done:
                if ref in self.pool.starting:
                    self.pool.answered(ref)
                    if self.pool.idle and not self.summary.startup_seconds:
                        self.summary.startup_seconds = time.perf_counter() - start
                else:
                    self.unit_done(ref)
            self.collect_stitches()
            if time.perf_counter() - last_poll > 0.5:
                last_poll = time.perf_counter()
                self.poll()
                self.show(bar)
            if not warned and len(self.pool.starting) == len(self.pool.actors) and last_poll - start > 120:
                warned = True
                log.warning("no Ray worker has started after 2 minutes; does the cluster have %g CPUs and %g GPUs "
                            "free for one?", self.pool.cpus_per_worker, self.pool.gpus_per_worker)
        self.show(bar)

    def poll(self) -> None:
        """Ask the busy workers how far their units are (answers arrive by the next poll)."""
        for ref, slot in list(self.polls.items()):
            ready, _ = self.ray.wait([ref], timeout=0)
            if ready:
                del self.polls[ref]
                try:
                    kind, frames = self.ray.get(ref)
                    self.live[slot] = frames if kind in ("video", "segment") else 0
                except self.ray.exceptions.RayError:
                    self.live[slot] = 0
        asked = set(self.polls.values())
        for slot, _ in self.inflight.values():
            if slot not in asked:
                self.polls[self.pool.actors[slot].progress.remote()] = slot

    def show(self, bar) -> None:
        """The progress line: frames of all workers (tqdm adds frames/s), units done/failed/queued, workers."""
        frames = self.frames + sum(self.live.get(slot, 0) for slot, _ in self.inflight.values())
        units = self.summary.units
        done = sum(u["status"] in ("done", "skipped") and u["kind"] != "plan" for u in units)
        failed = sum(u["status"] == "failed" for u in units)
        bar.set_postfix_str(f"units {done} done, {failed} failed, {len(self.queue)} queued; workers "
                            f"{len(self.inflight)}/{len(self.pool.actors)} busy", refresh=False)
        bar.update(max(0, frames - bar.n))


def _discard_partials(unit: Unit) -> None:
    """Remove the temporary files a killed worker left (a finished file is never touched)."""
    from vidtriplane.io.writer import partial_path
    from vidtriplane.runners.segments import work_folder

    if unit.kind == "video":
        paths = [partial_path(Path(p)) for p in unit.job.outputs]
    elif unit.kind == "segment":
        paths = list(work_folder(unit.job.target).glob(f".seg-{unit.index:05d}*.partial.*"))
    else:
        paths = []
    for path in paths:
        if path.is_dir():  # a dataset folder being written (preprocess)
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)


def run_ray(jobs: list[Job], task: Any, *, folder: bool, overwrite: bool, options: RayOptions = RayOptions()
            ) -> RaySummary:
    """Run ``jobs`` on Ray workers; see the module docstring. A single job's failure is raised."""
    summary = RaySummary()
    todo = to_run(jobs, summary, folder=folder, overwrite=overwrite)
    if not todo:
        return summary
    ray = require_ray()
    start = time.perf_counter()
    started = connect(ray, options)
    driver = _Driver(ray, task, options, summary, folder=folder, overwrite=overwrite)
    try:
        driver.run(todo, start)
    finally:
        if driver.pool is not None:
            summary.workers = driver.pool.table()
            for actor in driver.pool.actors:
                ray.kill(actor, no_restart=True)
        if started:
            ray.shutdown()
    order = {job.target: i for i, job in enumerate(todo)}
    summary.results.extend(sorted(driver.results, key=lambda r: order[r.job.target]))
    summary.seconds = time.perf_counter() - start
    failed = [r for r in summary.results if r.status == "failed"]
    if failed and not folder:
        raise UnitFailed(failed[0].error)
    return summary


def log_workers(summary: RaySummary) -> None:
    """One line per worker: units, frames, busy time, frames/s, model load time, deaths."""
    data = summary.to_dict()["engine"]
    log.info("ray: %d frames in %.1f s (%.2f frames/s; start-up %.1f s)", data["frames"], data["seconds"],
             data["fps"], data["startup_seconds"])
    for w in summary.workers:
        log.info("  worker %d (%s): %d units, %d frames, %.1f s busy, %.2f frames/s, models loaded in %.1f s%s",
                 w["worker"], w["host"] or "?", w["units"], w["frames"], w["busy_seconds"], w["fps"],
                 w["load_seconds"], f", died {w['deaths']} times" if w["deaths"] else "")
