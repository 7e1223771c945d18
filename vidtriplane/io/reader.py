"""Decode a video (file or stdin) into :class:`~vidtriplane.types.FrameBatch` batches with PyAV.

    with open_video("in.mp4", ReaderConfig()) as reader:
        for batch in reader.batches(8):          # FrameBatch(meta, index, pts, frames)
            ...
            packets = batch.extras["audio_packets"]  # audio demuxed alongside, copied unchanged

* ``source`` is a path or ``"-"`` (the real stdin, never seeked). Self-describing pipe formats (y4m, nut,
  matroska, mpegts, fragmented or faststart mp4) stream directly; a plain mp4 whose ``moov`` index comes
  after ``mdat`` is spooled to a temporary file first (it cannot be demuxed without seeking); raw frames
  need ``ReaderConfig(format="rawvideo", raw_size="WxH", raw_pix_fmt=..., raw_rate=...)``.
* Exact presentation timestamps are kept (variable frame rate survives), in ``meta.time_base`` units;
  timestamps that repeat or go backwards are moved to just after the previous frame (one warning at the
  end says how many), so ``pts`` always strictly increases.
* Every frame has the first frame's size; a stream that changes size is an :class:`InputError` that
  names the frame and says how to re-encode it.
* The display matrix (phone videos) is applied: frames come out in display orientation.
* Audio packets of the first audio stream are collected while demuxing and handed out with the batch
  whose frames they precede, so a writer can remux them without a second pass (works for pipes).
"""
from __future__ import annotations

import io
import logging
import os
import re
import shlex
import shutil
import struct
import sys
import tempfile
from fractions import Fraction
from pathlib import Path
from typing import BinaryIO, Iterator, Optional

import numpy as np

from vidtriplane.config.media import ReaderConfig
from vidtriplane.errors import VidtriplaneError
from vidtriplane.io.timestamps import MonotonicPts, repair_message
from vidtriplane.types import FrameBatch, VideoMeta

log = logging.getLogger(__name__)
_TRUNCATION_WARNED: set[tuple[str, int]] = set()

#: container formats accepted on stdin without options (``--input-format`` names, ffmpeg demuxer names)
PIPE_FORMATS = {
    "y4m": "yuv4mpegpipe",
    "nut": "nut",
    "matroska": "matroska",
    "mkv": "matroska",
    "webm": "matroska",
    "mpegts": "mpegts",
    "ts": "mpegts",
    "mp4": "mp4",
    "mov": "mov",
    "rawvideo": "rawvideo",
}


#: most bytes of mp4 boxes read from stdin before ``moov``/``mdat`` (ftyp, free, uuid... are small)
MAX_MP4_HEAD = 64 << 20
#: largest piece read from a stream at once
_CHUNK = 1 << 20
#: largest raw frame side accepted (FFmpeg's own limit is near 2**16 for RGB)
MAX_RAW_SIDE = 1 << 15


class InputError(VidtriplaneError, RuntimeError):
    """The input cannot be read as a video; the message says why and what to do."""


# --------------------------------------------------------------------------------------------------
# stdin handling


class _PrefixedStream(io.RawIOBase):
    """A read-only, non-seekable stream that replays ``prefix`` and then continues with ``rest``."""

    def __init__(self, prefix: bytes, rest: BinaryIO) -> None:
        self._prefix = memoryview(prefix)
        self._pos = 0
        self._rest = rest

    def readable(self) -> bool:
        return True

    def readinto(self, buf) -> int:  # type: ignore[override]
        n = len(buf)
        if self._pos < len(self._prefix):
            chunk = self._prefix[self._pos : self._pos + n]
            buf[: len(chunk)] = chunk
            self._pos += len(chunk)
            return len(chunk)
        data = self._rest.read(n)
        if not data:
            return 0
        buf[: len(data)] = data
        return len(data)


