"""The geometry pass of a video file: landmarks, crops and poses of every frame, smoothed over the whole video.

    geo, report = video_geometry("talk.mp4", cfg.preprocess, models.preprocess, cfg.input)

The offline smoother needs the whole video's raw geometry before the first crop is cut, so a file is read
twice: this pass (decode + landmarks in two threads, the luma plane only or RGB for the mtcnn backend;
then the smoother over the sequence) and then the streaming render or preprocess pass, which reads these
arrays exactly as it reads a pose cache hit (``Preprocessor(cached=geo)``). Segments of one video (a Ray
run) all read the same arrays. The second decode costs a few ms a frame (``benchmarks/preprocess_bench.py``),
a fixed-lag smoother inside the stream would save it but could not give segments the same geometry, nor
store it for the cache before the render starts.
"""
from __future__ import annotations

import queue
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np

from vidtriplane.config.media import ReaderConfig
from vidtriplane.config.preprocess import PreprocessConfig

_DONE = object()


def prefetch(items: Iterable[Any], size: int = 2) -> Iterator[Any]:
    """Iterate ``items`` in a background thread, ``size`` ahead; its errors are raised here."""
    q: queue.Queue = queue.Queue(maxsize=size)
    stop = threading.Event()

    def produce() -> None:
        try:
            for item in items:
                while not stop.is_set():
                    try:
                        q.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            q.put(_DONE)
        except BaseException as exc:  # handed to the consumer
            q.put(exc)

    thread = threading.Thread(target=produce, name="vidtriplane-geometry-decode", daemon=True)
    thread.start()
    try:
        while True:
            item = q.get()
            if item is _DONE:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        while thread.is_alive():
            try:
                q.get_nowait()
            except queue.Empty:
                thread.join(timeout=0.1)


def video_geometry(source: str | Path, cfg: PreprocessConfig, models: Any, reader_cfg: ReaderConfig = ReaderConfig(),
                   batch_size: int = 32) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """The whole file's geometry (pose cache arrays) with the offline smoother, and the pass's report
    (counts, tracker counts, jitter of raw vs smoothed axes, ``seconds``)."""
    from vidtriplane.io.reader import open_video
    from vidtriplane.stages import preprocess

    start = time.perf_counter()
    reader = open_video(source, replace(reader_cfg, audio=False))
    # dlib's landmarks need the luma plane only; MTCNN looks at colour (as the official detector does)
    batches = prefetch(reader.batches(batch_size, gray=cfg.landmarks.backend != "mtcnn"))
    try:
        geo, report = preprocess.sequence_geometry(batches, models, cfg, "offline")
    finally:
        batches.close()  # stops the decode thread before its container closes
        reader.close()
    report["seconds"] = round(time.perf_counter() - start, 3)
    return geo, report
