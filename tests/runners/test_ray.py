"""The Ray runner on a local Ray of 2 CPUs: the same outputs as ``--engine local`` (folders, and a long video
in segments), workers that die, units that fail, reruns that skip finished work.

Ray is started once for the module; the workers import this checkout (PYTHONPATH) and the test tasks of
``tests/runners/ray_tasks.py``. Tiny generated-weights model with the CLI tests' fast settings."""
from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from tests.io.media import make_video, probe
from tests.runners.media import FAST, FAST_FLAGS, assert_same_video, face_clip, pattern_clip
from tests.runners.ray_tasks import CrashingTask, FailingSegmentTask
from vidtriplane.cli import main
from vidtriplane.config import resolve
from vidtriplane.runners.engine import RayOptions
from vidtriplane.runners.jobs import Job, plan
from vidtriplane.runners.local import run_local
from vidtriplane.runners.ray import UnitFailed, run_ray
from vidtriplane.runners.render import RenderTask
from vidtriplane.runners.segments import work_folder

ray = pytest.importorskip("ray")
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module", autouse=True)
def cluster():
    old = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join([str(REPO)] + ([old] if old else []))  # the workers' imports
    ray.init(num_cpus=2, include_dashboard=False, logging_level=logging.WARNING,
             object_store_memory=128 << 20)
    yield
    ray.shutdown()
    if old is None:
        os.environ.pop("PYTHONPATH")
    else:
        os.environ["PYTHONPATH"] = old


def cli(*args: str):
    return CliRunner().invoke(main, list(args))


def aligned_task(**kwargs) -> RenderTask:
    cfg = resolve("render", pipeline="aligned", configs=["generated-tiny"], overrides=FAST)
    return RenderTask(cfg, progress=False, **kwargs)


def single(src: Path, out: Path) -> list[Job]:
    return [Job(str(src), str(out), (str(out),))]


TWO = RayOptions(workers=2, progress=False)


def test_folder_is_the_local_run_corrupt_clip_reported_rerun_skips(tmp_path):
    src = tmp_path / "in"
    for i in range(3):
        (src / ("sub" if i == 1 else "")).mkdir(parents=True, exist_ok=True)
        make_video(src / ("sub" if i == 1 else "") / f"clip{i}.mkv", n_frames=4 + i, width=64, height=64,
                   container="matroska", audio=i != 2, vfr=i == 0)
    (src / "broken.mp4").write_bytes(b"garbage" * 50)
    args = [str(src), "-r", "--pipeline", "aligned", *FAST_FLAGS, "--report"]
    local = cli("render", *args, "-o", str(tmp_path / "local"))
    result = cli("render", *args, "-o", str(tmp_path / "ray"), "--engine", "ray", "--workers", "2")
    assert local.exit_code == result.exit_code == 1, result.stderr  # broken.mp4 failed, the rest finished
    outputs = sorted(p.relative_to(tmp_path / "ray").as_posix() for p in (tmp_path / "ray").rglob("*.mp4"))
    assert outputs == ["clip0.mp4", "clip2.mp4", "sub/clip1.mp4"]
    for name in outputs:
        assert_same_video(tmp_path / "ray" / name, tmp_path / "local" / name)
    assert not [p for p in (tmp_path / "ray").rglob("*") if ".partial" in p.name]
    report = json.loads((tmp_path / "ray" / "vidtriplane-render.report.json").read_text())
    failed = [j for j in report["jobs"] if j["status"] == "failed"]
    assert [Path(j["input"]).name for j in failed] == ["broken.mp4"] and "cannot read" in failed[0]["error"]
    engine = report["engine"]
    assert report["done"] == 3 and engine["frames"] == 4 + 5 + 6
    assert len(engine["workers"]) == 2 and sum(w["units"] for w in engine["workers"]) == 4
    assert sum(w["frames"] for w in engine["workers"]) == 15 and all(w["load_seconds"] > 0 for w in engine["workers"])
    assert sorted(u["status"] for u in engine["units"]) == ["done", "done", "done", "failed"]
    mtimes = {name: (tmp_path / "ray" / name).stat().st_mtime_ns for name in outputs}
    again = cli("render", *args, "-o", str(tmp_path / "ray"), "--engine", "ray", "--workers", "2")
    assert again.exit_code == 1
    report = json.loads((tmp_path / "ray" / "vidtriplane-render.report.json").read_text())
    assert report["skipped"] == 3 and report["done"] == 0 and report["failed"] == 1
    assert mtimes == {name: (tmp_path / "ray" / name).stat().st_mtime_ns for name in outputs}


