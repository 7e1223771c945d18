"""Synthetic test media written in-process with PyAV (no files needed; BytesIO works)."""
from __future__ import annotations

import io
from fractions import Fraction
from pathlib import Path
from typing import BinaryIO

import av
import numpy as np


def pattern(i: int, height: int, width: int) -> np.ndarray:
    """A frame whose content identifies frame ``i`` (moving bar + gradient)."""
    y, x = np.mgrid[0:height, 0:width]
    img = np.zeros((height, width, 3), np.uint8)
    img[..., 0] = (x * 255 // max(width - 1, 1)).astype(np.uint8)
    img[..., 1] = (y * 255 // max(height - 1, 1)).astype(np.uint8)
    img[..., 2] = (i * 37) % 256
    bar = (i * 7) % width
    img[:, bar : bar + 4] = 255
    return img


def make_video(
    target: str | Path | BinaryIO,
    *,
    n_frames: int = 6,
    width: int = 64,
    height: int = 48,
    fps: int = 25,
    container: str = "mp4",
    codec: str = "libx264",
    vfr: bool = False,
    audio: bool = True,
    rotation: int = 0,
    movflags: str | None = None,
    pix_fmt: str = "yuv420p",
) -> list[Fraction]:
    """Write a clip; returns the frame presentation times in seconds as written.

    ``vfr`` spaces frames irregularly (1, 2 or 3 periods of 1/fps, cycling) in a 1/(6 fps) time base.
    ``codec="ffv1", pix_fmt="bgr0"`` is lossless: frames decode to exactly :func:`pattern`.
    """
    options = {"movflags": movflags} if movflags else {}
    out = av.open(target, "w", format=container, options=options)
    tb = Fraction(1, fps * 6) if vfr else Fraction(1, fps)
    stream = out.add_stream(codec, rate=fps)
    stream.width, stream.height = width, height
    stream.pix_fmt = pix_fmt
    stream.codec_context.time_base = tb
    if codec == "libx264":
        stream.options = {"preset": "ultrafast", "crf": "20"}
    if rotation:
        stream.set_display_rotation(rotation)
    astream = None
    if audio:
        astream = out.add_stream("aac", rate=16000)
        astream.layout = "mono"
    times = []
    t = 0
    for i in range(n_frames):
        frame = av.VideoFrame.from_ndarray(pattern(i, height, width), format="rgb24")
        frame.pts = t
        frame.time_base = tb
        times.append(t * tb)
        out.mux(stream.encode(frame))
        t += 6 * ((i % 3) + 1) if vfr else 1
    out.mux(stream.encode(None))
    if astream is not None:
        n_samples = int(16000 * (t * tb))
        samples = (0.2 * np.sin(2 * np.pi * 440 * np.arange(n_samples) / 16000)).astype(np.float32)
        chunk = 1024
        for k in range(0, n_samples, chunk):
            part = samples[k : k + chunk]
            aframe = av.AudioFrame.from_ndarray(part[None], format="fltp", layout="mono")
            aframe.sample_rate = 16000
            aframe.pts = k
            aframe.time_base = Fraction(1, 16000)
            out.mux(astream.encode(aframe))
        out.mux(astream.encode(None))
    out.close()
    return times


def video_bytes(**kwargs) -> bytes:
    """The clip of :func:`make_video` as bytes (in-memory; faststart mp4 goes through a temp file)."""
    if "faststart" in (kwargs.get("movflags") or ""):
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "clip.mp4"
            make_video(path, **kwargs)
            return path.read_bytes()
    buf = io.BytesIO()
    make_video(buf, **kwargs)
    return buf.getvalue()


def probe(source: str | Path | BinaryIO, fmt: str | None = None, options: dict | None = None) -> dict:
    """Decode everything: frame times (s), frame count, size, audio packet count and duration."""
    with av.open(source, "r", format=fmt, options=options or {}) as c:
        v = c.streams.video[0]
        has_audio = bool(c.streams.audio)
        times, n_audio, audio_samples = [], 0, 0
        size = None
        streams = [v] + ([c.streams.audio[0]] if has_audio else [])
        for packet in c.demux(streams):
            if packet.stream.type == "audio":
                if packet.size:
                    n_audio += 1
                    audio_samples += packet.duration or 0
                continue
            for frame in packet.decode():
                size = (frame.width, frame.height)
                times.append(frame.pts * frame.time_base if frame.pts is not None else None)
        return {"times": times, "n": len(times), "size": size, "has_audio": has_audio,
                "audio_packets": n_audio, "audio_codec": c.streams.audio[0].codec_context.name if has_audio else None}


def make_video_with_pts(
    target: str | Path | BinaryIO,
    pts: list[int],
    *,
    container: str = "matroska",
    time_base: Fraction = Fraction(1, 1000),
    width: int = 64,
    height: int = 48,
) -> None:
    """A lossless (ffv1, bgr0) clip whose frame ``i`` is ``pattern(i)`` stored with timestamp ``pts[i]``.

    The timestamps may repeat or go backwards (what broken recorders write): each packet gets it as its
    presentation time, with a decode time that still increases (``i`` ticks, so pts must be >= i).
    """
    out = av.open(target, "w", format=container)
    stream = out.add_stream("ffv1", rate=25)
    stream.width, stream.height, stream.pix_fmt = width, height, "bgr0"
    stream.codec_context.time_base = time_base
    stream.time_base = time_base
    for i, p in enumerate(pts):
        assert p >= i, "a packet's pts cannot precede its dts"
        frame = av.VideoFrame.from_ndarray(pattern(i, height, width), format="rgb24")
        frame.pts, frame.time_base = i, time_base
        for packet in stream.encode(frame):  # ffv1 is intra-only: one packet per frame, in order
            packet.pts, packet.time_base = p, time_base
            out.mux(packet)
    for packet in stream.encode(None):
        out.mux(packet)
    out.close()


def which_pattern(image: np.ndarray, n: int) -> int:
    """The ``i < n`` whose :func:`pattern` is closest to a decoded (possibly lossy) frame."""
    h, w = image.shape[:2]
    errors = [np.abs(image.astype(int) - pattern(i, h, w)).mean() for i in range(n)]
    return int(np.argmin(errors))


def decode(source: str | Path | BinaryIO, fmt: str | None = None) -> tuple[np.ndarray, list[Fraction]]:
    """All video frames (RGB) and their times in seconds."""
    with av.open(source, "r", format=fmt) as c:
        frames, times = [], []
        for frame in c.decode(video=0):
            frames.append(frame.to_ndarray(format="rgb24"))
            times.append(frame.pts * frame.time_base if frame.pts is not None else None)
    return np.stack(frames), times
