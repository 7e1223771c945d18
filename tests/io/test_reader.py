"""Reader: files, every stdin flavour (through a non-seekable stream), VFR, rotation, errors."""
from __future__ import annotations

import io
from fractions import Fraction

import numpy as np
import pytest

from tests.io.media import make_video, pattern, video_bytes
from vidtriplane.io.reader import InputError, ReaderConfig, open_video


class NonSeekable(io.RawIOBase):
    """What a real pipe looks like to PyAV: readable, not seekable."""

    def __init__(self, data: bytes) -> None:
        self._buf = io.BytesIO(data)

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def readinto(self, b) -> int:  # type: ignore[override]
        data = self._buf.read(len(b))
        b[: len(data)] = data
        return len(data)


def read_all(source, cfg=ReaderConfig(), stdin=None, batch=4):
    with open_video(source, cfg, stdin=stdin) as reader:
        batches = list(reader.batches(batch))
        audio = sum(len(b.extras["audio_packets"]) for b in batches) + len(reader.remaining_audio())
        meta = reader.meta
    frames = np.concatenate([b.frames for b in batches])
    pts = np.concatenate([b.pts for b in batches])
    index = np.concatenate([b.index for b in batches])
    return meta, frames, pts, index, audio


def test_file_batches_pts_and_audio(tmp_path):
    path = tmp_path / "a.mp4"
    times = make_video(path, n_frames=7, vfr=True)
    meta, frames, pts, index, audio = read_all(path, batch=3)
    assert frames.shape == (7, 48, 64, 3)
    assert index.tolist() == list(range(7))
    assert [p * meta.time_base for p in pts.tolist()] == times  # exact VFR timestamps
    assert meta.has_audio and audio > 0
    # content survives the lossy encode approximately and frames stay in order
    for i in (0, 6):
        assert np.abs(frames[i].astype(int) - pattern(i, 48, 64)).mean() < 12


@pytest.mark.parametrize(
    "container,movflags",
    [("matroska", None), ("nut", None), ("mpegts", None), ("mp4", "frag_keyframe+empty_moov"),
     ("mp4", "+faststart"), ("mp4", None)],
    ids=["matroska", "nut", "mpegts", "fragmented-mp4", "faststart-mp4", "plain-mp4-spooled"],
)
def test_stdin_self_describing(container, movflags, caplog):
    data = video_bytes(n_frames=5, container=container, movflags=movflags)
    with caplog.at_level("WARNING", logger="vidtriplane.io.reader"):
        meta, frames, pts, index, audio = read_all("-", stdin=NonSeekable(data))
    spooled = "spooling" in caplog.text
    assert spooled == (container == "mp4" and movflags is None)  # only a plain mp4 needs the temp file
    assert frames.shape[0] == 5
    assert meta.source == "-" and meta.n_frames is None
    assert np.all(np.diff(pts) > 0)
    assert audio > 0


def test_stdin_y4m():
    data = video_bytes(n_frames=4, container="yuv4mpegpipe", codec="rawvideo", audio=False)
    meta, frames, *_ = read_all("-", stdin=NonSeekable(data))
    assert frames.shape == (4, 48, 64, 3)
    assert meta.fps == 25


def test_stdin_rawvideo():
    raw = np.stack([pattern(i, 10, 16) for i in range(3)])
    cfg = ReaderConfig(format="rawvideo", raw_size="16x10", raw_pix_fmt="rgb24", raw_rate="30000/1001")
    meta, frames, pts, *_ = read_all("-", cfg, stdin=NonSeekable(raw.tobytes()))
    assert np.array_equal(frames, raw)  # lossless
    assert meta.fps == Fraction(30000, 1001)
    assert [float(p * meta.time_base) for p in pts] == pytest.approx([0, 1001 / 30000, 2002 / 30000])


def test_rawvideo_needs_size():
    with pytest.raises(InputError, match="--raw-size"):
        open_video("-", ReaderConfig(format="rawvideo"), stdin=NonSeekable(b"x" * 100))


def test_display_rotation_applied(tmp_path):
    path = tmp_path / "rot.mp4"
    make_video(path, n_frames=2, width=64, height=48, rotation=90, audio=False)
    meta, frames, *_ = read_all(path)
    assert meta.rotation == 90
    assert (meta.width, meta.height) == (48, 64)
    assert frames.shape == (2, 64, 48, 3)
    # a 90 degree counter-clockwise rotation: the top row of the stored image becomes the left column
    expected = np.rot90(pattern(0, 48, 64))
    assert np.abs(frames[0].astype(int) - expected).mean() < 12


def test_errors(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        open_video(tmp_path / "nope.mp4")
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"this is not a video" * 100)
    with pytest.raises(InputError, match="cannot read"):
        open_video(bad)
    with pytest.raises(InputError, match="stdin is empty"):
        open_video("-", stdin=NonSeekable(b""))
    audio_only = tmp_path / "a.wav"
    import av

    with av.open(str(audio_only), "w") as c:
        s = c.add_stream("pcm_s16le", rate=8000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 800), np.int16), format="s16", layout="mono")
        frame.sample_rate = 8000
        c.mux(s.encode(frame))
        c.mux(s.encode(None))
    with pytest.raises(InputError, match="no video stream"):
        open_video(audio_only)


def test_truncated_file_is_an_input_error(tmp_path):
    data = video_bytes(n_frames=8, container="matroska", audio=False)
    cut = tmp_path / "cut.mkv"
    cut.write_bytes(data[: len(data) // 2])
    # a truncated stream either decodes fewer frames or fails with a clear InputError, never a traceback
    try:
        _, frames, *_ = read_all(cut)
        assert 0 < frames.shape[0] < 8
    except InputError as exc:
        assert "cut.mkv" in str(exc)
