"""Encode RGB frames (and remux the input's audio) to a file or stdout with PyAV.

    writer = VideoWriter("out.mp4", width=512, height=512, fps=meta.fps, time_base=meta.time_base,
                         audio_stream=reader.audio_stream, cfg=WriterConfig())
    try:
        writer.write(frames, pts); writer.write_audio(packets) ...
        writer.close(ok=True)          # flush, close, rename the temp file to out.mp4
    finally:
        writer.close(ok=False)         # no-op after a successful close; otherwise deletes the temp file

* Files are written to a hidden temporary name in the same folder (``.out.partial.mp4``) and renamed
  only when complete, so a killed run never leaves a file that looks finished.
* ``"-"`` writes to the real stdout in a pipe-safe container (``--format``): y4m, nut, matroska,
  fragmented mp4, mpegts or rawvideo (RGB24 bytes, no header). Nothing else ever touches stdout. stdout
  is always written as a pipe (never seeked), also when the shell redirected it to a file: the muxer's
  offsets would not be the file's when it was opened for appending or already held data.
* A reader of stdout that goes away (``| head -c 100``) surfaces as the plain ``BrokenPipeError``;
  every other failure to write is an :class:`OutputError`.
* Input timestamps are kept (``time_base`` and ``pts`` are the input's), so variable frame rate
  survives; y4m and rawvideo have no timestamps and are constant-rate by nature. nut cannot store the
  negative decode times of B-frames / audio priming, so FFmpeg shifts that whole file by a constant
  (the encoder delay): intervals and VFR are kept, the start moves by a few frames.
* Timestamps that repeat or go backwards (or that the container's clock cannot tell apart: matroska
  counts milliseconds) are moved to just after the previous frame, see :mod:`vidtriplane.io.timestamps`;
  one warning at the end says how many.
* Audio packets are copied unchanged (no re-encode) when the container can hold the codec; ADTS AAC
  (from MPEG-TS) is unwrapped for mp4/mov/matroska, see :mod:`vidtriplane.io.aac`.
"""
from __future__ import annotations

import io
import logging
import os
import sys
from collections import deque
from contextlib import contextmanager
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import BinaryIO, Iterable, Iterator, Optional

import numpy as np

from vidtriplane.config.media import WriterConfig
from vidtriplane.errors import UsageError, VidtriplaneError
from vidtriplane.io import aac
from vidtriplane.io.timestamps import MonotonicPts, min_step, repair_message

log = logging.getLogger(__name__)


class OutputError(VidtriplaneError, RuntimeError):
    """The output cannot be written as asked; the message says what to do."""


class OutputFormatError(OutputError, UsageError):
    """The output's container cannot be chosen as asked (a usage mistake: exit code 2)."""

    exit_code = 2


@dataclass(frozen=True)
class _Format:
    muxer: str
    codec: str
    pix_fmt: str
    timestamps: bool  # False: constant-rate container (pts are frame numbers)
    audio: bool
    pipe_options: tuple[tuple[str, str], ...] = ()
    file_options: tuple[tuple[str, str], ...] = ()


FORMATS: dict[str, _Format] = {
    "mp4": _Format("mp4", "libx264", "yuv420p", True, True,
                   # delay_moov: the init segment waits for the first fragment, so it knows each track's start
                   # and writes it as an edit list (else the first frame is pulled to the earliest track)
                   pipe_options=(("movflags", "frag_keyframe+empty_moov+default_base_moof+delay_moov"),),
                   file_options=(("movflags", "+faststart"),)),
    "mov": _Format("mov", "libx264", "yuv420p", True, True, file_options=(("movflags", "+faststart"),)),
    "matroska": _Format("matroska", "libx264", "yuv420p", True, True,
                        pipe_options=(("avoid_negative_ts", "disabled"),),
                        file_options=(("avoid_negative_ts", "disabled"),)),
    "nut": _Format("nut", "libx264", "yuv420p", True, True),
    "mpegts": _Format("mpegts", "libx264", "yuv420p", True, True,
                      pipe_options=(("avoid_negative_ts", "disabled"),),
                      file_options=(("avoid_negative_ts", "disabled"),)),
    "y4m": _Format("yuv4mpegpipe", "rawvideo", "yuv420p", False, False),
    "rawvideo": _Format("rawvideo", "rawvideo", "rgb24", False, False),
}
_MPEGTS_AUDIO = {"aac", "mp3", "mp2", "ac3", "eac3", "opus"}
#: the clock a muxer stores timestamps in whatever the stream's time base (None: the stream's own or finer)
_CONTAINER_TICK = {"matroska": Fraction(1, 1000), "mpegts": Fraction(1, 90000)}
#: formats allowed on stdout (``mov`` needs seeking)
PIPE_FORMATS = ("y4m", "nut", "matroska", "mp4", "mpegts", "rawvideo")
ALIASES = {"mkv": "matroska", "ts": "mpegts", "yuv4mpegpipe": "y4m", "raw": "rawvideo", "fmp4": "mp4"}
EXTENSIONS = {".mp4": "mp4", ".m4v": "mp4", ".mov": "mov", ".mkv": "matroska", ".nut": "nut",
              ".ts": "mpegts", ".y4m": "y4m", ".rgb": "rawvideo", ".raw": "rawvideo"}


