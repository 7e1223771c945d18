"""Cutting a video into segments and stitching them back: the same output as one whole-video run.

No Ray here: the plan, the segments and the stitch are run in this process, in order, with the tiny
generated-weights model (the Ray tests run the same functions on workers)."""
from __future__ import annotations

import json
import os
from pathlib import Path

import av
import numpy as np
import pytest
import torch

from tests.io.media import decode, make_video, make_video_with_pts
from tests.runners.media import FAST, assert_same_video, face_clip, pattern_clip
from vidtriplane.config import resolve
from vidtriplane.pipeline import load_models, render_video
from vidtriplane.runners.jobs import Job
from vidtriplane.runners.render import RenderTask
from vidtriplane.runners.segments import (SegmentMismatch, cut, frame_times, load_plan, plan_key, segment_files,
                                          work_folder)


def test_cuts_fall_on_batch_boundaries_and_cover_every_frame():
    assert cut(60, 20, 4) == ((0, 20), (20, 40), (40, 60))
    assert cut(30, 10, 4) == ((0, 12), (12, 24), (24, 30))  # 10 rounded up to a multiple of the batch
    for n, length, batch in [(61, 7, 3), (5, 100, 2), (64, 1, 8)]:
        segments = cut(n, length, batch)
        assert segments[0][0] == 0 and segments[-1][1] == n
        assert all(a[1] == b[0] for a, b in zip(segments, segments[1:]))  # no gap, no overlap
        assert all(start % batch == 0 for start, _ in segments)


def test_frame_times_are_the_decoded_timestamps(tmp_path):
    vfr = tmp_path / "vfr.mp4"
    make_video(vfr, n_frames=9, vfr=True)
    keyframes = tmp_path / "gop.mp4"
    pattern_clip(keyframes, 20, gop=4)  # B-frames: packets come in decode order
    for path in (vfr, keyframes):
        with av.open(str(path)) as c:
            decoded = [f.pts for f in c.decode(video=0)]
        assert frame_times(path) == decoded and len(decoded) in (9, 20)
    repeated = tmp_path / "repeated.mkv"
    make_video_with_pts(repeated, [0, 40, 40, 120])
    assert frame_times(repeated) is None  # cannot be cut by timestamp: rendered whole


def test_segment_reader_seeks_between_keyframes(tmp_path):
    from vidtriplane.config.media import ReaderConfig
    from vidtriplane.io.reader import open_video
    from vidtriplane.runners.segment_render import segment_batches

    src = tmp_path / "gop.mp4"
    pattern_clip(src, 30, gop=7)
    frames, _ = decode(str(src))
    pts = frame_times(src)
    for start, end in [(0, 6), (9, 21), (24, 30)]:  # 9 and 24 are not keyframes (0, 7, 14, 21, 28 are)
        with open_video(src, ReaderConfig(audio=False)) as reader:
            batches = list(segment_batches(reader, start, tuple(pts[start:end]), 4))
        assert [len(b) for b in batches] == [min(4, end - s) for s in range(start, end, 4)]
        assert np.concatenate([b.index for b in batches]).tolist() == list(range(start, end))
        assert np.concatenate([b.pts for b in batches]).tolist() == pts[start:end]
        assert np.array_equal(np.concatenate([b.frames for b in batches]), frames[start:end])
    with open_video(src, ReaderConfig(audio=False)) as reader:  # an index that does not fit the video
        with pytest.raises(SegmentMismatch, match="--segment-frames 0"):
            list(segment_batches(reader, 9, tuple(p + 1 for p in pts[9:12]), 4))


def render_in_segments(task: RenderTask, job: Job, models, segment_frames: int):
    """What the Ray runner does, in this process: plan, every segment, stitch."""
    key = plan_key(job, "config", segment_frames)
    plan = task.plan_segments(job, models, key=key, segment_frames=segment_frames, workers=2)
    assert plan is not None
    reports = [task.render_segment(job, models, plan, i) for i in range(len(plan.segments))]
    for i in range(len(plan.segments)):
        assert all(p.exists() for p in segment_files(work_folder(job.target), i, plan.shapes).values())
    return plan, task.stitch(job, plan, reports)


