"""``vidtriplane render`` through the CLI: every input/output mode (real pipes included), folders with
resume after a kill, and the error messages. Tiny generated-weights model, aligned pipeline."""
from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from click.testing import CliRunner

from tests.io.media import make_video, pattern, probe, video_bytes
from vidtriplane.cli import main

REPO = Path(__file__).resolve().parents[2]
TINY = ["--pipeline", "aligned", "--config", "generated-tiny", "-q", "--device", "cpu",
        "--set", "runtime.torch_threads=1", "--set", "render.depth_samples=4",
        "--set", "render.importance_samples=4", "--set", "render.neural_rendering_resolution=16",
        "--set", "render.size=64", "--set", "composite.tile=64", "--set", "output.preset=ultrafast"]


def run_cli(*args: str, stdin: bytes | None = None):
    """In-process run; returns click's Result (stdout bytes and stderr kept apart)."""
    return CliRunner().invoke(main, ["render", *args], input=stdin)


def subprocess_cli(*args: str, stdin: bytes | None = None, **kwargs) -> subprocess.CompletedProcess:
    """A real process with real (non-seekable) pipes on stdin and stdout."""
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.run([sys.executable, "-m", "vidtriplane.cli", "render", *args], input=stdin,
                          capture_output=True, env=env, cwd=REPO, timeout=300, **kwargs)


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    path = tmp_path_factory.mktemp("clip") / "in.mp4"
    make_video(path, n_frames=4, width=64, height=64)
    return path


def test_pipe_to_pipe_nut(clip):
    """ffmpeg -i in.mp4 -f nut - | vidtriplane render - -o - --format nut | ffmpeg -i - out.mp4"""
    data = video_bytes(n_frames=4, width=64, height=64, container="nut")
    proc = subprocess_cli("-", "-o", "-", "--format", "nut", *TINY, stdin=data)
    assert proc.returncode == 0, proc.stderr.decode()
    info = probe(io.BytesIO(proc.stdout))
    assert info["n"] == 4 and info["has_audio"] and info["size"] == (192, 64)
    assert b"GENERATED" in proc.stderr  # generated weights are never passed off as real output


def test_raw_frames_in_y4m_out():
    raw = np.stack([pattern(i, 64, 64) for i in range(3)]).tobytes()
    proc = subprocess_cli("-", "-o", "-", "--format", "y4m", "--input-format", "rawvideo", "--raw-size", "64x64",
                          "--raw-rate", "30", "--layout", "crop", *TINY, stdin=raw)
    assert proc.returncode == 0, proc.stderr.decode()
    assert proc.stdout.startswith(b"YUV4MPEG2 W64 H64 F30:1")
    assert probe(io.BytesIO(proc.stdout))["n"] == 3


def test_file_to_file_with_report_and_config(tmp_path, clip):
    out = tmp_path / "out.mp4"
    result = run_cli(str(clip), "-o", str(out), "--report", "--yaw", "0.4", "--yaw", "-0.4", *TINY)
    assert result.exit_code == 0, result.output
    info = probe(out)
    assert info["n"] == 4 and info["size"] == (4 * 64, 64) and info["has_audio"]
    report = yaml.safe_load((tmp_path / "out.report.json").read_text())
    assert report["frames"] == 4 and report["weights"] == "generated"
    saved = yaml.safe_load((tmp_path / "out.config.yaml").read_text())
    assert [v["yaw"] for v in saved["render"]["views"]] == [0.4, -0.4]
    assert result.stdout_bytes == b""  # nothing but video ever goes to stdout


def test_file_to_stdout_and_stdin_to_file(tmp_path, clip):
    result = run_cli(str(clip), "-o", "-", "--format", "mp4", "--layout", "crop", *TINY)
    assert result.exit_code == 0, result.stderr
    assert probe(io.BytesIO(result.stdout_bytes))["n"] == 4  # fragmented mp4
    out = tmp_path / "from_stdin.mkv"
    result = run_cli("-", "-o", str(out), "--layout", "crop", *TINY, stdin=clip.read_bytes())  # spooled mp4
    assert result.exit_code == 0, result.stderr
    assert probe(out)["n"] == 4


def test_dry_run_prints_resolved_config(clip, tmp_path):
    result = run_cli(str(clip), "-o", str(tmp_path / "x.mp4"), "--dry-run", "--set", "render.depth_samples=48",
                     "--camera", "orbit", "--cttr")
    assert result.exit_code == 0, result.output
    cfg = yaml.safe_load(result.stdout)
    assert cfg["render"]["depth_samples"] == 48 and cfg["invert"]["cttr_steps"] == 1
    assert cfg["render"]["views"][0]["mode"] == "orbit" and cfg["stages"][0] == "preprocess"
    assert not (tmp_path / "x.mp4").exists()


