"""One video through the render pipeline: open the input and the outputs, stream, close.

    report = render_video("in.mp4", "out.mp4", models, cfg)

Every input frame gives exactly one output frame with the input's timestamp (repaired only when the
input's timestamps repeat or go backwards); audio packets are copied through unchanged. File outputs
appear under their final names only when complete; on any error none is left behind.
"""
from __future__ import annotations

import logging
import sys
import time
from pathlib import Path
from typing import BinaryIO, Callable, Optional

from vidtriplane.config.render import PipelineConfig
from vidtriplane.io.reader import open_video
from vidtriplane.io.writer import VideoWriter
from vidtriplane.pipeline import stream
from vidtriplane.pipeline.build import Models, build_chain, choose_batch_size
from vidtriplane.pipeline.outputs import planned_outputs
from vidtriplane.pipeline.report import RunReport, StageClock
from vidtriplane.stages import composite
from vidtriplane.types import FrameBatch

log = logging.getLogger(__name__)


def render_video(
    source: str | Path,
    target: str | Path,
    models: Models,
    cfg: PipelineConfig,
    *,
    progress: bool = True,
    stdin: BinaryIO | None = None,
    stdout: BinaryIO | None = None,
    on_frames: Optional[Callable[[int], None]] = None,
) -> RunReport:
    """Render one video ``source`` (path or "-") into ``target`` (path or "-"); see the module docstring.

    ``on_frames(n)`` is called with the number of frames each time a batch is written (a runner's progress).

    Raises ``InputError``, ``OutputError``, ``PipelineError`` or ``OutOfMemory`` (all VidtriplaneErrors).
    """
    from tqdm import tqdm

    t0 = time.perf_counter()
    clock = StageClock()
    reader = open_video(source, cfg.input, stdin=stdin)
    writers: dict[str, VideoWriter] = {}
    bar: Optional[tqdm] = None
    try:
        meta = reader.meta
        targets = planned_outputs(target, cfg)
        shapes = composite.output_shapes(meta, cfg)
        for name, (w, h) in shapes.items():
            writers[name] = VideoWriter(targets[name], width=w, height=h, fps=meta.fps, time_base=meta.time_base,
                                        audio_stream=reader.audio_stream, cfg=cfg.output, stdout=stdout)
        batch_size = choose_batch_size(cfg, models.device)
        report = RunReport(input=str(source), outputs=targets, batch_size=batch_size, device=str(models.device),
                           weights="generated" if models.generated else "loaded")
        log.info("%s: %dx%d, %s fps, %s frames; batch size %d on %s", source, meta.width, meta.height,
                 float(meta.fps), meta.n_frames or "?", batch_size, models.device)
        chain = build_chain(cfg, models, meta.source, batch_size)
        bar = tqdm(total=meta.n_frames, unit="frame", file=sys.stderr, disable=not progress,
                   desc=Path(str(meta.source)).name or "stdin", dynamic_ncols=True)

        def write(batch: FrameBatch) -> None:
            for name, writer in writers.items():
                writer.write(batch.outputs[name], batch.pts)
                writer.write_audio(batch.extras.get("audio_packets", ()))
            bar.update(len(batch))
            if on_frames is not None:
                on_frames(len(batch))

        def write_audio(packets: list) -> None:
            for writer in writers.values():
                writer.write_audio(packets)

        stream.run(reader.batches(batch_size), reader.remaining_audio, chain, write, write_audio,
                   queue_size=cfg.runtime.queue_size, clock=clock, report=report)
        chain.prepare.finish(meta.source)
        for writer in writers.values():
            writer.close(ok=True)
        report.repaired_timestamps = getattr(reader, "repaired_timestamps", 0)
    finally:
        if bar is not None:
            bar.close()
        for writer in writers.values():
            writer.close(ok=False)
        reader.close()
    report.batch_size = chain.infer.size
    report.seconds = time.perf_counter() - t0
    report.fps = report.frames / report.seconds if report.seconds else 0.0
    report.stage_seconds = clock.rounded()
    if chain.prepare.geometry_seconds:
        report.stage_seconds["geometry"] = round(chain.prepare.geometry_seconds, 3)
    report.preprocess = chain.prepare.report
    if report.faces_found == 0:
        log.warning("%s: no face was found in any of its %d frames; every frame used the fallback crop and "
                    "camera (check the input, or lower preprocess.landmarks.min_confidence)", source, report.frames)
    elif report.faces_found is not None and report.faces_found < report.frames:
        log.warning("%s: %d of %d frames had no face (%d held the last face's crop and camera, %d used the "
                    "fallback)", source, report.frames - report.faces_found, report.frames, report.held or 0,
                    report.fallback or 0)
    return report
