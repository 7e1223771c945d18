"""Writer: every container to a file and to a non-seekable pipe, timestamps, audio copy, temp + rename."""
from __future__ import annotations

import io
import logging
import os
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from tests.io.media import decode, make_video, make_video_with_pts, pattern, probe, which_pattern
from tests.io.transcode import BROKEN_PIPE_STATUS, transcode
from vidtriplane.errors import VidtriplaneError
from vidtriplane.io.reader import open_video
from vidtriplane.io.writer import (OutputError, VideoWriter, WriterConfig, partial_path,
                                   resolve_format)

REPO = Path(__file__).parents[2]
SUFFIX = {"matroska": "mkv", "mpegts": "ts", "y4m": "y4m", "mp4": "mp4", "nut": "nut"}


class PipeSink(io.RawIOBase):
    """A write-only, non-seekable sink (what stdout is when piped)."""

    def __init__(self) -> None:
        self.data = bytearray()

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def write(self, b) -> int:  # type: ignore[override]
        self.data += bytes(b)
        return len(b)


@pytest.fixture(scope="module")
def vfr_clip(tmp_path_factory):
    path = tmp_path_factory.mktemp("clip") / "in.mp4"
    times = make_video(path, n_frames=9, vfr=True)
    return path, times


@pytest.mark.parametrize("fmt,exact", [("mp4", True), ("matroska", True), ("mpegts", True), ("nut", False)])
def test_file_formats_keep_frames_times_audio(tmp_path, vfr_clip, fmt, exact):
    src, times = vfr_clip
    out = tmp_path / f"out.{ {'matroska': 'mkv', 'mpegts': 'ts'}.get(fmt, fmt)}"
    transcode(src, out, WriterConfig(format=fmt))
    assert out.exists() and not partial_path(out).exists()
    info = probe(out)
    assert info["n"] == len(times)
    got = np.array([float(t) for t in info["times"]])
    want = np.array([float(t) for t in times])
    if exact:  # mkv stores milliseconds
        assert got == pytest.approx(want, abs=1e-3)
    else:  # nut shifts everything by the encoder delay; intervals are kept
        assert np.diff(got) == pytest.approx(np.diff(want), abs=1e-3)
    assert info["has_audio"] and info["audio_codec"] == "aac"
    assert info["audio_packets"] == probe(src)["audio_packets"]  # every packet copied
    frames, _ = decode(out)
    assert [which_pattern(f, len(times)) for f in frames] == list(range(len(times)))


def _check_output(frames, times, src_times, fmt, fps=None):
    """Every frame, in order; timestamps as the input's (y4m: frame numbers at ``fps``)."""
    n = len(src_times)
    assert len(frames) == n
    assert [which_pattern(f, n) for f in frames] == list(range(n))
    assert max(np.abs(f.astype(int) - pattern(i, 48, 64)).mean() for i, f in enumerate(frames)) < 12
    got, want = np.array([float(t) for t in times]), np.array([float(t) for t in src_times])
    if fmt == "y4m":  # constant rate: frame numbers
        assert times == [Fraction(i) / fps for i in range(n)]
    elif fmt in ("mp4", "mpegts"):
        assert times == list(src_times)
    elif fmt == "matroska":  # milliseconds
        assert got == pytest.approx(want, abs=1e-3)
    else:  # nut shifts the whole file by the encoder delay; the intervals are kept
        assert np.diff(got) == pytest.approx(np.diff(want), abs=1e-3)


@pytest.mark.parametrize("fmt", ["nut", "matroska", "mp4", "mpegts", "y4m"])
def test_pipe_formats(vfr_clip, fmt):
    src, times = vfr_clip
    sink = PipeSink()
    meta = transcode(src, "-", WriterConfig(format=fmt), stdout=sink)
    info = probe(io.BytesIO(bytes(sink.data)))
    frames, got_times = decode(io.BytesIO(bytes(sink.data)))
    _check_output(frames, got_times, times, fmt, meta.fps)
    assert info["size"] == (64, 48)
    if fmt != "y4m":
        assert info["has_audio"] and info["audio_packets"] == probe(src)["audio_packets"]


