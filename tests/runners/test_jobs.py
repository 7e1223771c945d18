"""Planning: jobs from files, folders and pipes; refusals that protect inputs and outputs."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from vidtriplane.runners.jobs import PlanError, UnwritableOutput, check_outputs_writable, check_writable, plan


def outputs_of(target: str) -> list[str]:
    return [target]


def two_views(target: str) -> list[str]:
    p = Path(target)
    return [str(p.with_name(f"{p.stem}_{v}{p.suffix}")) for v in ("a", "b")]


def test_file_folder_and_pipe_jobs(tmp_path):
    src = tmp_path / "in"
    (src / "sub").mkdir(parents=True)
    for name in ("x.mp4", "sub/y.mkv", ".hidden.mp4", "notes.txt"):
        (src / name).write_bytes(b"v")
    jobs, folder = plan(str(src), str(tmp_path / "out"), recursive=True, suffix=".mp4", outputs_of=outputs_of)
    assert folder
    assert [(Path(j.source).relative_to(src).as_posix(), Path(j.target).relative_to(tmp_path).as_posix())
            for j in jobs] == [("sub/y.mkv", "out/sub/y.mp4"), ("x.mp4", "out/x.mp4")]
    jobs, folder = plan(str(src), str(tmp_path / "out"), recursive=False, suffix=".nut", outputs_of=outputs_of)
    assert [Path(j.target).name for j in jobs] == ["x.nut"] and folder
    jobs, folder = plan("-", "-", recursive=False, suffix=".mp4", outputs_of=outputs_of)
    assert (jobs[0].source, jobs[0].target, jobs[0].outputs, folder) == ("-", "-", (), False)
    jobs, _ = plan(str(src / "x.mp4"), str(tmp_path / "o.mp4"), recursive=False, suffix=".mp4", outputs_of=two_views)
    assert [Path(p).name for p in jobs[0].outputs] == ["o_a.mp4", "o_b.mp4"]


def test_inputs_that_would_write_the_same_output_are_refused_before_anything_runs(tmp_path):
    src = tmp_path / "clips"
    src.mkdir()
    for name in ("a.mp4", "a.mkv", "b.mov", "b.webm", "c.mp4"):
        (src / name).write_bytes(b"v")
    with pytest.raises(PlanError) as err:
        plan(str(src), str(tmp_path / "rendered"), recursive=False, suffix=".mp4", outputs_of=outputs_of)
    message = str(err.value)
    assert "a.mkv and " in message and "a.mp4 ->" in message and "b.mov and" in message and "b.webm" in message
    assert "c.mp4" not in message
    assert not (tmp_path / "rendered").exists()


@pytest.mark.parametrize("case,message", [
    ("missing", "does not exist"),
    ("same_file", "is the input file"),
    ("file_to_folder", "is a folder"),
    ("folder_to_stdout", "cannot be written to stdout"),
    ("folder_to_file", "must be a folder"),
    ("empty_folder", "no videos"),
    ("folder_to_itself", "is the input folder; outputs mirror"),
    ("folder_to_its_parent", "holds the input folder"),
])
def test_refusals(tmp_path, case, message):
    video = tmp_path / "v.mp4"
    video.write_bytes(b"v")
    (tmp_path / "empty").mkdir()
    src, dst = str(video), str(tmp_path / "o.mp4")
    if case == "missing":
        src = str(tmp_path / "nope.mp4")
    elif case == "same_file":
        dst = src
    elif case == "file_to_folder":
        dst = str(tmp_path / "empty")
    elif case == "folder_to_stdout":
        src, dst = str(tmp_path / "empty"), "-"
    elif case == "folder_to_file":
        src = str(tmp_path)
    elif case == "empty_folder":
        src, dst = str(tmp_path / "empty"), str(tmp_path / "out")
    elif case == "folder_to_itself":  # the videos are there: the refusal must not say "no videos"
        src = dst = str(tmp_path)
    elif case == "folder_to_its_parent":
        (tmp_path / "empty" / "w.mp4").write_bytes(b"v")
        src, dst = str(tmp_path / "empty"), str(tmp_path)
    with pytest.raises(PlanError, match=message):
        plan(src, dst, recursive=False, suffix=".mp4", outputs_of=outputs_of)


def test_unwritable_locations_are_found_before_any_work(tmp_path):
    a_file = tmp_path / "f.txt"
    a_file.write_text("x")
    with pytest.raises(UnwritableOutput, match="is a file, not a folder"):
        check_writable(a_file / "out.mp4")
    check_writable(tmp_path / "new" / "deeper" / "out.mp4")  # creatable: fine, and nothing is created
    assert not (tmp_path / "new").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".vidtriplane-probe")]
    locked = Path("/sys/vidtriplane-test")  # not writable even for root
    if os.access("/sys", os.W_OK) and not locked.parent.is_dir():
        pytest.skip("no read-only location to test with")
    jobs, _ = plan("-", str(locked / "out.mp4"), recursive=False, suffix=".mp4", outputs_of=outputs_of)
    with pytest.raises(UnwritableOutput, match=r"/sys is not writable .*choose another output location"):
        check_outputs_writable(jobs)
