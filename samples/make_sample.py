"""Make ``samples/astronaut.mp4``: a short talking-head-like clip the project generates itself.

The picture is scikit-image's ``astronaut.png`` (NASA photograph of Eileen Collins, public domain)
moved like a speaking head - small smooth nods, sways and zooms - and encoded with libx264 through PyAV,
with a synthetic speech-like audio track (a 180 Hz buzz with a few harmonics, amplitude-modulated at a
syllable rate of ~4 Hz) in AAC.

    pip install scikit-image          # only for this script
    python samples/make_sample.py     # -> samples/astronaut.mp4 (~2 s, 25 fps, 384x384)
"""
from __future__ import annotations

import argparse
import math
from fractions import Fraction
from pathlib import Path

import av
import numpy as np


def head_motion(t: float) -> tuple[float, float, float, float]:
    """(rotation degrees, dx px, dy px, scale) of the picture at time t: slow nods and sways."""
    rot = 2.5 * math.sin(2 * math.pi * 0.7 * t) + 1.0 * math.sin(2 * math.pi * 1.9 * t + 1.0)
    dx = 8.0 * math.sin(2 * math.pi * 0.45 * t + 0.3)
    dy = 4.0 * math.sin(2 * math.pi * 1.3 * t) + 2.0 * math.sin(2 * math.pi * 3.1 * t)
    scale = 1.0 + 0.03 * math.sin(2 * math.pi * 0.35 * t)
    return rot, dx, dy, scale


def frame_at(image: np.ndarray, t: float, size: int, center: tuple[float, float]) -> np.ndarray:
    """The ``size`` x ``size`` view of ``image`` around ``center`` (x, y) moved as at time t."""
    from skimage.transform import AffineTransform, warp

    rot, dx, dy, scale = head_motion(t)
    cx, cy = center
    # output pixel -> input pixel: centre the view on the face, then rotate/scale about it
    to_origin = AffineTransform(translation=(-size / 2, -size / 2))
    motion = AffineTransform(rotation=math.radians(rot), scale=1 / scale)
    to_face = AffineTransform(translation=(cx + dx, cy + dy))
    inverse = AffineTransform(matrix=to_face.params @ motion.params @ to_origin.params)
    out = warp(image, inverse, output_shape=(size, size), mode="edge", preserve_range=True)
    return np.clip(out, 0, 255).astype(np.uint8)


def speech_like(seconds: float, rate: int) -> np.ndarray:
    """Mono float32 samples: a voiced buzz with a syllable envelope (nothing recognisable)."""
    t = np.arange(int(seconds * rate)) / rate
    f0 = 180 + 20 * np.sin(2 * np.pi * 0.8 * t)
    phase = 2 * np.pi * np.cumsum(f0) / rate
    buzz = sum(np.sin(k * phase) / k for k in range(1, 6))
    envelope = np.clip(np.sin(2 * np.pi * 4.0 * t) * 0.8 + 0.2, 0, None) ** 1.5
    return (0.15 * buzz * envelope).astype(np.float32)


def make_sample(out: Path, *, seconds: float = 2.0, fps: int = 25, size: int = 384, crf: int = 30) -> Path:
    """Write the clip to ``out`` (mp4, faststart) and return the path."""
    from skimage import data

    image = data.astronaut().astype(np.float64)  # 512x512 RGB; the face is around (x=215, y=120)
    rate = 48000
    with av.open(str(out), "w", options={"movflags": "+faststart"}) as container:
        video = container.add_stream("libx264", rate=fps)
        video.width = video.height = size
        video.pix_fmt = "yuv420p"
        video.options = {"crf": str(crf), "preset": "slow"}
        audio = container.add_stream("aac", rate=rate)
        audio.layout = "mono"
        for i in range(int(seconds * fps)):
            frame = av.VideoFrame.from_ndarray(frame_at(image, i / fps, size, (220.0, 170.0)), format="rgb24")
            frame.pts = i
            frame.time_base = Fraction(1, fps)
            container.mux(video.encode(frame))
        container.mux(video.encode(None))
        samples = speech_like(seconds, rate)
        for start in range(0, len(samples), 1024):
            chunk = av.AudioFrame.from_ndarray(samples[None, start : start + 1024], format="fltp", layout="mono")
            chunk.sample_rate = rate
            chunk.pts = start
            chunk.time_base = Fraction(1, rate)
            container.mux(audio.encode(chunk))
        container.mux(audio.encode(None))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--output", type=Path, default=Path(__file__).with_name("astronaut.mp4"))
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--fps", type=int, default=25)
    parser.add_argument("--size", type=int, default=384)
    parser.add_argument("--crf", type=int, default=30)
    args = parser.parse_args()
    path = make_sample(args.output, seconds=args.seconds, fps=args.fps, size=args.size, crf=args.crf)
    print(f"wrote {path} ({path.stat().st_size / 1024:.0f} KiB)")


if __name__ == "__main__":
    main()