def test_rawvideo_pipe_is_exact_rgb(tmp_path):
    src = tmp_path / "lossless.mkv"
    make_video(src, n_frames=3, container="matroska", codec="ffv1", audio=False)
    sink = PipeSink()
    transcode(src, "-", WriterConfig(format="rawvideo"), stdout=sink)
    frames = np.frombuffer(bytes(sink.data), np.uint8).reshape(3, 48, 64, 3)
    with open_video(src) as reader:
        decoded = next(reader.batches(3)).frames
    assert np.array_equal(frames, decoded)


def test_failed_write_leaves_nothing(tmp_path):
    out = tmp_path / "o.mp4"
    w = VideoWriter(out, width=64, height=48, fps=Fraction(25), time_base=Fraction(1, 25))
    w.write(np.stack([pattern(i, 48, 64) for i in range(60)]), range(60))  # past x264's lookahead
    assert partial_path(out).exists() and not out.exists()
    w.close(ok=False)
    assert not partial_path(out).exists() and not out.exists()


def test_context_manager_success_and_odd_size(tmp_path):
    out = tmp_path / "odd.mkv"
    with VideoWriter(out, width=63, height=47, fps=Fraction(25), time_base=Fraction(1, 25)) as w:
        w.write(np.stack([pattern(i, 47, 63) for i in range(4)]), range(4))
    frames, times = decode(out)
    assert frames.shape == (4, 48, 64, 3)  # padded to even sides for yuv420p
    assert times == [Fraction(i, 25) for i in range(4)]
    for i, f in enumerate(frames):  # the picture is unchanged, the new row/column repeats the edge
        assert np.abs(f[:47, :63].astype(int) - pattern(i, 47, 63)).mean() < 12
        assert np.abs(f[47].astype(int) - f[46]).mean() < 12 and np.abs(f[:, 63].astype(int) - f[:, 62]).mean() < 12


def test_format_errors(tmp_path):
    with pytest.raises(OutputError, match="needs --format"):
        resolve_format("-", WriterConfig())
    with pytest.raises(OutputError, match="cannot be written to a pipe"):
        resolve_format("-", WriterConfig(format="mov"))
    with pytest.raises(OutputError, match="unsupported output format"):
        resolve_format("x.mp4", WriterConfig(format="avi"))
    with pytest.raises(OutputError, match="cannot tell the container") as err:
        resolve_format(tmp_path / "x.foo", WriterConfig())
    assert err.value.exit_code == 2  # a usage mistake, like a wrong option
    assert resolve_format(tmp_path / "x.MKV", WriterConfig()) == "matroska"
    assert resolve_format("-", WriterConfig(format="mkv")) == "matroska"


def test_output_error_is_a_vidtriplane_error():
    assert issubclass(OutputError, VidtriplaneError) and issubclass(OutputError, RuntimeError)
    assert OutputError("x").exit_code == 1


# --------------------------------------------------------------------------------------------------
# timestamps that repeat or go backwards (issue 9, item 2)

BAD_PTS = {  # milliseconds, time base 1/1000
    "4-frames-repeat": ([0, 40, 40, 80], [0, 40, 41, 80]),
    "8-frames-repeat-and-back": ([0, 80, 80, 160, 120, 200, 240, 280], [0, 80, 81, 160, 161, 200, 240, 280]),
    "40-frames": ([40 * i if i % 10 != 7 else 40 * i - 100 for i in range(40)],
                  [40 * i if i % 10 != 7 else 40 * i - 39 for i in range(40)]),
}


