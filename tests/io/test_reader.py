"""Reader: files, every stdin flavour (through a non-seekable stream), VFR, rotation, errors."""
from __future__ import annotations

import io
import logging
import struct
from fractions import Fraction

import av
import numpy as np
import pytest

from tests.io.media import make_video, make_video_with_pts, pattern, probe, video_bytes, which_pattern
from vidtriplane.errors import VidtriplaneError
from vidtriplane.io.reader import InputError, ReaderConfig, check_raw_options, open_video


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
    for i in range(7):
        assert np.abs(frames[i].astype(int) - pattern(i, 48, 64)).mean() < 12
        assert which_pattern(frames[i], 7) == i


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
    assert frames.shape == (5, 48, 64, 3)
    assert meta.source == "-" and meta.n_frames is None
    # the timestamps FFmpeg demuxes from the same bytes; 1/25 s apart as written (mpegts starts its clock
    # at 1.4 s; PyAV's fragmented mp4 stretches the first sample over the B-frame delay)
    times = [p * meta.time_base for p in pts.tolist()]
    assert times == probe(io.BytesIO(data))["times"]
    if movflags != "frag_keyframe+empty_moov":
        assert [t - times[0] for t in times] == [Fraction(i, 25) for i in range(5)]
    assert [which_pattern(f, 5) for f in frames] == list(range(5))
    assert max(np.abs(f.astype(int) - pattern(i, 48, 64)).mean() for i, f in enumerate(frames)) < 12
    assert audio > 0


def test_stdin_y4m():
    data = video_bytes(n_frames=4, container="yuv4mpegpipe", codec="rawvideo", audio=False)
    meta, frames, pts, *_ = read_all("-", stdin=NonSeekable(data))
    assert frames.shape == (4, 48, 64, 3)
    assert meta.fps == 25
    assert [p * meta.time_base for p in pts.tolist()] == [Fraction(i, 25) for i in range(4)]
    # y4m is yuv420p: only the chroma subsampling differs from the pattern
    assert [which_pattern(f, 4) for f in frames] == list(range(4))
    assert max(np.abs(f.astype(int) - pattern(i, 48, 64)).mean() for i, f in enumerate(frames)) < 12


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


@pytest.mark.parametrize("fraction,n_min", [(0.5, 1), (0.8, 4)])
def test_truncated_file_decodes_its_intact_prefix(tmp_path, fraction, n_min):
    data = video_bytes(n_frames=8, container="matroska", codec="ffv1", pix_fmt="bgr0", audio=False)
    cut = tmp_path / "cut.mkv"
    cut.write_bytes(data[: int(len(data) * fraction)])
    meta, frames, pts, *_ = read_all(cut)
    n = frames.shape[0]
    assert n_min <= n < 8
    for i in range(n):  # lossless: the frames before the cut are exactly the ones written
        assert np.array_equal(frames[i], pattern(i, 48, 64)), f"frame {i}"
    assert [p * meta.time_base for p in pts.tolist()] == [Fraction(i, 25) for i in range(n)]


def test_truncated_faststart_mp4_warns_how_many_frames_are_missing(tmp_path, caplog):
    """An mp4 with its index first still opens when cut: its header lists every frame, so the reader says
    how many decoded (once, though a file is read twice), instead of finishing silently short."""
    data = video_bytes(n_frames=12, container="mp4", codec="ffv1", pix_fmt="bgr0", audio=False, movflags="+faststart")
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: int(len(data) * 0.6)])
    with caplog.at_level("WARNING", logger="vidtriplane.io.reader"):
        for _ in range(2):
            meta, frames, *_ = read_all(cut)
    assert meta.n_frames == 12 and 0 < frames.shape[0] < 12
    warned = [r.getMessage() for r in caplog.records if "frames its header lists" in r.getMessage()]
    assert warned == [f"{cut} ended after {frames.shape[0]} of the 12 frames its header lists (a truncated file?); "
                      f"the output has the {frames.shape[0]} that decode"]
    caplog.clear()
    whole = tmp_path / "whole.mp4"
    whole.write_bytes(data)
    with caplog.at_level("WARNING", logger="vidtriplane.io.reader"):
        assert read_all(whole)[1].shape[0] == 12
    assert not caplog.records


