"""The local runner: skip finished outputs, isolate failures (with tracebacks for bugs), load once."""
from __future__ import annotations

from pathlib import Path

import pytest

from vidtriplane.errors import UsageError, VidtriplaneError
from vidtriplane.runners.jobs import Job
from vidtriplane.runners.local import log_summary, run_local


class Task:
    def __init__(self, fail: dict[str, BaseException] | None = None) -> None:
        self.fail = fail or {}
        self.loads = 0
        self.ran: list[str] = []

    def load(self):
        self.loads += 1
        return "models"

    def run(self, job: Job, models) -> dict:
        assert models == "models"
        self.ran.append(Path(job.source).name)
        if Path(job.source).name in self.fail:
            raise self.fail[Path(job.source).name]
        Path(job.target).write_text("done")
        return {"frames": 3}


def jobs_in(tmp_path: Path, names: list[str]) -> list[Job]:
    return [Job(str(tmp_path / n), str(tmp_path / f"{n}.out"), (str(tmp_path / f"{n}.out"),)) for n in names]


def test_folder_run_skips_finished_isolates_failures_and_records_bug_tracebacks(tmp_path, caplog):
    jobs = jobs_in(tmp_path, ["a", "b", "c", "d"])
    Path(jobs[0].target).write_text("earlier")
    task = Task({"b": VidtriplaneError("b is corrupt"), "c": ZeroDivisionError("a bug")})
    summary = run_local(jobs, task, folder=True, overwrite=False)
    assert task.loads == 1 and task.ran == ["b", "c", "d"]
    assert [r.status for r in summary.results] == ["skipped", "failed", "failed", "done"]
    b, c = summary.results[1], summary.results[2]
    assert b.error == "b is corrupt" and b.traceback is None
    assert c.error == "unexpected ZeroDivisionError: a bug" and "ZeroDivisionError" in c.traceback
    assert "raise self.fail" in c.traceback
    assert not summary.ok and summary.to_dict()["failed"] == 2 and summary.to_dict()["done"] == 1
    assert Path(jobs[0].target).read_text() == "earlier"
    log_summary(summary)
    assert "1 done, 1 skipped (finished earlier), 2 failed" in caplog.text


def test_nothing_to_do_loads_no_model(tmp_path):
    jobs = jobs_in(tmp_path, ["a"])
    Path(jobs[0].target).write_text("x")
    task = Task()
    summary = run_local(jobs, task, folder=True, overwrite=False)
    assert task.loads == 0 and [r.status for r in summary.results] == ["skipped"]
    summary = run_local(jobs, task, folder=True, overwrite=True)
    assert task.loads == 1 and [r.status for r in summary.results] == ["done"]


def test_single_job_raises_and_needs_overwrite(tmp_path):
    jobs = jobs_in(tmp_path, ["a"])
    with pytest.raises(ZeroDivisionError):
        run_local(jobs, Task({"a": ZeroDivisionError()}), folder=False, overwrite=False)
    Path(jobs[0].target).write_text("x")
    with pytest.raises(UsageError, match="exists; pass --overwrite"):
        run_local(jobs, Task(), folder=False, overwrite=False)


def test_interrupts_are_never_swallowed(tmp_path):
    jobs = jobs_in(tmp_path, ["a", "b"])
    task = Task({"a": KeyboardInterrupt()})
    with pytest.raises(KeyboardInterrupt):
        run_local(jobs, task, folder=True, overwrite=False)
    assert task.ran == ["a"]