def _read_exact(stream: BinaryIO, n: int) -> bytes:
    """Up to ``n`` bytes (fewer at the end of the stream), read in bounded chunks."""
    out = bytearray()
    while len(out) < n:
        chunk = stream.read(min(n - len(out), _CHUNK))
        if not chunk:
            break
        out += chunk
    return bytes(out)


def _mp4_index_position(stream: BinaryIO, head: bytearray) -> str:
    """Walk top-level ISO-BMFF boxes from a pipe until moov/moof/mdat; bytes read go into ``head``.

    Returns "streamable" (moov or moof before mdat) or "index-at-end" (mdat first). Boxes before those
    that claim more than :data:`MAX_MP4_HEAD` bytes are an InputError (they are never read into memory).
    """
    pos = 0
    while True:
        head += _read_exact(stream, max(0, pos + 16 - len(head)))
        if len(head) < pos + 8:
            return "streamable"  # truncated: let the demuxer report it
        size, kind = struct.unpack(">I4s", bytes(head[pos : pos + 8]))
        header = 8
        if size == 1 and len(head) >= pos + 16:
            size = struct.unpack(">Q", bytes(head[pos + 8 : pos + 16]))[0]
            header = 16
        if kind in (b"moov", b"moof"):
            return "streamable"
        if kind == b"mdat":
            return "index-at-end"
        if size == 0 or size < header:
            return "streamable"  # "to the end of the file" or malformed: let the demuxer decide
        if pos + size > MAX_MP4_HEAD:
            name = kind.decode("latin-1")
            raise InputError(
                f"stdin: the mp4 box {name!r} at byte {pos} claims {size} bytes before any index (moov) or "
                f"media (mdat); more than {MAX_MP4_HEAD >> 20} MiB of header boxes means the stream is corrupt "
                "or not an mp4. Pass the file path instead of stdin, or remux it first: "
                "ffmpeg -i in.mp4 -c copy -movflags +faststart fixed.mp4"
            )
        head += _read_exact(stream, pos + size - len(head))
        pos += size


def _open_stdin(stdin: BinaryIO, cfg: ReaderConfig) -> tuple[BinaryIO | str, Optional[str]]:
    """Return what ``av.open`` should read (a stream or a spooled temp path) and the temp path to delete."""
    if cfg.format == "rawvideo":
        return stdin, None
    head = bytearray(_read_exact(stdin, 12))
    if not head:
        raise InputError("stdin is empty: pipe a video into `vidtriplane render -` (e.g. `... -f nut - |`)")
    is_mp4 = len(head) >= 8 and head[4:8] in (b"ftyp", b"moov", b"free", b"mdat", b"wide", b"skip")
    if is_mp4 and _mp4_index_position(stdin, head) == "index-at-end":
        fd, spool = tempfile.mkstemp(prefix="vidtriplane-stdin-", suffix=".mp4")
        log.warning("stdin is an mp4 with its index at the end; spooling it to %s before decoding", spool)
        with os.fdopen(fd, "wb") as f:
            f.write(head)
            shutil.copyfileobj(stdin, f, 1 << 20)
        return spool, spool
    return io.BufferedReader(_PrefixedStream(bytes(head), stdin), 1 << 16), None


# --------------------------------------------------------------------------------------------------
# the reader


def _parse_rate(text: str) -> Fraction:
    try:
        rate = Fraction(str(text).strip())
    except (ValueError, ZeroDivisionError):
        raise InputError(f"--raw-rate {text!r} is not a frame rate like 25 or 30000/1001") from None
    if rate <= 0:
        raise InputError(f"--raw-rate must be positive, got {text!r}")
    return rate