@pytest.mark.slow
def test_long_face_clip_in_three_segments_is_the_local_run(tmp_path, monkeypatch):
    """Default pipeline (tracking, smoothing, held frames across a segment start) on 60 frames."""
    pytest.importorskip("dlib")
    monkeypatch.setenv("VIDTRIPLANE_CACHE", str(tmp_path / "cache"))  # forwarded to the workers
    src = tmp_path / "talk.mp4"
    face_clip(src, 60, blank=(19, 20, 21))
    args = [str(src), "--pipeline", "default", *FAST_FLAGS, "--camera", "sway", "--report"]
    local = cli("render", *args, "-o", str(tmp_path / "local.mp4"), "--set", "runtime.pose_cache=false")
    assert local.exit_code == 0, local.stderr
    result = cli("render", *args, "-o", str(tmp_path / "ray.mp4"), "--engine", "ray", "--workers", "2",
                 "--segment-frames", "20")
    assert result.exit_code == 0, result.stderr
    assert_same_video(tmp_path / "ray.mp4", tmp_path / "local.mp4")
    report = json.loads((tmp_path / "ray.report.json").read_text())
    want = json.loads((tmp_path / "local.report.json").read_text())
    segments = [u for u in report["units"] if u["kind"] == "segment"]
    assert report["segments"] == 3 and [(u["frames"], u["status"]) for u in segments] == [(20, "done")] * 3
    assert sum(w["frames"] for w in report["workers"]) == 60 and len(report["workers"]) == 2
    assert (report["frames"], report["faces_found"], report["held"]) == (want["frames"], want["faces_found"],
                                                                         want["held"]) == (60, 57, 3)
    assert (tmp_path / "ray.config.yaml").exists() and not work_folder(tmp_path / "ray.mp4").exists()
    assert list((tmp_path / "cache" / "poses").glob("*.npz"))  # the geometry pass filled the pose cache


def test_a_worker_killed_mid_run_is_replaced_and_its_segment_run_again(tmp_path):
    src = tmp_path / "long.mp4"
    pattern_clip(src, 30, gop=5)
    task = aligned_task()
    run_local(single(src, tmp_path / "local.mp4"), task, folder=False, overwrite=False)
    crashing = CrashingTask(task.cfg, progress=False, marker=str(tmp_path / "crashed"), segment=1)
    options = RayOptions(workers=2, segment_frames=10, progress=False)
    summary = run_ray(single(src, tmp_path / "ray.mp4"), crashing, folder=False, overwrite=False, options=options)
    assert (tmp_path / "crashed").exists()  # the worker did die
    assert summary.ok and summary.results[0].report["segments"] == 3
    assert_same_video(tmp_path / "ray.mp4", tmp_path / "local.mp4")
    segment2 = [u for u in summary.units if u["kind"] == "segment" and u["segment"] == 1]
    assert [(u["status"], u["attempts"]) for u in segment2] == [("done", 2)]
    assert sum(w["deaths"] for w in summary.workers) == 1