@pytest.mark.parametrize("fmt", ["mp4", "matroska", "mpegts", "nut"])
@pytest.mark.parametrize("pts,want", list(BAD_PTS.values()), ids=list(BAD_PTS))
def test_repeated_or_backwards_pts_are_repaired(tmp_path, caplog, fmt, pts, want):
    n = len(pts)
    out = tmp_path / f"out.{SUFFIX[fmt]}"
    with caplog.at_level(logging.WARNING, logger="vidtriplane.io.writer"):
        with VideoWriter(out, width=64, height=48, fps=Fraction(25), time_base=Fraction(1, 1000),
                         cfg=WriterConfig(format=fmt, preset="ultrafast")) as w:
            for k in range(0, n, 3):  # batches of 3: repairs carry across write() calls
                w.write(np.stack([pattern(i, 48, 64) for i in range(k, min(n, k + 3))]), pts[k : k + 3])
    frames, times = decode(out)
    assert len(frames) == n
    assert all(b > a for a, b in zip(times, times[1:]))
    want_s = [Fraction(p, 1000) for p in want]
    if fmt == "nut":  # shifted by the encoder delay
        assert [t - times[0] for t in times] == want_s
    else:
        assert times == want_s
    assert [which_pattern(f, n) for f in frames] == list(range(n))
    repaired = sum(a != b for a, b in zip(pts, want))
    warnings = [r.getMessage() for r in caplog.records if r.name == "vidtriplane.io.writer"]
    assert len(warnings) == 1 and f"{repaired} of {n} frame timestamps" in warnings[0]


def test_matroska_keeps_timestamps_its_millisecond_clock_would_merge(tmp_path):
    out = tmp_path / "fine.mkv"
    pts = [0, 3600, 3630, 7200]  # 1/90000: frames 1 and 2 are 0.33 ms apart, one millisecond in mkv
    with VideoWriter(out, width=64, height=48, fps=Fraction(25), time_base=Fraction(1, 90000)) as w:
        w.write(np.stack([pattern(i, 48, 64) for i in range(4)]), pts)
    frames, times = decode(out)
    assert times == [Fraction(t, 1000) for t in (0, 40, 41, 80)]
    assert [which_pattern(f, 4) for f in frames] == [0, 1, 2, 3]


@pytest.mark.parametrize("fmt", ["mp4", "matroska"])
def test_bad_pts_input_through_reader_and_writer(tmp_path, caplog, fmt):
    src = tmp_path / "bad.mkv"
    make_video_with_pts(src, [0, 80, 80, 160, 120, 200, 240, 280])
    out = tmp_path / f"out.{SUFFIX[fmt]}"
    with caplog.at_level(logging.WARNING):
        transcode(src, out, WriterConfig(format=fmt, preset="ultrafast"), batch=4)
    frames, times = decode(out)
    assert times == [Fraction(t, 1000) for t in (0, 80, 81, 160, 161, 200, 240, 280)]
    assert [which_pattern(f, 8) for f in frames] == list(range(8))
    assert "2 of 8 frame timestamps" in caplog.text  # said once, by the reader that repaired them


# --------------------------------------------------------------------------------------------------
# stdout: a real pipe and a redirected file, from every kind of input (issue 9, item 11)

@pytest.fixture(scope="module")
def ts_clip(tmp_path_factory):
    """MPEG-TS input: AAC audio in ADTS framing, no codec extradata, video starting at 1.4 s."""
    path = tmp_path_factory.mktemp("ts") / "in.ts"
    make_video(path, n_frames=9, container="mpegts")
    return path, probe(path)["times"]


def _child(args, stdout):
    env = {"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "tests.io.transcode", *args], stdout=stdout,
                          stderr=subprocess.PIPE, cwd=REPO, env=env, timeout=120)