@pytest.fixture(scope="module")
def threads():
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


@pytest.mark.parametrize("extra,outputs", [
    (["render.views=[{name: novel, mode: sway, yaw: 0.3}]"], 1),  # a moving camera: needs the start time
    (["render.views=[{name: a, yaw: 0.3}, {name: b, yaw: -0.3}]", "composite.views_output=separate",
      "composite.layout=crop"], 2),
])
def test_aligned_pipeline_in_segments_is_the_whole_run(tmp_path, threads, extra, outputs):
    cfg = resolve("render", pipeline="aligned", configs=["generated-tiny"], overrides=[*FAST, *extra])
    src = tmp_path / "clip.mp4"
    pattern_clip(src, 26, gop=5)
    models = load_models(cfg)
    task = RenderTask(cfg, save_report=True, progress=False)
    whole = render_video(src, tmp_path / "whole.mp4", models, cfg, progress=False)
    job = Job(str(src), str(tmp_path / "cut.mp4"), tuple(task.outputs(str(tmp_path / "cut.mp4"))))
    plan, report = render_in_segments(task, job, models, 10)
    assert plan.segments == ((0, 12), (12, 24), (24, 26)) and plan.batch_size == 4
    assert len(whole.outputs) == len(report["outputs"]) == outputs
    for name, path in whole.outputs.items():
        assert_same_video(Path(report["outputs"][name]), Path(path))
    assert report["frames"] == whole.frames == 26 and report["segments"] == 3
    saved = json.loads((tmp_path / "cut.report.json").read_text())
    assert saved["frames"] == 26 and saved["stitch_seconds"] >= 0
    assert not work_folder(job.target).exists()  # removed once stitched


@pytest.mark.parametrize("mode", ["auto", "causal"])  # auto = offline for a file: the local run has a pass too
def test_face_pipeline_in_segments_is_the_whole_run(tmp_path, threads, monkeypatch, mode):
    """Tracking and smoothing need the frames before a segment: the geometry pass gives them."""
    pytest.importorskip("dlib")
    from vidtriplane.cache import PoseCache, hash_file
    from vidtriplane.stages import preprocess

    monkeypatch.setenv("VIDTRIPLANE_CACHE", str(tmp_path / "cache"))
    overrides = [*FAST, f"preprocess.smooth.mode={mode}"]
    cfg = resolve("render", pipeline="default", configs=["generated-tiny"], overrides=overrides)
    src = tmp_path / "face.mp4"
    face_clip(src, 28, blank=(12, 13))  # no face right at a segment start
    models = load_models(cfg)
    local_cfg = resolve("render", pipeline="default", configs=["generated-tiny"],
                        overrides=[*overrides, "runtime.pose_cache=false"])
    whole = render_video(src, tmp_path / "whole.mp4", models, local_cfg, progress=False)
    task = RenderTask(cfg, progress=False)
    job = Job(str(src), str(tmp_path / "cut.mp4"), (str(tmp_path / "cut.mp4"),))
    plan, report = render_in_segments(task, job, models, 12)
    assert len(plan.segments) == 3 and plan.geometry
    assert_same_video(tmp_path / "cut.mp4", tmp_path / "whole.mp4")
    assert (report["faces_found"], report["held"]) == (whole.faces_found, whole.held) == (26, 2)
    # the geometry pass filled the pose cache as a local run does
    assert PoseCache().load(hash_file(src), cfg.preprocess.geometry_settings()) is not None
    # and it is needed: a segment's geometry computed on its own differs from the whole video's
    from vidtriplane.config.media import ReaderConfig
    from vidtriplane.io.reader import open_video
    from vidtriplane.runners.segment_render import segment_batches

    with open_video(src, ReaderConfig(audio=False)) as reader:
        batch = next(segment_batches(reader, 12, plan.pts[12:16], 4))
    alone, _ = preprocess.geometry(batch, preprocess.PreprocessState(), models.preprocess, cfg.preprocess)
    cached = PoseCache().load(hash_file(src), cfg.preprocess.geometry_settings())
    assert not np.allclose(alone["labels"], cached["labels"][12:16])