def decode_frames(path: Path) -> np.ndarray:
    import av

    with av.open(str(path)) as c:
        return np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)])


def make_folder(root: Path, n: int) -> list[Path]:
    paths = []
    for i in range(n):
        sub = root / ("sub" if i % 2 else "") / f"clip{i}.mkv"
        sub.parent.mkdir(parents=True, exist_ok=True)
        make_video(sub, n_frames=4, width=64, height=64, container="matroska", audio=i == 0)
        paths.append(sub)
    (root / "notes.txt").write_text("not a video")
    return paths


class Paused:
    """A CLI process stopped at its ``pause_at``-th model batch (see tests/commands/paused_cli.py)."""

    def __init__(self, *args: str, pause_at: int = 2, **popen) -> None:
        self.sync_r, sync_w = os.pipe()
        hold_r, self.hold_w = os.pipe()
        env = dict(os.environ, PYTHONPATH=str(REPO), VT_PAUSE_AT=str(pause_at), VT_SYNC_FD=str(sync_w),
                   VT_HOLD_FD=str(hold_r))
        self.proc = subprocess.Popen([sys.executable, str(REPO / "tests" / "commands" / "paused_cli.py"), *args],
                                     env=env, cwd=REPO, pass_fds=(sync_w, hold_r), stderr=subprocess.PIPE, **popen)
        os.close(sync_w)
        os.close(hold_r)

    def wait_until_paused(self) -> None:
        got = os.read(self.sync_r, 1)  # blocks until the child reaches the pause point (or exits)
        assert got == b"!", self.proc.communicate(timeout=60)[1].decode()

    def finish(self, sig: int) -> tuple[int, str]:
        self.proc.send_signal(sig)
        _, err = self.proc.communicate(timeout=120)
        os.close(self.sync_r)
        os.close(self.hold_w)
        return self.proc.returncode, err.decode()


def test_folder_killed_then_resumed(tmp_path):
    src, dst = tmp_path / "in", tmp_path / "out"
    make_folder(src, 3)
    (src / "broken.mp4").write_bytes(b"garbage" * 50)
    args = [str(src), "-o", str(dst), "-r", *TINY]
    child = Paused("render", *args, pause_at=2, stdout=subprocess.DEVNULL)  # 2nd batch = 2nd clip's first
    child.wait_until_paused()
    first = dst / "clip0.mp4"
    assert first.exists() and not (dst / "clip2.mp4").exists()  # killed in the middle of clip2
    code, _ = child.finish(signal.SIGKILL)
    assert code == -signal.SIGKILL
    assert probe(first)["n"] == 4  # what looks finished is complete
    mtime = first.stat().st_mtime_ns

    result = subprocess_cli(*args)
    assert result.returncode == 1  # broken.mp4 failed, the others were rendered
    err = result.stderr.decode()
    assert "broken.mp4" in err and "failed" in err and "Traceback" not in err
    outputs = sorted(p.relative_to(dst).as_posix() for p in dst.rglob("*.mp4"))
    assert outputs == ["clip0.mp4", "clip2.mp4", "sub/clip1.mp4"]  # mirrored tree
    assert not [p for p in dst.rglob("*") if ".partial" in p.name]
    assert first.stat().st_mtime_ns == mtime  # not redone
    assert all(probe(dst / o)["n"] == 4 for o in outputs)
    assert (dst / "vidtriplane-render.yaml").exists()
    report = json.loads((dst / "vidtriplane-render.report.json").read_text())
    failed = [j for j in report["jobs"] if j["status"] == "failed"]
    assert [Path(j["input"]).name for j in failed] == ["broken.mp4"] and "cannot read" in failed[0]["error"]
    assert report["done"] == 2 and report["skipped"] == 1