def check_raw_options(cfg: ReaderConfig) -> tuple[int, int, Fraction]:
    """Validate ``raw_size`` / ``raw_pix_fmt`` / ``raw_rate`` of a rawvideo input: (width, height, rate).

    Raises :class:`InputError` with a message that names the option and what it expects.
    """
    import av

    if not cfg.raw_size:
        raise InputError("rawvideo input needs its frame size: --raw-size WIDTHxHEIGHT (e.g. 640x480)")
    match = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", str(cfg.raw_size))
    if not match:
        raise InputError(f"--raw-size {cfg.raw_size!r} is not WIDTHxHEIGHT in pixels (e.g. 640x480)")
    width, height = int(match[1]), int(match[2])
    if not (0 < width <= MAX_RAW_SIDE and 0 < height <= MAX_RAW_SIDE):
        raise InputError(f"--raw-size {cfg.raw_size!r}: width and height must be between 1 and {MAX_RAW_SIDE}")
    try:
        fmt = av.VideoFormat(cfg.raw_pix_fmt)
    except (ValueError, TypeError):
        raise InputError(f"--raw-pix-fmt {cfg.raw_pix_fmt!r} is not a pixel format FFmpeg knows "
                         "(e.g. rgb24, bgr24, yuv420p, gray; `ffmpeg -pix_fmts` lists them)") from None
    if fmt.bits_per_pixel == 0 or fmt.has_palette or fmt.is_bit_stream:
        raise InputError(f"--raw-pix-fmt {cfg.raw_pix_fmt!r} cannot be read as raw frames; use a plain layout "
                         "such as rgb24, bgr24, yuv420p or gray")
    sub_w, sub_h = 256 // fmt.chroma_width(256), 256 // fmt.chroma_height(256)
    if width % sub_w or height % sub_h:
        raise InputError(f"--raw-size {width}x{height}: {fmt.name} stores colour at 1/{sub_w} x 1/{sub_h} "
                         f"resolution, so the width must be a multiple of {sub_w} and the height of {sub_h}")
    return width, height, _parse_rate(cfg.raw_rate)


def _rotate(image: np.ndarray, degrees: int) -> np.ndarray:
    """Rotate counter-clockwise by a multiple of 90 degrees (the display matrix convention)."""
    k = (round(degrees / 90)) % 4
    return np.ascontiguousarray(np.rot90(image, k)) if k else image


_YUV_FORMATS = {"yuv420p", "yuvj420p", "yuv422p", "yuvj422p", "yuv444p", "yuvj444p", "nv12"}
_LIMITED_TO_FULL = np.clip(np.rint((np.arange(256) - 16) * 255 / 219), 0, 255).astype(np.uint8)


def _luma(frame) -> np.ndarray:
    """A decoded frame's grey image [H, W] uint8, full range: the Y plane of 8-bit YUV frames (no colour
    conversion; limited range expanded as swscale does), else swscale's grey conversion."""
    import cv2

    if frame.format.name not in _YUV_FORMATS:
        return frame.to_ndarray(format="gray")
    plane = frame.planes[0]
    y = np.frombuffer(plane, np.uint8).reshape(-1, plane.line_size)[: frame.height, : frame.width]
    full = frame.format.name.startswith("yuvj") or frame.color_range == 2  # AVCOL_RANGE_JPEG
    return np.ascontiguousarray(y) if full else cv2.LUT(y, _LIMITED_TO_FULL)