@pytest.mark.parametrize("fmt", ["mp4", "matroska", "nut", "mpegts", "y4m"])
@pytest.mark.parametrize("sink", ["pipe", "file", "after-other-output"])
def test_stdout_from_mpegts_input(tmp_path, ts_clip, fmt, sink):
    src, src_times = ts_clip
    # "after-other-output": `{ echo earlier; vidtriplane ... -o -; } > file` - stdout starts mid-file
    prefix = b"earlier output\n" if sink == "after-other-output" else b""
    if sink == "pipe":
        result = _child([str(src), fmt], subprocess.PIPE)
        data = result.stdout
    else:
        path = tmp_path / f"out.{SUFFIX[fmt]}"
        with open(path, "wb") as f:
            f.write(prefix)
            f.flush()
            result = _child([str(src), fmt], f)
        data = path.read_bytes()
    assert result.returncode == 0, result.stderr.decode()
    assert data.startswith(prefix)
    data = data[len(prefix):]
    frames, times = decode(io.BytesIO(data), fmt="yuv4mpegpipe" if fmt == "y4m" else None)
    with open_video(src) as reader:
        fps = reader.meta.fps
    _check_output(frames, times, src_times, fmt, fps)
    if fmt != "y4m":
        info = probe(io.BytesIO(data))
        assert info["audio_codec"] == "aac" and info["audio_packets"] == probe(src)["audio_packets"]


@pytest.mark.parametrize("fmt", ["mp4", "matroska"])
def test_mpegts_audio_into_mp4_and_matroska_files(tmp_path, ts_clip, fmt):
    src, src_times = ts_clip
    out = tmp_path / f"out.{SUFFIX[fmt]}"
    transcode(src, out, WriterConfig(format=fmt, preset="ultrafast"))
    frames, times = decode(out)
    _check_output(frames, times, src_times, "matroska")  # a file keeps the exact start
    info = probe(out)
    assert info["audio_codec"] == "aac" and info["audio_packets"] == probe(src)["audio_packets"]


def test_stdout_mp4_from_mp4_input_as_file(tmp_path, vfr_clip):
    src, times = vfr_clip
    path = tmp_path / "out.mp4"
    with open(path, "wb") as f:
        result = _child([str(src), "mp4"], f)
    assert result.returncode == 0, result.stderr.decode()
    frames, got = decode(path)
    _check_output(frames, got, times, "mp4")


@pytest.mark.parametrize("fmt", ["rawvideo", "nut", "mp4", "matroska", "y4m"])
def test_closed_stdout_is_a_plain_broken_pipe_error(fmt):
    child = subprocess.Popen([sys.executable, "-m", "tests.io.transcode", "noise", fmt, "400"], cwd=REPO,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"})
    head = child.stdout.read(100)  # the reader of our pipe takes a little, then goes away
    child.stdout.close()
    stderr = child.stderr.read().decode()
    assert child.wait(timeout=120) == BROKEN_PIPE_STATUS, stderr
    assert len(head) == 100
    assert stderr.startswith("BrokenPipeError:") and "Traceback" not in stderr


def test_a_closed_reader_of_stdout_is_noticed_at_the_next_write(tmp_path):
    """The muxer buffers tens of kB, so a pipe whose reader left would surface frames later; the writer
    checks the pipe before each write and stops at once."""
    from vidtriplane.io.writer import reader_gone

    r, w = os.pipe()
    out = os.fdopen(w, "wb")
    regular = open(tmp_path / "f", "wb")
    try:
        assert not reader_gone(out) and not reader_gone(regular) and not reader_gone(None)
        writer = VideoWriter("-", width=64, height=48, fps=Fraction(25), time_base=Fraction(1, 25),
                             cfg=WriterConfig(format="nut"), stdout=out)
        writer.write(np.zeros((1, 48, 64, 3), np.uint8))
        os.close(r)
        assert reader_gone(out)
        with pytest.raises(BrokenPipeError):
            writer.write(np.zeros((1, 48, 64, 3), np.uint8))
        assert writer.frames_written == 1
    finally:
        regular.close()
        try:
            out.close()
        except BrokenPipeError:
            pass