@pytest.mark.parametrize("sig,code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_signals_stop_cleanly_and_leave_no_output(tmp_path, sig, code):
    src = tmp_path / "long.mkv"
    make_video(src, n_frames=12, width=64, height=64, container="matroska")
    out = tmp_path / "out.mp4"
    child = Paused("render", str(src), "-o", str(out), *TINY, "--batch-size", "2", pause_at=2,
                   stdout=subprocess.DEVNULL)
    child.wait_until_paused()
    returncode, err = child.finish(sig)
    assert returncode == code, err
    assert "Traceback" not in err and "unfinished outputs were discarded" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["long.mkv"]  # no output, no partial file


def test_stdout_closed_early_ends_quietly(tmp_path):
    src = tmp_path / "c.mkv"
    make_video(src, n_frames=12, width=64, height=64, container="matroska")
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.Popen([sys.executable, "-m", "vidtriplane.cli", "render", str(src), "-o", "-", "--format",
                             "rawvideo", "--layout", "crop", *TINY], env=env, cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    head = proc.stdout.read(1000)  # 12 raw 64x64 frames are 147 kB, more than a pipe holds
    proc.stdout.close()
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 141 and len(head) == 1000
    assert "Traceback" not in err and "Exception ignored" not in err and "error" not in err.lower()


def test_cuda_device_without_cuda_is_one_clear_error(tmp_path, clip):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    result = run_cli(str(clip), "-o", str(tmp_path / "o.mp4"), *TINY, "--device", "cuda")
    assert result.exit_code == 1
    assert "CUDA is not available" in result.stderr and "--device cpu" in result.stderr
    assert "Traceback" not in result.stderr and list(tmp_path.iterdir()) == []


def test_unwritable_output_is_refused_before_any_work(tmp_path, clip):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    result = run_cli(str(clip), "-o", str(blocker / "o.mp4"), *TINY)
    assert result.exit_code == 1 and "is a file, not a folder" in result.stderr
    assert "GENERATED" not in result.stderr  # refused before the models were built


@pytest.mark.parametrize("out, message", [("-", "writing to stdout needs --format"),
                                          ("o.avi", "cannot tell the container")])
def test_output_format_mistakes_are_usage_errors(tmp_path, clip, out, message):
    target = out if out == "-" else str(tmp_path / out)
    result = run_cli(str(clip), "-o", target, *TINY)
    assert result.exit_code == 2 and message in result.stderr and "Traceback" not in result.stderr
    assert list(tmp_path.iterdir()) == []


def test_folder_into_itself_is_refused_naming_the_cause(tmp_path, clip):
    import shutil

    shutil.copy(clip, tmp_path / "a.mp4")
    result = run_cli(str(tmp_path), "-o", str(tmp_path), *TINY)
    assert result.exit_code == 2 and "is the input folder" in result.stderr and "no videos" not in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.mp4"]


def test_folder_with_clashing_names_is_refused(tmp_path):
    src = tmp_path / "clips"
    src.mkdir()
    make_video(src / "a.mp4", n_frames=2, width=64, height=64)
    make_video(src / "a.mkv", n_frames=2, width=64, height=64, container="matroska")
    result = run_cli(str(src), "-o", str(tmp_path / "rendered"), *TINY)
    assert result.exit_code == 2 and "a.mkv and" in result.stderr and "rendered/a.mp4" in result.stderr
    assert not (tmp_path / "rendered").exists()


@pytest.mark.parametrize("command", ["render", "preprocess"])
def test_set_values_that_are_not_yaml_are_usage_errors_in_every_command(tmp_path, clip, command):
    args = [command, str(clip), "-o", str(tmp_path / "o"), "--set", "a.b=[1, 2", "--dry-run"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2, result.output
    assert "not valid YAML" in result.stderr and "Traceback" not in result.stderr


def test_a_video_without_faces_warns_with_the_counts(tmp_path, clip):
    pytest.importorskip("dlib")
    result = run_cli(str(clip), "-o", str(tmp_path / "o.mp4"), *[a for a in TINY if a != "-q"],
                     "--pipeline", "default", "--set", "runtime.pose_cache=false")
    assert result.exit_code == 0, result.stderr
    assert "no face was found in any of its 4 frames" in result.stderr


@pytest.mark.parametrize("extra,frames_differ", [
    (["--set", "model.version=2"], True),
    (["--cttr"], True),
])
def test_v2_and_cttr_through_the_video_pipeline(tmp_path, clip, extra, frames_differ):
    base = tmp_path / "base.mp4"
    assert run_cli(str(clip), "-o", str(base), *TINY, "--layout", "crop").exit_code == 0
    out = tmp_path / "o.mp4"
    result = run_cli(str(clip), "-o", str(out), *TINY, "--layout", "crop", *extra)
    assert result.exit_code == 0, result.stderr
    a, b = probe(base), probe(out)
    assert a["n"] == b["n"] == 4 and a["times"] == b["times"]
    assert (decode_frames(base) != decode_frames(out)).any() == frames_differ


def test_cttr_with_v2_is_refused(tmp_path, clip):
    result = run_cli(str(clip), "-o", str(tmp_path / "o.mp4"), *TINY, "--cttr", "--set", "model.version=2")
    assert result.exit_code == 1 and "CTTR" in result.stderr and "v1 only" in result.stderr


@pytest.mark.parametrize(
    "case,message",
    [
        ("missing", "does not exist"),
        ("corrupt", "cannot read"),
        ("no_video", "no video stream"),
        ("zero_frames", "no decodable frames"),
        ("truncated", "empty or truncated"),
        ("pipe_mov", "cannot be written to a pipe"),
        ("pipe_no_format", "needs --format"),
        ("same_file", "is the input file"),
        ("exists", "--overwrite"),
        ("bad_set", "unknown config key"),
        ("views_to_stdout", "cannot go to stdout"),
        ("folder_to_file", "must be a folder"),
        ("yaw_nan", "render.views[0].yaw: expected a finite number, got nan"),
    ],
)
def test_clear_errors(tmp_path, clip, case, message):
    import av

    src, out, extra = str(clip), str(tmp_path / "o.mp4"), []
    if case == "missing":
        src = str(tmp_path / "nope.mp4")
    elif case == "corrupt":
        src = str(tmp_path / "bad.mp4")
        Path(src).write_bytes(b"\x00garbage" * 100)
    elif case == "no_video":
        src = str(tmp_path / "a.mka")
        with av.open(src, "w") as c:
            s = c.add_stream("pcm_s16le", rate=8000)
            f = av.AudioFrame.from_ndarray(np.zeros((1, 800), np.int16), format="s16", layout="mono")
            f.sample_rate = 8000
            c.mux(s.encode(f))
            c.mux(s.encode(None))
    elif case == "zero_frames":
        src = str(tmp_path / "empty.y4m")  # a valid header, then nothing
        Path(src).write_bytes(b"YUV4MPEG2 W64 H64 F25:1 Ip A1:1 C420jpeg\n")
    elif case == "truncated":
        src = str(tmp_path / "cut.mkv")
        Path(src).write_bytes(video_bytes(n_frames=2, container="matroska")[:40])
    elif case == "pipe_mov":
        out, extra = "-", ["--format", "mov"]
    elif case == "pipe_no_format":
        out = "-"
    elif case == "same_file":
        out = src
    elif case == "exists":
        Path(out).write_bytes(b"old")
    elif case == "bad_set":
        extra = ["--set", "render.nope=1"]
    elif case == "views_to_stdout":
        out, extra = "-", ["--format", "nut", "--yaw", "0.2", "--yaw", "-0.2", "--layout", "crop", "--separate-views"]
    elif case == "folder_to_file":
        src = str(clip.parent)
    elif case == "yaw_nan":
        extra = ["--yaw", "nan"]
    result = run_cli(src, "-o", out, *extra, *TINY)
    assert result.exit_code != 0
    assert message in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
    if case == "exists":
        assert Path(out).read_bytes() == b"old"
    if case not in ("exists", "same_file"):
        assert not Path(out).exists() if out != "-" else True


def test_bad_input_fails_before_the_models_load(tmp_path):
    """Without -q: the one error line, not the generated-weights banner of a model that never ran."""
    src = tmp_path / "bad.mp4"
    src.write_bytes(b"\x00garbage" * 100)
    result = run_cli(str(src), "-o", str(tmp_path / "o.mp4"), *[a for a in TINY if a != "-q"])
    assert result.exit_code == 1
    assert result.stderr.splitlines() == [f"vidtriplane: error: cannot read {src} as a video "
                                          "(Invalid data found when processing input)."]


def test_missing_weights_message(tmp_path, clip, monkeypatch):
    monkeypatch.setenv("VIDTRIPLANE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("VIDTRIPLANE_OFFLINE", "1")
    result = run_cli(str(clip), "-o", str(tmp_path / "o.mp4"), "--pipeline", "aligned", "-q")
    assert result.exit_code == 1
    assert "triplanenet-v1" in result.stderr and "weights import" in result.stderr
    assert "--config generated-tiny" in result.stderr and "Traceback" not in result.stderr


def test_out_of_memory_message(tmp_path, clip, monkeypatch):
    import torch

    from vidtriplane.stages import invert

    def oom(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory (simulated)")

    monkeypatch.setattr(invert, "apply", oom)
    result = run_cli(str(clip), "-o", str(tmp_path / "o.mp4"), *TINY)
    assert result.exit_code == 1
    assert "ran out of memory" in result.stderr and "Traceback" not in result.stderr
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("flag,value,message", [
    ("--raw-size", "abc", "--raw-size"), ("--raw-pix-fmt", "nope", "pixel format"), ("--raw-rate", "0", "rate")])
def test_bad_raw_options_are_usage_errors_before_any_work(tmp_path, flag, value, message):
    args = ["-", "-o", str(tmp_path / "o.mp4"), "--input-format", "rawvideo", "--raw-size", "64x64", *TINY]
    args += [flag, value]
    result = run_cli(*args, stdin=b"\0" * 64 * 64 * 3)
    assert result.exit_code == 2 and message in result.stderr, result.stderr
    assert "Traceback" not in result.stderr and "GENERATED" not in result.stderr