def test_file_cut_before_any_frame_is_an_input_error(tmp_path):
    data = video_bytes(n_frames=8, container="matroska", audio=False)  # libx264: nothing decodes from 30 %
    cut = tmp_path / "cut.mkv"
    cut.write_bytes(data[: int(len(data) * 0.3)])
    with pytest.raises(InputError, match="cut.mkv has a video stream but no decodable frames"):
        open_video(cut)


def test_errors_are_vidtriplane_errors():
    assert issubclass(InputError, VidtriplaneError) and issubclass(InputError, RuntimeError)
    assert InputError("x").exit_code == 1


# --------------------------------------------------------------------------------------------------
# timestamps that repeat or go backwards (issue 9, item 2)

def _repaired(pts: list[int]) -> tuple[list[int], int]:
    """What the reader must hand out: each pts that is not above the previous output moves 1 tick past it."""
    out: list[int] = []
    for p in pts:
        out.append(p if not out or p > out[-1] else out[-1] + 1)
    return out, sum(a != b for a, b in zip(out, pts))


BAD_PTS = {
    "4-frames-repeat": [0, 40, 40, 80],
    "8-frames-repeat-and-back": [0, 80, 80, 160, 120, 200, 240, 280],
    "40-frames": [40 * i - (60 if i % 7 == 3 else 0) + (40 if i % 11 == 5 else 0) for i in range(40)],
}


@pytest.mark.parametrize("container", ["matroska", "nut"])
@pytest.mark.parametrize("pts_ms", list(BAD_PTS.values()), ids=list(BAD_PTS))
def test_repeated_or_backwards_pts_are_repaired(tmp_path, caplog, container, pts_ms):
    path = tmp_path / f"bad.{ {'matroska': 'mkv'}.get(container, container)}"
    make_video_with_pts(path, pts_ms, container=container)
    with av.open(str(path)) as c:  # the input really holds these timestamps
        tb = c.streams.video[0].time_base
        stored = [f.pts for f in c.decode(video=0)]
    assert [p * tb for p in stored] == [Fraction(p, 1000) for p in pts_ms]
    with caplog.at_level(logging.WARNING, logger="vidtriplane.io.reader"):
        meta, frames, pts, index, _ = read_all(path, batch=3)
    want, n_bad = _repaired(stored)
    assert n_bad > 0
    assert meta.time_base == tb
    assert pts.tolist() == want and np.all(np.diff(pts) > 0)
    assert index.tolist() == list(range(len(pts_ms)))
    for i, frame in enumerate(frames):  # every frame kept, in the stored order, pixel-exact (ffv1 RGB)
        assert np.array_equal(frame, pattern(i, 48, 64)), f"frame {i}"
    warnings = [r.getMessage() for r in caplog.records if r.name == "vidtriplane.io.reader"]
    assert len(warnings) == 1 and f"{n_bad} of {len(pts_ms)} frame timestamps" in warnings[0]


def test_good_pts_give_no_warning(tmp_path, caplog):
    path = tmp_path / "ok.mkv"
    make_video_with_pts(path, [0, 40, 90, 130])
    with caplog.at_level(logging.WARNING, logger="vidtriplane.io.reader"):
        meta, _, pts, *_ = read_all(path)
    assert [p * meta.time_base for p in pts.tolist()] == [Fraction(p, 1000) for p in (0, 40, 90, 130)]
    assert not caplog.records


# --------------------------------------------------------------------------------------------------
# sizes read from the stream are bounded (issue 9, item 3)

class RecordingStream(NonSeekable):
    """A pipe that remembers the largest read it was asked for."""

    def __init__(self, data: bytes) -> None:
        super().__init__(data)
        self.largest = 0

    def readinto(self, b) -> int:  # type: ignore[override]
        self.largest = max(self.largest, len(b))
        return super().readinto(b)


