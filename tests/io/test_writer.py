"""Writer: every container to a file and to a non-seekable pipe, timestamps, audio copy, temp + rename."""
from __future__ import annotations

import io
from fractions import Fraction

import numpy as np
import pytest

from tests.io.media import make_video, pattern, probe
from vidtriplane.io.reader import open_video
from vidtriplane.io.writer import (OutputError, VideoWriter, WriterConfig, partial_path,
                                   resolve_format)


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


def transcode(src, target, cfg, stdout=None, batch=3):
    """Read ``src`` and write every frame + audio packet to ``target``; returns the input meta."""
    with open_video(src) as reader:
        meta = reader.meta
        writer = VideoWriter(target, width=meta.width, height=meta.height, fps=meta.fps,
                             time_base=meta.time_base, audio_stream=reader.audio_stream, cfg=cfg,
                             stdout=stdout)
        try:
            for b in reader.batches(batch):
                writer.write(b.frames, b.pts)
                writer.write_audio(b.extras["audio_packets"])
            writer.write_audio(reader.remaining_audio())
            writer.close(ok=True)
        finally:
            writer.close(ok=False)
    return meta


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


@pytest.mark.parametrize("fmt", ["nut", "matroska", "mp4", "mpegts", "y4m"])
def test_pipe_formats(vfr_clip, fmt):
    src, times = vfr_clip
    sink = PipeSink()
    transcode(src, "-", WriterConfig(format=fmt), stdout=sink)
    info = probe(io.BytesIO(bytes(sink.data)))
    assert info["n"] == len(times)
    assert info["size"] == (64, 48)
    if fmt != "y4m":
        assert info["has_audio"]


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
    info = probe(out)
    assert info["n"] == 4 and info["size"] == (64, 48)  # padded to even sides for yuv420p


def test_format_errors(tmp_path):
    with pytest.raises(OutputError, match="needs --format"):
        resolve_format("-", WriterConfig())
    with pytest.raises(OutputError, match="cannot be written to a pipe"):
        resolve_format("-", WriterConfig(format="mov"))
    with pytest.raises(OutputError, match="unsupported output format"):
        resolve_format("x.mp4", WriterConfig(format="avi"))
    with pytest.raises(OutputError, match="cannot tell the container"):
        resolve_format(tmp_path / "x.foo", WriterConfig())
    assert resolve_format(tmp_path / "x.MKV", WriterConfig()) == "matroska"
    assert resolve_format("-", WriterConfig(format="mkv")) == "matroska"
