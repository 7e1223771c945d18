"""The streaming runtime: order, bounded channels, and errors raised in any thread reaching the caller."""
from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest

from tests.io.media import make_video
from vidtriplane.io.reader import InputError, VideoReader
from vidtriplane.io.writer import VideoWriter
from vidtriplane.pipeline import stream
from vidtriplane.pipeline.build import Chain
from vidtriplane.pipeline.report import RunReport, StageClock
from vidtriplane.types import FrameBatch, VideoMeta

META = VideoMeta(width=4, height=4, fps=Fraction(25), time_base=Fraction(1, 50))


def batches(n: int, size: int = 2):
    for start in range(0, n, size):
        idx = np.arange(start, min(n, start + size))
        frames = np.repeat(idx[:, None, None, None].astype(np.uint8), 4, 1).repeat(4, 2).repeat(3, 3)
        yield FrameBatch(meta=META, index=idx, pts=10 + 2 * idx, frames=frames, extras={"audio_packets": [int(start)]})


def fake_chain(fail_in: str | None = None, at: int = 1) -> Chain:
    calls = {"prepare": 0, "infer": 0}

    def prepare(batch):
        calls["prepare"] += 1
        if fail_in == "prepare" and calls["prepare"] == at + 1:
            raise ValueError("prepare exploded")
        return batch.with_fields(crops=batch.frames)

    def infer(batch, clock):
        calls["infer"] += 1
        if fail_in == "infer" and calls["infer"] == at + 1:
            raise KeyboardInterrupt  # a signal in the calling thread
        return batch.with_fields(rendered={"same": batch.crops + 1})

    prepare.finish = lambda source: None
    return Chain(prepare=prepare, infer=infer, compose=lambda b: b.with_fields(outputs={"": b.rendered["same"]}))


def run(chain, source, written, audio):
    report = RunReport(input="x", outputs={})
    stream.run(source, lambda: ["tail"], chain, written.append, audio.extend, queue_size=1,
               clock=StageClock(), report=report)
    return report


def test_batches_flow_in_order_with_seconds_from_the_first_frame():
    written, audio = [], []
    report = run(fake_chain(), batches(7), written, audio)
    assert report.frames == 7 and audio == ["tail"]
    assert np.concatenate([b.index for b in written]).tolist() == list(range(7))
    assert np.concatenate([b.outputs[""][:, 0, 0, 0] for b in written]).tolist() == [i + 1 for i in range(7)]
    assert np.concatenate([b.seconds for b in written]) == pytest.approx(np.arange(7) * 2 / 50)


def test_an_error_in_the_decode_thread_reaches_the_caller():
    def broken():
        yield from batches(2)
        raise InputError("decode exploded")

    written = []
    with pytest.raises(InputError, match="decode exploded"):
        run(fake_chain(), broken(), written, [])
    assert len(written) <= 1


def test_an_error_in_the_prepare_thread_reaches_the_caller():
    with pytest.raises(ValueError, match="prepare exploded"):
        run(fake_chain("prepare"), batches(20), [], [])


def test_an_error_in_the_encode_thread_reaches_the_caller():
    def write(batch):
        if batch.index[0] >= 2:
            raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space left"):
        stream.run(batches(20), lambda: [], fake_chain(), write, lambda a: None, queue_size=1,
                   clock=StageClock(), report=RunReport(input="x", outputs={}))


def test_a_signal_in_the_calling_thread_stops_every_thread():
    with pytest.raises(KeyboardInterrupt):
        run(fake_chain("infer"), batches(50), [], [])


# -- the same through render_video with the real reader and writer: nothing is left behind ----------------

@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    path = tmp_path_factory.mktemp("in") / "c.mkv"
    make_video(path, n_frames=8, width=64, height=64, container="matroska")
    return path


@pytest.mark.parametrize("where", ["decode", "encode"])
def test_thread_errors_in_render_video_leave_no_output(tmp_path, clip, monkeypatch, where):
    from tests.pipeline.test_video import tiny_cfg
    from vidtriplane.pipeline import load_models, render_video

    if where == "decode":
        real = VideoReader.batches

        def failing(self, size):
            it = real(self, size)
            yield next(it)
            raise InputError("corrupt packet in the middle")

        monkeypatch.setattr(VideoReader, "batches", failing)
        expected = (InputError, "corrupt packet")
    else:
        real_write = VideoWriter.write

        def failing_write(self, frames, pts=None):
            if self.frames_written:
                raise OSError(28, "No space left on device")
            return real_write(self, frames, pts)

        monkeypatch.setattr(VideoWriter, "write", failing_write)
        expected = (OSError, "No space left")
    cfg = tiny_cfg("runtime.cpu_batch_size=2")
    with pytest.raises(expected[0], match=expected[1]):
        render_video(clip, tmp_path / "o.mp4", load_models(cfg), cfg, progress=False)
    assert list(tmp_path.iterdir()) == []