@pytest.mark.parametrize("head,box,claim", [
    (struct.pack(">I4s4sI", 0xFFFFFFF0, b"ftyp", b"isom", 512) + bytes(24), "ftyp", 0xFFFFFFF0),
    (struct.pack(">I4s4sI", 16, b"ftyp", b"isom", 512) + struct.pack(">I4sQ", 1, b"free", 1 << 62) + bytes(8),
     "free", 1 << 62),
    (struct.pack(">I4s4sI", 16, b"ftyp", b"isom", 512) + struct.pack(">I4s", 80 << 20, b"skip") + bytes(16),
     "skip", 80 << 20),
], ids=["32-bit-ftyp", "64-bit-free", "80MiB-skip"])
def test_mp4_header_claiming_a_huge_box_is_an_input_error(head, box, claim):
    assert len(head) == 40
    stream = RecordingStream(head)
    with pytest.raises(InputError, match=f"box '{box}' at byte \\d+ claims {claim} bytes") as err:
        open_video("-", stdin=stream)
    assert "ffmpeg -i in.mp4 -c copy -movflags +faststart" in str(err.value)
    assert stream.largest <= 1 << 20  # nothing was allocated from the size field


def test_large_but_sane_header_box_still_streams():
    # fragmented with default_base_moof: sample offsets count from each moof, so padding may go in front
    data = video_bytes(n_frames=3, container="mp4", movflags="frag_keyframe+empty_moov+default_base_moof",
                       audio=False)
    ftyp_size = struct.unpack(">I", data[:4])[0]
    padding = struct.pack(">I4s", 3 << 20, b"free") + bytes((3 << 20) - 8)  # a 3 MiB free box after ftyp
    stream = RecordingStream(data[:ftyp_size] + padding + data[ftyp_size:])
    meta, frames, pts, *_ = read_all("-", stdin=stream)
    assert [which_pattern(f, 3) for f in frames] == [0, 1, 2]
    assert [p * meta.time_base for p in pts.tolist()] == probe(io.BytesIO(data))["times"]
    assert stream.largest <= 1 << 20


# --------------------------------------------------------------------------------------------------
# rawvideo options checked up front (issue 9, item 9a)

@pytest.mark.parametrize("options,match", [
    ({"raw_size": "abc"}, r"--raw-size 'abc' is not WIDTHxHEIGHT"),
    ({"raw_size": "640"}, r"--raw-size '640' is not WIDTHxHEIGHT"),
    ({"raw_size": "16x10x3"}, r"is not WIDTHxHEIGHT"),
    ({"raw_size": "-16x10"}, r"is not WIDTHxHEIGHT"),
    ({"raw_size": "0x10"}, r"--raw-size '0x10': width and height must be between 1 and"),
    ({"raw_size": "99999x10"}, r"must be between 1 and 32768"),
    ({"raw_size": "15x10", "raw_pix_fmt": "yuv420p"}, r"--raw-size 15x10: yuv420p .* width must be a multiple of 2"),
    ({"raw_size": "16x9", "raw_pix_fmt": "nv12"}, r"height of 2"),
    ({"raw_size": "16x10", "raw_pix_fmt": "rgb42"}, r"--raw-pix-fmt 'rgb42' is not a pixel format FFmpeg knows"),
    ({"raw_size": "16x10", "raw_pix_fmt": "pal8"}, r"--raw-pix-fmt 'pal8' cannot be read as raw frames"),
    ({"raw_size": "16x10", "raw_rate": "fast"}, r"--raw-rate 'fast' is not a frame rate"),
    ({"raw_size": "16x10", "raw_rate": "0"}, r"--raw-rate must be positive"),
    ({"raw_size": "16x10", "raw_rate": "25/0"}, r"--raw-rate '25/0' is not a frame rate"),
    ({}, r"--raw-size WIDTHxHEIGHT"),
])
def test_raw_options_are_checked_with_specific_messages(options, match):
    cfg = ReaderConfig(format="rawvideo", **options)
    with pytest.raises(InputError, match=match):
        check_raw_options(cfg)
    with pytest.raises(InputError, match=match):  # before anything is read from stdin
        open_video("-", cfg, stdin=NonSeekable(b"x" * 100))


def test_raw_options_accepted():
    cfg = ReaderConfig(format="rawvideo", raw_size=" 16X10 ", raw_pix_fmt="yuv420p", raw_rate="30000/1001")
    assert check_raw_options(cfg) == (16, 10, Fraction(30000, 1001))


