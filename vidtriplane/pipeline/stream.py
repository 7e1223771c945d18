"""The streaming runtime: four threads joined by bounded channels, errors handed to the caller.

    decode (thread) -> prepare (thread) -> infer + compose on the device (the calling thread)
    -> encode + audio remux (thread)

Channels hold at most ``runtime.queue_size`` batches, so memory does not grow with the video's length.
The first error of any thread (or a signal in the calling thread: KeyboardInterrupt, SystemExit) stops
every channel; the threads finish their current item and exit, and the error is raised in the caller,
which then discards the unfinished outputs.
"""
from __future__ import annotations

import queue
import threading
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Optional

import numpy as np

from vidtriplane.pipeline.build import Chain
from vidtriplane.pipeline.report import RunReport, StageClock
from vidtriplane.types import FrameBatch


@dataclass
class End:
    """End-of-stream marker; carries the audio demuxed after the last video frame."""

    audio: list


class Channel:
    """A bounded queue whose put/get give up (False/None) once the run is stopped."""

    def __init__(self, size: int, stop: threading.Event) -> None:
        self._q: queue.Queue = queue.Queue(maxsize=size)
        self._stop = stop

    def put(self, item: Any) -> bool:
        while not self._stop.is_set():
            try:
                self._q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def get(self) -> Any:
        while not self._stop.is_set():
            try:
                return self._q.get(timeout=0.1)
            except queue.Empty:
                continue
        return None


def with_seconds(batch: FrameBatch, start_pts: int) -> FrameBatch:
    """Add ``seconds``: presentation time from the video's first frame (``start_pts``)."""
    seconds = (batch.pts - start_pts).astype(np.float64) * float(batch.meta.time_base)
    return batch.with_fields(seconds=seconds)


def run(
    batches: Iterable[FrameBatch],
    remaining_audio: Callable[[], list],
    chain: Chain,
    write: Callable[[FrameBatch], None],
    write_audio: Callable[[list], None],
    *,
    queue_size: int,
    clock: StageClock,
    report: RunReport,
    start_pts: Optional[int] = None,
) -> None:
    """Stream ``batches`` through ``chain`` into ``write``; re-raise the first error of any thread here.

    ``start_pts``: the pts of the video's first frame (default: the first batch's), so a segment of a
    longer video gets the same ``seconds`` as in a whole-video run.
    """
    stop = threading.Event()
    errors: list[BaseException] = []
    decoded, prepared, composed = (Channel(queue_size, stop) for _ in range(3))

    def guarded(fn: Callable[[], None]) -> Callable[[], None]:
        def body() -> None:
            try:
                fn()
            except BaseException as exc:  # handed to the calling thread, which re-raises it
                errors.append(exc)
                stop.set()
        return body

    def decode() -> None:
        it = iter(batches)
        while True:
            with clock("decode"):
                batch = next(it, None)
            if batch is None or not decoded.put(batch):
                break
        if batch is None:
            decoded.put(End(remaining_audio()))

    def prepare() -> None:
        while (item := decoded.get()) is not None:
            if isinstance(item, End):
                prepared.put(item)
                return
            with clock("preprocess"):
                out = chain.prepare(item)
            if not prepared.put(out):
                return

    def encode() -> None:
        while (item := composed.get()) is not None:
            if isinstance(item, End):
                write_audio(item.audio)
                return
            with clock("encode"):
                write(item)

    threads = [threading.Thread(target=guarded(f), name=f"vidtriplane-{f.__name__}", daemon=True)
               for f in (decode, prepare, encode)]
    for t in threads:
        t.start()
    try:
        while (item := prepared.get()) is not None:
            if isinstance(item, End):
                composed.put(item)
                break
            if start_pts is None:
                start_pts = int(item.pts[0])
            batch = chain.infer(with_seconds(item, start_pts), clock)
            with clock("composite"):
                batch = chain.compose(batch)
            report.count(batch)
            if not composed.put(batch):
                break
    except BaseException as exc:
        errors.insert(0, exc)
        stop.set()
    finally:
        for t in threads:
            while t.is_alive():
                t.join(timeout=0.2)
                if errors:
                    stop.set()
    if errors:
        raise errors[0]