def test_matting_segments_start_on_a_key_crop(tmp_path, threads, monkeypatch):
    """Matting with carried alphas keys on multiples of ``every``: segments start at multiples of both it
    and the batch size, so each one's first crop is a key as in the whole run (real u2netp)."""
    for module in ("dlib", "rembg", "onnx"):
        pytest.importorskip(module)
    u2netp = Path(os.environ.get("U2NET_HOME", Path.home() / ".u2net")) / "u2netp.onnx"
    if not u2netp.is_file():
        pytest.skip(f"{u2netp} is absent")
    monkeypatch.setenv("VIDTRIPLANE_CACHE", str(tmp_path / "cache"))
    overrides = [*FAST, "preprocess.matting.enabled=true", "preprocess.matting.every=5"]
    cfg = resolve("render", pipeline="default", configs=["generated-tiny"], overrides=overrides)
    src = tmp_path / "face.mp4"
    face_clip(src, 28)
    models = load_models(cfg)
    whole = render_video(src, tmp_path / "whole.mp4", models, cfg, progress=False)
    task = RenderTask(cfg, progress=False)
    job = Job(str(src), str(tmp_path / "cut.mp4"), (str(tmp_path / "cut.mp4"),))
    plan, _ = render_in_segments(task, job, models, 10)
    assert plan.batch_size == 4 and plan.segments == ((0, 20), (20, 28))  # multiples of 4 and 5
    assert_same_video(tmp_path / "cut.mp4", tmp_path / "whole.mp4")
    assert whole.frames == 28


def test_a_plan_for_another_config_or_input_is_discarded(tmp_path):
    src = tmp_path / "a.mp4"
    pattern_clip(src, 4, audio=False)
    job = Job(str(src), str(tmp_path / "o.mp4"), (str(tmp_path / "o.mp4"),))
    folder = work_folder(job.target)
    folder.mkdir()
    key = plan_key(job, "config A", 10)
    (folder / "plan.json").write_text(json.dumps({"key": key}))  # incomplete: unreadable as a plan
    assert load_plan(folder, key) is None and not folder.exists()
    assert plan_key(job, "config B", 10) != key and plan_key(job, "config A", 20) != key
    pattern_clip(src, 5, audio=False)  # the input changed
    assert plan_key(job, "config A", 10) != key


def test_video_that_cannot_be_cut_is_rendered_whole(tmp_path, threads):
    cfg = resolve("render", pipeline="aligned", configs=["generated-tiny"], overrides=FAST)
    src = tmp_path / "repeated.mkv"
    make_video_with_pts(src, [0, 40, 40, 120, 160, 200], width=64, height=64)
    job = Job(str(src), str(tmp_path / "o.mp4"), (str(tmp_path / "o.mp4"),))
    task = RenderTask(cfg, progress=False)
    assert task.plan_segments(job, load_models(cfg), key="k", segment_frames=2, workers=2) is None


def test_an_interrupted_stitch_leaves_no_output_and_keeps_the_segments(tmp_path, threads):
    import threading

    from vidtriplane.runners.segments import StitchStopped, stitch

    cfg = resolve("render", pipeline="aligned", configs=["generated-tiny"], overrides=FAST)
    src = tmp_path / "clip.mp4"
    pattern_clip(src, 8, gop=3)
    models = load_models(cfg)
    task = RenderTask(cfg, progress=False)
    job = Job(str(src), str(tmp_path / "cut.mp4"), (str(tmp_path / "cut.mp4"),))
    plan = task.plan_segments(job, models, key="k", segment_frames=4, workers=2)
    reports = [task.render_segment(job, models, plan, i) for i in range(len(plan.segments))]
    stop = threading.Event()
    stop.set()
    with pytest.raises(StitchStopped):
        stitch(job, plan, cfg, stop=stop)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".cut.ray", "clip.mp4"]  # no output, no partial file
    task.stitch(job, plan, reports)
    assert len(decode(str(tmp_path / "cut.mp4"))[0]) == 8 and not work_folder(job.target).exists()