class VideoReader:
    """An open input video. Use :func:`open_video`; iterate with :meth:`batches`; always close."""

    def __init__(self, source: str | Path, cfg: ReaderConfig = ReaderConfig(), *, stdin: BinaryIO | None = None):
        import av

        self.cfg = cfg
        self.source = str(source)
        self._spool: Optional[str] = None
        self._container = None
        self._label = label = "stdin" if self.source == "-" else self.source
        fmt = PIPE_FORMATS.get(cfg.format, cfg.format) if cfg.format else None
        options: dict[str, str] = {}
        if fmt == "rawvideo":
            width, height, rate = check_raw_options(cfg)
            options = {"video_size": f"{width}x{height}", "pixel_format": cfg.raw_pix_fmt, "framerate": str(rate)}
        if self.source == "-":
            target, self._spool = _open_stdin(stdin or sys.stdin.buffer, cfg)
        else:
            path = Path(self.source)
            if not path.exists():
                raise InputError(f"input {path} does not exist")
            if path.is_dir():
                raise InputError(f"input {path} is a folder; pass a video file (folders are handled by `render`)")
            target = str(path)
        try:
            self._container = av.open(target, "r", format=fmt, options=options)
        except av.error.EOFError:
            self.close()
            raise InputError(f"cannot read {label}: it ends before any video data (empty or truncated)") from None
        except av.error.FFmpegError as exc:
            self.close()
            hint = ""
            if self.source == "-":
                hint = (" On stdin use a self-describing stream (y4m, nut, matroska, mpegts, fragmented mp4)"
                        " or --input-format rawvideo with --raw-size/--raw-pix-fmt/--raw-rate.")
            raise InputError(f"cannot read {label} as a video ({exc.strerror or exc}).{hint}") from None
        except ValueError as exc:  # unknown format name
            self.close()
            raise InputError(f"cannot open {label}: {exc}") from None
        if not self._container.streams.video:
            self.close()
            raise InputError(f"{label} has no video stream")
        self._video = self._container.streams.video[0]
        self._video.thread_type = "AUTO"
        if cfg.threads:
            self._video.codec_context.thread_count = cfg.threads
        self._audio = self._container.streams.audio[0] if (cfg.audio and self._container.streams.audio) else None
        self._frames = self._decode()
        self._pending_audio: list = []
        try:
            first = next(self._frames)
        except StopIteration:
            self.close()
            raise InputError(f"{label} has a video stream but no decodable frames") from None
        self._first = first
        self.meta = self._make_meta(first)

    # ----------------------------------------------------------------------------------------------
    @property
    def audio_stream(self):
        """The input audio stream whose packets are handed out (a template for the writer), or None."""
        return self._audio

    def _make_meta(self, first) -> VideoMeta:
        stream = self._video
        rotation = int(getattr(first, "rotation", 0) or 0)
        width, height = first.width, first.height
        if round(rotation / 90) % 2:
            width, height = height, width
        if self.cfg.format == "rawvideo":
            fps = _parse_rate(self.cfg.raw_rate)
        else:
            fps = stream.average_rate or stream.guessed_rate or stream.base_rate or Fraction(25)
        n = (stream.frames or None) if self.source != "-" else None
        return VideoMeta(
            width=width,
            height=height,
            fps=Fraction(fps),
            time_base=Fraction(stream.time_base) if stream.time_base else Fraction(1, int(fps) or 25),
            n_frames=n,
            rotation=rotation % 360,
            codec=stream.codec_context.name or "",
            pix_fmt=stream.codec_context.pix_fmt or "",
            has_audio=self._audio is not None,
            source=self.source,
        )

    def _decode(self) -> Iterator:
        """Demux video + audio packets; yield decoded video frames; stash audio packets."""
        import av

        streams = [self._video] + ([self._audio] if self._audio is not None else [])
        decoded = 0
        try:
            for packet in self._container.demux(streams):
                if packet.stream.type == "audio":
                    if packet.dts is not None and packet.size:
                        self._pending_audio.append(packet)
                    continue
                for frame in packet.decode():
                    decoded += 1
                    yield frame
        except av.error.FFmpegError as exc:
            raise InputError(f"{self._label} is corrupt or truncated while decoding: {exc.strerror or exc}") from None
        declared = self.meta.n_frames if hasattr(self, "meta") else None
        if declared and decoded < declared and (self._label, decoded) not in _TRUNCATION_WARNED:
            _TRUNCATION_WARNED.add((self._label, decoded))  # once, though a file is read twice (geometry pass)
            log.warning("%s ended after %d of the %d frames its header lists (a truncated file?); the output has "
                        "the %d that decode", self._label, decoded, declared, decoded)

    def batches(self, size: int, *, gray: bool = False) -> Iterator[FrameBatch]:
        """Yield FrameBatch(meta, index, pts, frames) of ``size`` frames (the last may be shorter).

        ``extras["audio_packets"]`` holds the audio packets demuxed while decoding that batch. ``gray``:
        frames are grey [N, H, W] instead of RGB (the luma plane: cheaper, for face landmarks alone).
        """
        if size < 1:
            raise ValueError(f"batch size must be >= 1, got {size}")
        tb = self.meta.time_base
        step = max(1, round(1 / (self.meta.fps * tb))) if self.meta.fps and tb else 1
        frames: list[np.ndarray] = []
        pts: list[int] = []
        index = 0
        fix = MonotonicPts()
        try:
            for n, frame in enumerate(self._chain_first()):
                p = frame.pts
                if p is None:  # no timestamp: one nominal frame after the previous one
                    p = (fix.last + step) if fix.last is not None else 0
                image = _luma(frame) if gray else frame.to_ndarray(format="rgb24")
                image = _rotate(image, int(getattr(frame, "rotation", 0) or 0))
                self._check_size(n, image)
                frames.append(image)
                pts.append(fix(p))
                if len(frames) == size:
                    yield self._make_batch(index, pts, frames)
                    index += len(frames)
                    frames, pts = [], []
            if frames:
                yield self._make_batch(index, pts, frames)
        finally:
            self.repaired_timestamps = fix.repaired
            if fix.repaired:
                log.warning(repair_message(fix.repaired, index + len(frames), self._label))

    def _check_size(self, n: int, image: np.ndarray) -> None:
        """Every frame must have the first frame's (display) size; frame ``n`` counts from 0."""
        h, w = image.shape[:2]
        if (w, h) == (self.meta.width, self.meta.height):
            return
        src = shlex.quote(self.source)
        raise InputError(
            f"{self._label}: the frame size changes at frame {n} from {self.meta.width}x{self.meta.height} "
            f"to {w}x{h}; vidtriplane needs one size for the whole video. Re-encode it to a fixed size first, "
            f"e.g. ffmpeg -i {src} -vf scale={self.meta.width}:{self.meta.height} -c:a copy fixed.mp4"
        )

    def _chain_first(self) -> Iterator:
        if self._first is not None:
            first, self._first = self._first, None
            yield first
        yield from self._frames

    def _make_batch(self, start: int, pts: list[int], frames: list[np.ndarray]) -> FrameBatch:
        audio, self._pending_audio = self._pending_audio, []
        return FrameBatch(
            meta=self.meta,
            index=np.arange(start, start + len(frames), dtype=np.int64),
            pts=np.asarray(pts, dtype=np.int64),
            frames=np.stack(frames),
            extras={"audio_packets": audio},
        )

    def seek(self, pts: int) -> None:
        """Continue decoding from the keyframe at or before ``pts`` (video time-base units; files only).

        The next :meth:`batches` starts at that keyframe, so frames before ``pts`` come out too: the caller
        drops them by timestamp (where the keyframe is, is only known once decoded). ``meta`` is kept.
        """
        if self._container is None or self.source == "-":
            raise InputError(f"{self._label} cannot be seeked (stdin, or closed)")
        import av

        try:
            self._container.seek(int(pts), stream=self._video, backward=True, any_frame=False)
        except av.error.FFmpegError as exc:
            raise InputError(f"cannot seek in {self._label}: {exc.strerror or exc}") from None
        self._first = None
        self._pending_audio = []
        self._frames = self._decode()

    def remaining_audio(self) -> list:
        """Audio packets demuxed after the last video frame (call once the batches are exhausted)."""
        audio, self._pending_audio = self._pending_audio, []
        return audio

    # ----------------------------------------------------------------------------------------------
    def close(self) -> None:
        """Close the container and delete a stdin spool file; safe to call twice."""
        if self._container is not None:
            self._container.close()
            self._container = None
        if self._spool is not None:
            Path(self._spool).unlink(missing_ok=True)
            self._spool = None

    def __enter__(self) -> "VideoReader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def open_video(source: str | Path, cfg: ReaderConfig = ReaderConfig(), *, stdin: BinaryIO | None = None) -> VideoReader:
    """Open ``source`` (a path or ``"-"``) for decoding; raises :class:`InputError` with a clear message."""
    return VideoReader(source, cfg, stdin=stdin)
