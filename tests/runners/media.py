"""Test media and comparisons for the runners: clips with keyframes, B-frames and audio; "same video" checks."""
from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from tests.io.media import decode, pattern

#: the tiny model with the fastest settings (the CLI tests' settings), as config overrides
FAST = ["model.weights=generated", "runtime.device=cpu", "runtime.torch_threads=1", "render.depth_samples=4",
        "render.importance_samples=4", "render.neural_rendering_resolution=16", "render.size=64",
        "composite.tile=64", "output.preset=ultrafast"]
#: the same as CLI flags
FAST_FLAGS = ["--config", "generated-tiny", "-q", *[a for o in FAST for a in ("--set", o)]]


def encode_clip(path: Path, frames: np.ndarray, *, fps: int = 25, gop: int = 8, audio: bool = True) -> None:
    """An mp4 (libx264 with B-frames and a keyframe every ``gop`` frames, so segments start between
    keyframes) with an AAC tone as long as the video."""
    n, h, w = frames.shape[:3]
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        stream.options = {"preset": "veryfast", "crf": "18", "g": str(gop), "keyint_min": str(gop), "bf": "2"}
        astream = None
        if audio:
            astream = out.add_stream("aac", rate=16000)
            astream.layout = "mono"
        for image in frames:
            out.mux(stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")))
        out.mux(stream.encode(None))
        if astream is not None:
            samples = (0.2 * np.sin(2 * np.pi * 330 * np.arange(16000 * n // fps) / 16000)).astype(np.float32)
            for k in range(0, len(samples), 1024):
                frame = av.AudioFrame.from_ndarray(samples[None, k : k + 1024], format="fltp", layout="mono")
                frame.sample_rate, frame.pts, frame.time_base = 16000, k, Fraction(1, 16000)
                out.mux(astream.encode(frame))
            out.mux(astream.encode(None))


def pattern_clip(path: Path, n: int, size: tuple[int, int] = (64, 64), **kwargs) -> None:
    """:func:`encode_clip` of the numbered test pattern (frame i is recognisable)."""
    encode_clip(path, np.stack([pattern(i, size[1], size[0]) for i in range(n)]), **kwargs)


def face_clip(path: Path, n: int, size: tuple[int, int] = (480, 360), blank: tuple[int, ...] = ()) -> None:
    """:func:`encode_clip` of the drifting, turning astronaut face (``blank`` frames are black)."""
    from tests.stages.face_media import moving_clip

    encode_clip(path, moving_clip(n, size=size, blank=blank))


def audio_packets(path: Path) -> list[tuple[int, bytes]]:
    """(pts, payload) of every audio packet."""
    with av.open(str(path)) as c:
        if not c.streams.audio:
            return []
        return [(p.pts, bytes(p)) for p in c.demux(c.streams.audio[0]) if p.size]


def assert_same_video(got: Path, want: Path) -> None:
    """Same decoded frames, frame count, timestamps and audio packets."""
    a_frames, a_times = decode(str(got))
    b_frames, b_times = decode(str(want))
    assert len(a_frames) == len(b_frames) and a_times == b_times
    assert np.array_equal(a_frames, b_frames), f"{int((a_frames != b_frames).any(axis=(1, 2, 3)).sum())} frames differ"
    assert audio_packets(got) == audio_packets(want)