def resolve_format(target: str | Path, cfg: WriterConfig) -> str:
    """The container name for ``target`` (``"-"`` or a path); raises OutputFormatError when unusable."""
    name = cfg.format
    if name:
        name = ALIASES.get(name.lower(), name.lower())
        if name not in FORMATS:
            raise OutputFormatError(f"unsupported output format {cfg.format!r}; use one of {', '.join(FORMATS)}")
    if str(target) == "-":
        if not name:
            raise OutputFormatError(f"writing to stdout needs --format, one of {', '.join(PIPE_FORMATS)}")
        if name not in PIPE_FORMATS:
            raise OutputFormatError(f"--format {name} cannot be written to a pipe (it needs seeking); "
                              f"use one of {', '.join(PIPE_FORMATS)}")
        return name
    if name:
        return name
    ext = Path(target).suffix.lower()
    if ext not in EXTENSIONS:
        raise OutputFormatError(f"cannot tell the container from {Path(target).name!r}; use an extension "
                          f"({', '.join(EXTENSIONS)}) or --format")
    return EXTENSIONS[ext]


def copy_packet(packet):
    """An independent copy of an input packet (muxing consumes a packet; several outputs need one each)."""
    import av

    out = av.Packet(bytes(packet))
    out.pts, out.dts, out.duration = packet.pts, packet.dts, packet.duration
    out.time_base = packet.time_base
    out.is_keyframe = packet.is_keyframe
    return out


def partial_path(path: Path) -> Path:
    """The hidden temporary name a file output is written under until it is complete."""
    return path.with_name(f".{path.stem}.partial{path.suffix}")


class _Pipe(io.RawIOBase):
    """stdout as the muxer sees it: write-only and never seekable, be it a pipe or a redirected file."""

    def __init__(self, raw: BinaryIO) -> None:
        self._raw = raw

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def write(self, data) -> int:  # type: ignore[override]
        view = memoryview(data).cast("B")
        total = view.nbytes
        while view:  # a raw stream may take only part of it
            n = self._raw.write(view)
            view = view[len(view) if n is None else n :]
        return total


def reader_gone(stream: BinaryIO | None) -> bool:
    """True when ``stream`` is a pipe whose reading end has been closed (``| head -c 100`` finished).

    Writes reach the pipe only when the muxer's buffer fills, so a closed reader would otherwise be noticed
    many frames later; poll() reports it at once (POLLERR on a pipe without readers). False for anything
    that is not a pipe, or where poll() is missing.
    """
    import select
    import stat

    if stream is None or not hasattr(select, "poll"):
        return False
    try:
        fd = stream.fileno()
        if not stat.S_ISFIFO(os.fstat(fd).st_mode):
            return False
        poller = select.poll()
        poller.register(fd, select.POLLOUT)
        return any(ev & (select.POLLERR | select.POLLHUP) for _, ev in poller.poll(0))
    except (OSError, ValueError, io.UnsupportedOperation):
        return False