def test_stdin_rawvideo_bgr24():
    raw = np.stack([pattern(i, 10, 16) for i in range(3)])
    cfg = ReaderConfig(format="rawvideo", raw_size="16x10", raw_pix_fmt="bgr24", raw_rate="25")
    meta, frames, pts, *_ = read_all("-", cfg, stdin=NonSeekable(raw[..., ::-1].tobytes()))
    assert np.array_equal(frames, raw)  # BGR bytes come out as RGB, exactly
    assert [p * meta.time_base for p in pts.tolist()] == [Fraction(i, 25) for i in range(3)]


# --------------------------------------------------------------------------------------------------
# a frame size change is reported by the reader, wherever it falls (issue 9, item 9b)

def _size_change_ts() -> bytes:
    """Two MPEG-TS segments back to back (how broadcast streams change resolution): 4 frames of 64x48,
    then 3 of 32x24, timestamps continuing."""
    parts = []
    for (w, h), frames in (((64, 48), range(0, 4)), ((32, 24), range(4, 7))):
        buf = io.BytesIO()
        with av.open(buf, "w", format="mpegts") as out:
            s = out.add_stream("libx264", rate=25)
            s.width, s.height, s.pix_fmt = w, h, "yuv420p"
            s.codec_context.time_base = Fraction(1, 25)
            s.options = {"preset": "ultrafast", "crf": "20"}
            for i in frames:
                frame = av.VideoFrame.from_ndarray(pattern(i, h, w), format="rgb24")
                frame.pts, frame.time_base = i, Fraction(1, 25)
                out.mux(s.encode(frame))
            out.mux(s.encode(None))
        parts.append(buf.getvalue())
    return b"".join(parts)


@pytest.mark.parametrize("batch", [4, 3, 1], ids=["at-batch-boundary", "inside-a-batch", "batch-1"])
def test_frame_size_change_is_an_input_error_naming_the_frame(tmp_path, batch):
    path = tmp_path / "switch.ts"
    path.write_bytes(_size_change_ts())
    got = []
    with open_video(path) as reader:
        with pytest.raises(InputError) as err:
            for b in reader.batches(batch):
                got.append(b)
    message = str(err.value)
    assert "the frame size changes at frame 4 from 64x48 to 32x24" in message
    assert f"ffmpeg -i {path} -vf scale=64:48" in message
    frames = np.concatenate([b.frames for b in got])
    assert frames.shape == ((4 // batch) * batch, 48, 64, 3)  # the whole batches before the change
    assert [which_pattern(f, 4) for f in frames] == list(range(len(frames)))


@pytest.mark.parametrize("rotation, pix_fmt", [(0, "yuv420p"), (90, "yuv420p"), (0, "yuv444p")])
def test_grey_batches_are_the_luma_of_the_rgb_batches(tmp_path, rotation, pix_fmt):
    """``gray=True`` (the geometry pass): the Y plane, full range, rotated like the RGB frames."""
    import cv2

    path = tmp_path / "g.mp4"
    make_video(path, n_frames=5, width=64, height=48, rotation=rotation, audio=False, pix_fmt=pix_fmt)
    _, rgb, pts, *_ = read_all(path, batch=2)
    with open_video(path) as reader:
        batches = list(reader.batches(2, gray=True))
    grey = np.concatenate([b.frames for b in batches])
    assert grey.shape == rgb.shape[:3] and grey.dtype == np.uint8
    np.testing.assert_array_equal(np.concatenate([b.pts for b in batches]), pts)
    with av.open(str(path)) as c:  # swscale's own grey conversion, rotated as the reader rotates
        sws = np.stack([np.rot90(f.to_ndarray(format="gray"), rotation // 90) for f in c.decode(video=0)])
    np.testing.assert_array_equal(grey, sws)
    want = np.stack([cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) for f in rgb]).astype(int)
    assert np.abs(grey.astype(int) - want).mean() < 2.0  # the luma of the RGB frames (up to their rounding)
    assert grey.max() > 200 and grey.min() < 40  # full range (not 16..235)
