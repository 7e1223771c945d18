"""Configs of the video reader and writer (``input:`` and ``output:`` sections of a render config)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional


@dataclass(frozen=True)
class ReaderConfig:
    """How to open and decode the input."""

    format: Optional[str] = None
    """Force a container format (y4m, nut, matroska, mpegts, mp4, rawvideo); None = probe."""
    raw_size: Optional[str] = None
    """rawvideo only: frame size ``WIDTHxHEIGHT``."""
    raw_pix_fmt: str = "rgb24"
    """rawvideo only: pixel format (rgb24, bgr24, yuv420p, gray, ...)."""
    raw_rate: str = "25"
    """rawvideo only: frame rate (``25``, ``30000/1001``)."""
    threads: int = 0
    """Decoder threads; 0 = FFmpeg's automatic choice (frame + slice threading)."""
    audio: bool = True
    """Collect the first audio stream's packets for remuxing."""


@dataclass(frozen=True)
class WriterConfig:
    """How outputs are encoded."""

    format: Optional[str] = None
    """Container: mp4, mov, matroska, nut, mpegts, y4m, rawvideo. None = from the file extension
    (required for stdout)."""
    codec: Optional[str] = None
    """Video codec; None = the format's default (libx264; rawvideo for y4m/rawvideo)."""
    crf: int = 18
    """libx264/libx265 constant rate factor (lower = better, bigger)."""
    preset: str = "medium"
    """libx264/libx265 speed preset."""
    pix_fmt: Optional[str] = None
    """Encoded pixel format; None = the format's default (yuv420p; rgb24 for rawvideo)."""
    audio: bool = True
    """Copy the input's audio packets into the output when the container can hold them."""