class VideoWriter:
    """An output video being written; see the module docstring."""

    def __init__(
        self,
        target: str | Path,
        *,
        width: int,
        height: int,
        fps: Fraction,
        time_base: Fraction,
        audio_stream=None,
        cfg: WriterConfig = WriterConfig(),
        stdout: BinaryIO | None = None,
    ) -> None:
        import av

        self.cfg = cfg
        self.target = str(target)
        self.format = resolve_format(target, cfg)
        spec = FORMATS[self.format]
        self._spec = spec
        self._to_pipe = self.target == "-"
        self._label = "stdout" if self._to_pipe else self.target
        self.final_path: Optional[Path] = None if self._to_pipe else Path(self.target)
        self.temp_path: Optional[Path] = None if self._to_pipe else partial_path(Path(self.target))
        self.frames_written = 0
        self._closed = False
        self._audio_queue: deque = deque()
        self._last_video_time = Fraction(-10**9)
        self._pad = (0, 0)
        pix_fmt = cfg.pix_fmt or spec.pix_fmt
        if pix_fmt.startswith("yuv420") or pix_fmt.startswith("yuv422") or pix_fmt == "nv12":
            self._pad = (height % 2, width % 2)
        self.width, self.height = width + self._pad[1], height + self._pad[0]
        if self._pad != (0, 0):
            log.warning("output is %dx%d; %s needs even sides, padding to %dx%d",
                        width, height, pix_fmt, self.width, self.height)
        options = dict(spec.pipe_options if self._to_pipe else spec.file_options)
        self._stdout = (stdout or sys.stdout.buffer) if self._to_pipe else None
        if self._to_pipe:
            file = _Pipe(self._stdout)
        else:
            self.final_path.parent.mkdir(parents=True, exist_ok=True)
            file = str(self.temp_path)
        try:
            self._container = av.open(file, "w", format=spec.muxer, options=options)
        except (av.error.FFmpegError, OSError) as exc:
            raise OutputError(f"cannot open {self._label} for writing: {exc}") from None
        self._fps = Fraction(fps) if fps else Fraction(25)
        self._time_base = Fraction(time_base) if (time_base and spec.timestamps) else 1 / self._fps
        self._pts = MonotonicPts(min_step(self._time_base, _CONTAINER_TICK.get(spec.muxer)))
        codec = cfg.codec or spec.codec
        try:
            self._video = self._container.add_stream(codec, rate=self._fps)
        except (av.error.FFmpegError, ValueError) as exc:
            self._abort()
            raise OutputError(f"cannot encode with codec {codec!r}: {exc}") from None
        self._video.width, self._video.height = self.width, self.height
        self._video.pix_fmt = pix_fmt
        self._video.codec_context.time_base = self._time_base
        self._video.time_base = self._time_base
        if codec in ("libx264", "libx265", "h264", "hevc"):
            self._video.options = {"crf": str(cfg.crf), "preset": cfg.preset}
        self._audio = None
        self._adts: Optional[aac.AdtsToAsc] = None
        self._held: Optional[list] = None  # video packets waiting for the audio configuration (ADTS input)
        if audio_stream is not None and cfg.audio:
            self._audio = self._add_audio(audio_stream)

    def _add_audio(self, template):
        name = template.codec_context.name
        if not self._spec.audio:
            log.warning("%s output cannot carry audio; the input's %s audio is dropped", self.format, name)
            return None
        if self.format == "mpegts":  # FFmpeg's codec query only lists mpegts' defaults
            supported = _MPEGTS_AUDIO
        else:
            supported = getattr(self._container, "supported_codecs", {name})
        if name not in supported:
            log.warning("%s cannot hold %s audio; it is dropped (use --format matroska or nut to keep it)",
                        self.format, name)
            return None
        if aac.needs_conversion(template, self._spec.muxer):
            # the header needs the AAC configuration, which only the first audio packet tells
            self._adts, self._held = aac.AdtsToAsc(template), []
        return self._container.add_stream_from_template(template)

    @contextmanager
    def _writing(self) -> Iterator[None]:
        """FFmpeg errors while encoding or muxing -> OutputError; a closed stdout stays BrokenPipeError."""
        import av

        try:
            yield
        except BrokenPipeError:
            raise
        except (av.error.FFmpegError, ValueError) as exc:
            raise OutputError(f"cannot write {self._label} ({self.format}): {exc}") from None

    # ----------------------------------------------------------------------------------------------
    def write(self, frames: np.ndarray, pts: Iterable[int] | None = None) -> None:
        """Encode [N,H,W,3] uint8 RGB frames with their input timestamps (input time-base units)."""
        import av

        if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
            raise ValueError(f"frames must be [N,H,W,3] uint8, got {frames.shape} {frames.dtype}")
        h, w = frames.shape[1:3]
        if (h + self._pad[0], w + self._pad[1]) != (self.height, self.width):
            raise ValueError(f"frame size {w}x{h} does not match the size this output was opened with "
                             f"({self.width - self._pad[1]}x{self.height - self._pad[0]})")
        if self._pad != (0, 0):
            frames = np.pad(frames, ((0, 0), (0, self._pad[0]), (0, self._pad[1]), (0, 0)), mode="edge")
        pts_list = list(pts) if pts is not None else [None] * len(frames)
        if len(pts_list) != len(frames):
            raise ValueError(f"{len(frames)} frames but {len(pts_list)} timestamps")
        if self._to_pipe and reader_gone(self._stdout):
            raise BrokenPipeError("the program reading stdout closed the pipe")
        with self._writing():
            for image, p in zip(frames, pts_list):
                frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
                if self._spec.timestamps and p is not None:
                    frame.pts = self._pts(p)
                else:
                    frame.pts = self.frames_written
                frame.time_base = self._time_base
                self._last_video_time = frame.pts * self._time_base
                self._mux(self._video.encode(frame))
                self.frames_written += 1
                self._flush_audio(self._last_video_time)

    def write_audio(self, packets: Iterable) -> None:
        """Queue input audio packets; they are muxed unchanged, interleaved with the video by time."""
        if self._audio is None:
            return
        with self._writing():
            for packet in packets:
                copy = copy_packet(packet)
                if self._adts is None:
                    self._audio_queue.append(copy)
                    continue
                self._audio_queue.extend(self._adts.filter(copy))
                if self._held is not None:
                    self._start(self._adts.config)
            self._flush_audio(self._last_video_time)

    def _start(self, config: Optional[bytes]) -> None:
        """Give the audio stream its AAC configuration, then mux the video packets held until now."""
        if config is None:
            raise OutputError(f"cannot copy the input's AAC audio into {self.format}: its configuration is "
                              "unknown; use --format nut or mpegts, or drop the audio (output.audio=false)")
        self._audio.codec_context.extradata = config
        held, self._held = self._held, None
        self._mux(held)

    def _flush_audio(self, until: Optional[Fraction]) -> None:
        if self._held is not None:
            return
        while self._audio_queue:
            packet = self._audio_queue[0]
            t = packet.pts if packet.pts is not None else packet.dts
            if until is not None and t is not None and t * packet.time_base > until:
                break
            self._audio_queue.popleft()
            packet.stream = self._audio
            self._container.mux(packet)

    def _mux(self, packets) -> None:
        if self._held is not None:
            self._held.extend(packets)
        elif packets:
            self._container.mux(packets)

    # ----------------------------------------------------------------------------------------------
    def close(self, *, ok: bool) -> None:
        """Finish the output. ``ok=True``: flush and rename into place; ``ok=False``: discard it."""
        if self._closed:
            return
        self._closed = True
        if not ok:
            self._abort()
            return
        try:
            with self._writing():
                self._mux(self._video.encode(None))
                if self._held is not None:  # no audio packet ever came
                    self._start(self._adts.fallback_config())
                self._flush_audio(None)
                self._container.close()
                if self._stdout is not None:
                    self._stdout.flush()
        except BaseException:
            self._abort()
            raise
        if self._pts.repaired:
            log.warning(repair_message(self._pts.repaired, self.frames_written, self._label))
        if self.temp_path is not None:
            self.temp_path.replace(self.final_path)

    def _abort(self) -> None:
        self._closed = True
        try:
            self._container.close()
        except Exception:  # closing a half-written container may fail; the file is deleted anyway
            pass
        if self.temp_path is not None:
            self.temp_path.unlink(missing_ok=True)

    def __enter__(self) -> "VideoWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.close(ok=exc_type is None)
