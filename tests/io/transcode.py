"""Reader -> writer without models, in-process or as a child process writing to the real stdout.

    python -m tests.io.transcode SRC FORMAT      # every frame + audio packet of SRC to stdout as FORMAT
    python -m tests.io.transcode noise FORMAT N  # N frames of 128x96 noise (incompressible) to stdout

A child that finds its stdout closed exits with status 3 and says ``BrokenPipeError`` on stderr; any
other error is a traceback and status 1.
"""
from __future__ import annotations

import os
import sys
from fractions import Fraction
from typing import BinaryIO, Optional

import numpy as np

from vidtriplane.io.reader import open_video
from vidtriplane.io.writer import VideoWriter, WriterConfig

BROKEN_PIPE_STATUS = 3


def transcode(src, target, cfg: WriterConfig, stdout: Optional[BinaryIO] = None, batch: int = 3):
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


def noise(fmt: str, n: int) -> None:
    """Write ``n`` frames of noise to stdout (enough bytes to fill any pipe buffer)."""
    rng = np.random.default_rng(0)
    writer = VideoWriter("-", width=128, height=96, fps=Fraction(25), time_base=Fraction(1, 25),
                         cfg=WriterConfig(format=fmt, preset="ultrafast"))
    try:
        for i in range(n):
            writer.write(rng.integers(0, 256, (1, 96, 128, 3), dtype=np.uint8), [i])
        writer.close(ok=True)
    finally:
        writer.close(ok=False)


def main(argv: list[str]) -> int:
    try:
        if argv[0] == "noise":
            noise(argv[1], int(argv[2]))
        else:
            transcode(argv[0], "-", WriterConfig(format=argv[1], preset="ultrafast"), batch=4)
    except BrokenPipeError as exc:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
        print(f"{type(exc).__name__}: {exc}", file=sys.stderr)
        return BROKEN_PIPE_STATUS
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