def test_a_unit_that_keeps_killing_workers_fails_alone(tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    for i in range(2):
        make_video(src / f"c{i}.mkv", n_frames=3, width=64, height=64, container="matroska")
    task = CrashingTask(aligned_task().cfg, progress=False, save_config=False, video="c0.mkv", always=True,
                        marker=str(tmp_path / "crashed"))
    jobs, _ = plan(str(src), str(tmp_path / "out"), recursive=False, suffix=".mp4", outputs_of=task.outputs)
    options = RayOptions(workers=2, max_retries=1, progress=False)
    summary = run_ray(jobs, task, folder=True, overwrite=False, options=options)
    assert [r.status for r in summary.results] == ["failed", "done"]
    assert "died 2 times" in summary.results[0].error
    assert sum(w["deaths"] for w in summary.workers) == 2
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["c1.mp4"]  # nothing half-written


def test_a_failed_segment_fails_its_video_and_a_rerun_skips_finished_segments(tmp_path):
    src = tmp_path / "long.mp4"
    pattern_clip(src, 30, gop=5)
    task = aligned_task()
    run_local(single(src, tmp_path / "local.mp4"), task, folder=False, overwrite=False)
    options = RayOptions(workers=2, segment_frames=10, progress=False)
    out = tmp_path / "ray.mp4"
    with pytest.raises(UnitFailed, match=r"long.mp4 \[segment 3/3\]: segment 2 is broken on purpose"):
        run_ray(single(src, out), FailingSegmentTask(task.cfg, progress=False, segment=2), folder=False,
                overwrite=False, options=options)
    assert not out.exists() and (work_folder(out) / "seg-00000.json").exists()
    kept = (work_folder(out) / "seg-00001.nut").stat().st_mtime_ns
    summary = run_ray(single(src, out), task, folder=False, overwrite=False, options=options)
    assert [(u["segment"], u["status"]) for u in summary.units if u["kind"] == "segment"][:2] == [(0, "skipped"),
                                                                                               (1, "skipped")]
    assert [u["kind"] for u in summary.units].count("plan") == 0  # the plan was kept too
    assert kept > 0
    assert_same_video(out, tmp_path / "local.mp4")


def test_preprocess_folder_of_videos_is_the_local_run(tmp_path):
    pytest.importorskip("dlib")
    src = tmp_path / "talks"
    (src / "more").mkdir(parents=True)
    face_clip(src / "a.mp4", 5)
    face_clip(src / "more" / "b.mp4", 4, blank=(1,))
    base = ["preprocess", str(src), "-r", "--no-cache", "-q"]
    assert cli(*base, "-o", str(tmp_path / "local")).exit_code == 0
    result = cli(*base, "-o", str(tmp_path / "ray"), "--engine", "ray", "--workers", "2")
    assert result.exit_code == 0, result.stderr
    for name, n in [("a", 5), ("more/b", 4)]:
        got, want = tmp_path / "ray" / name, tmp_path / "local" / name
        labels = json.loads((got / "dataset.json").read_text())["labels"]
        assert len(labels) == n and labels == json.loads((want / "dataset.json").read_text())["labels"]
        assert all((got / p).read_bytes() == (want / p).read_bytes() for p, _ in labels)


def test_ray_refuses_stdin_and_local_refuses_ray_options(tmp_path):
    result = cli("render", "-", "-o", str(tmp_path / "o.mp4"), "--engine", "ray", *FAST_FLAGS)
    assert result.exit_code == 2 and "stdin and stdout need --engine local" in result.stderr
    result = cli("render", "x.mp4", "-o", str(tmp_path / "o.mp4"), "--workers", "2")
    assert result.exit_code == 2 and "--workers only apply to --engine ray" in result.stderr


def test_another_process_joins_the_cluster_by_address(tmp_path):
    """``--address`` from a second driver process (what a cluster's users do); it renders on our workers."""
    src = tmp_path / "in.mp4"
    make_video(src, n_frames=3, width=64, height=64)
    address = ray.get_runtime_context().gcs_address
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.run([sys.executable, "-m", "vidtriplane.cli", "render", str(src), "-o", str(tmp_path / "o.mp4"),
                           "--pipeline", "aligned", *FAST_FLAGS, "--engine", "ray", "--address", address],
                          capture_output=True, env=env, cwd=REPO, timeout=300)
    assert proc.returncode == 0, proc.stderr.decode()[-3000:]
    info = probe(tmp_path / "o.mp4")
    assert info["n"] == 3 and info["has_audio"] and info["size"] == (3 * 64, 64)


@pytest.mark.parametrize("sig,code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signal_stops_the_driver_and_its_workers_and_keeps_finished_segments(tmp_path, sig, code):
    src, out = tmp_path / "in.mp4", tmp_path / "out.mp4"
    pattern_clip(src, 12, gop=4)
    sync, hold = tmp_path / "sync", tmp_path / "hold"
    os.mkfifo(sync)
    os.mkfifo(hold)
    env = dict(os.environ, PYTHONPATH=str(REPO))
    driver = subprocess.Popen([sys.executable, str(REPO / "tests" / "runners" / "ray_driver.py"),
                               ray.get_runtime_context().gcs_address, str(src), str(out), str(sync), str(hold)],
                              env=env, cwd=REPO, stderr=subprocess.PIPE)
    with open(sync, "rb") as f:  # blocks until segment 2 is being rendered
        assert f.read(1) == b"!", driver.communicate(timeout=60)[1].decode()
    driver.send_signal(sig)
    _, err = driver.communicate(timeout=120)
    assert driver.returncode == code, err.decode()[-2000:]
    assert "Traceback" not in err.decode()
    assert not out.exists() and not [p for p in tmp_path.rglob("*") if ".partial" in p.name]
    assert (work_folder(out) / "plan.json").exists() and not (work_folder(out) / "seg-00001.json").exists()
    assert held_worker_ends(hold)  # the worker that was rendering segment 2 was stopped too


def held_worker_ends(fifo: Path, seconds: float = 60.0) -> bool:
    """Whether the process reading ``fifo`` goes away (Ray kills a worker asynchronously) within ``seconds``."""
    import errno
    import time

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))  # succeeds while a reader has it open
        except OSError as exc:
            return exc.errno == errno.ENXIO
        time.sleep(0.1)
    return False
