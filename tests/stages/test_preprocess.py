"""The joined chain on a moving real face: counts, held frames, fallback, state across batches."""
import numpy as np
import pytest
import torch

from tests.stages.face_media import astronaut, batch_of, moving_clip
from vidtriplane.config.preprocess import SmoothConfig
from vidtriplane.geometry import camera
from vidtriplane.geometry.warp import transform_points
from vidtriplane.stages import preprocess as pp

pytest.importorskip("dlib")


@pytest.fixture(scope="module")
def models():
    return pp.load_models(pp.PreprocessConfig())


@pytest.fixture(scope="module")
def clip():
    return moving_clip(16, blank=(6, 7, 8))


def _run(frames, models, cfg, size):
    state, outs = pp.PreprocessState(), []
    for s in range(0, len(frames), size):
        out, state = pp.apply(batch_of(frames[s:s + size], s), state, models, cfg)
        outs.append(out)
    return outs, state


def _cat(outs, name):
    return np.concatenate([getattr(b, name) for b in outs])


def test_every_frame_comes_out_and_blank_frames_are_held(models, clip):
    cfg = pp.PreprocessConfig()
    outs, state = _run(clip, models, cfg, 5)
    assert sum(len(b) for b in outs) == len(clip)
    found, held = _cat(outs, "face_found"), _cat(outs, "held")
    assert not found[6:9].any() and found[:6].all() and found[9:].all()
    assert held[6:9].all() and held.sum() == 3
    assert state.counts == (16, 13, 3, 0)
    crops, labels, mats = _cat(outs, "crops"), _cat(outs, "labels"), _cat(outs, "crop_matrix")
    assert crops.shape == (16, 512, 512, 3) and crops.dtype == np.uint8 and labels.shape == (16, 25)
    np.testing.assert_array_equal(labels[6], labels[5])  # held pose
    np.testing.assert_array_equal(mats[8], mats[5])  # held crop
    assert crops[7].max() == 0  # the blank frame, cut with the held crop
    # the nose tip lands where the EG3D crop puts it (centred, a little below the middle) on every face frame
    lms = _cat(outs, "landmarks")
    for i in np.flatnonzero(found):
        nose = transform_points(mats[i].astype(np.float64), lms[i, 30:31])[0]
        assert abs(nose[0] - 256) < 40 and 250 < nose[1] < 350


def test_batch_size_does_not_change_the_result(models, clip):
    cfg = pp.PreprocessConfig()
    a, _ = _run(clip, models, cfg, 16)
    b, _ = _run(clip, models, cfg, 3)
    np.testing.assert_allclose(_cat(a, "labels"), _cat(b, "labels"), atol=1e-5)
    np.testing.assert_allclose(_cat(a, "crop_matrix"), _cat(b, "crop_matrix"), atol=1e-4)


def test_fallback_after_hold_frames(models, clip):
    cfg = pp.PreprocessConfig(hold_frames=1, fallback="center")
    outs, state = _run(clip, models, cfg, 16)
    held, fb = _cat(outs, "held"), outs[0].extras["preprocess"]["fallback"]
    assert held.tolist()[6:9] == [True, False, False] and fb.tolist()[6:9] == [False, True, True]
    assert state.counts == (16, 13, 1, 2)
    lab = torch.from_numpy(_cat(outs, "labels")[7].astype(np.float64))
    yaw, pitch = camera.yaw_pitch(lab)
    assert abs(float(yaw)) < 1e-3 and abs(float(pitch)) < 0.01  # frontal camera
    m = _cat(outs, "crop_matrix")[7]
    assert m[0, 0] == pytest.approx(512 / 480, rel=1e-5)  # the centred min(W, H) square


def test_no_face_at_all_uses_the_fallback(models):
    frames = np.zeros((3, 90, 121, 3), np.uint8)
    out, state = pp.apply(batch_of(frames), pp.PreprocessState(), models, pp.PreprocessConfig())
    assert len(out) == 3 and not out.face_found.any() and state.counts == (3, 0, 0, 3)
    assert out.crops.shape == (3, 512, 512, 3)


def test_grey_frames(models):
    grey = np.stack([astronaut().mean(-1).astype(np.uint8)] * 2)
    out, _ = pp.apply(batch_of(grey), pp.PreprocessState(), models, pp.PreprocessConfig())
    assert out.face_found.all() and out.crops.shape == (2, 512, 512, 3)


def test_smoothing_steadies_a_still_face_with_noise(models):
    rng = np.random.default_rng(0)
    img = astronaut()
    frames = np.stack([np.clip(img + rng.normal(0, 6, img.shape), 0, 255).astype(np.uint8) for _ in range(10)])

    def jitter(cfg):
        outs, _ = _run(frames, models, cfg, 10)
        centres = np.array([[m[0, 2], m[1, 2]] for m in _cat(outs, "crop_matrix")])
        return np.abs(np.diff(centres, axis=0)).mean()

    raw = jitter(pp.PreprocessConfig(smooth=SmoothConfig(mode="off")))
    smoothed = jitter(pp.PreprocessConfig())
    assert smoothed < 0.7 * raw


def test_face_cut_by_the_frame_edge(models):
    from tests.stages.face_media import place

    img = astronaut()  # its face centre is near x = 222
    cut = place(img, (640, 480), (255.5 - 222 + 40, 240))  # face centre 40 px from the left edge
    gone = place(img, (640, 480), (255.5 - 222 - 60, 240))  # most of the face outside
    out, state = pp.apply(batch_of(np.stack([cut, gone])), pp.PreprocessState(), models,
                          pp.PreprocessConfig(hold_frames=0))
    assert out.face_found.tolist() == [True, False] and state.counts == (2, 1, 0, 1)
    assert out.crops[0][:, :40].max() == 0 and out.crops[0][:, 300:].max() > 0  # black beyond the frame edge


def test_a_pose_cache_shorter_than_the_video_falls_back_to_live_geometry(models, clip):
    cfg = pp.PreprocessConfig()
    live = pp.Preprocessor(models, cfg)
    full = [live(batch_of(clip[s:s + 4], s)) for s in range(0, 16, 4)]
    assert live.new_geometry is not None and len(live.new_geometry["labels"]) == 16
    short = {k: v[:8] for k, v in live.new_geometry.items()}  # a stale entry covering half the video
    cached = pp.Preprocessor(models, cfg, cached=short)
    outs = [cached(batch_of(clip[s:s + 4], s)) for s in range(0, 16, 4)]
    np.testing.assert_array_equal(_cat(outs[:2], "labels"), _cat(full[:2], "labels"))  # from the cache
    assert _cat(outs, "labels").shape == (16, 25) and _cat(outs[2:], "face_found")[1:].all()  # computed live
    assert cached.new_geometry is None  # an entry mixed from two sources is never stored


def _batches(frames, size):
    return [batch_of(frames[s:s + size], s) for s in range(0, len(frames), size)]


def test_sequence_geometry_then_crops_like_a_cache_hit(models, clip):
    """Files: the geometry pass over the whole clip, then the crops from it; one output frame per input."""
    cfg = pp.PreprocessConfig()
    geo, report = pp.sequence_geometry(_batches(clip, 5), models, cfg)
    assert set(geo) == set(pp.GEOMETRY_FIELDS) and len(geo["labels"]) == 16
    assert report["frames"] == 16 and report["faces"] == 13 and report["held"] == 3
    assert report["steadiness"]["mode"] == "offline" and report["steadiness"]["frames_with_face"] == 13
    assert sum(report["tracker"].values()) == 16 and report["tracker"]["flow"] >= 8
    runner = pp.Preprocessor(models, cfg, cached=geo, report=report)
    outs = [runner(b) for b in _batches(clip, 4)]
    assert sum(len(b) for b in outs) == 16 and _cat(outs, "crops").shape == (16, 512, 512, 3)
    np.testing.assert_array_equal(_cat(outs, "labels"), geo["labels"])
    assert runner.report["tracker"] == report["tracker"] and runner.report["frames"] == 16
    # the batch size of the geometry pass does not matter
    again, _ = pp.sequence_geometry(_batches(clip, 16), models, cfg)
    np.testing.assert_allclose(again["crop_matrix"], geo["crop_matrix"], atol=1e-4)
    # nose tip in the same place of every crop, as with the causal stream
    lms, mats = geo["landmarks"], geo["crop_matrix"]
    for i in np.flatnonzero(geo["face_found"]):
        nose = transform_points(mats[i].astype(np.float64), lms[i, 30:31])[0]
        assert abs(nose[0] - 256) < 40 and 250 < nose[1] < 350


def test_both_smoothers_steady_a_noisy_still_face(models):
    """Files (offline) to <= 1/5 of the raw crop-centre jitter, pipes (causal) to <= 1/3."""
    rng = np.random.default_rng(0)
    img = astronaut()
    frames = np.stack([np.clip(img + rng.normal(0, 6, img.shape), 0, 255).astype(np.uint8) for _ in range(24)])

    def jitter(mode):
        geo, report = pp.sequence_geometry(_batches(frames, 8), models, pp.PreprocessConfig(), mode)
        centres = np.array([[m[0, 2], m[1, 2]] for m in geo["crop_matrix"]])
        return np.abs(np.diff(centres, axis=0)).mean(), report["steadiness"]

    raw, raw_report = jitter("off")
    causal, _ = jitter("causal")
    offline, report = jitter("offline")
    assert offline < 0.2 * raw and causal < raw / 3
    assert report["ratio"]["centre_x_px"] < 0.3 and raw_report["ratio"]["centre_x_px"] == pytest.approx(1.0)


def test_a_stream_refuses_the_offline_mode(models, clip):
    cfg = pp.PreprocessConfig(smooth=SmoothConfig(mode="offline"))
    with pytest.raises(ValueError, match="whole video"):
        pp.apply(batch_of(clip[:2]), pp.PreprocessState(), models, cfg)


def test_stream_report_has_tracker_counts_and_jitter(models, clip):
    runner = pp.Preprocessor(models, pp.PreprocessConfig())
    for b in _batches(clip, 4):
        runner(b)
    report = runner.report
    assert report["frames"] == 16 and report["steadiness"]["mode"] == "causal"
    assert report["tracker"]["detections"] >= 1 and sum(report["tracker"].values()) == 16


def test_matting_with_carried_alphas_across_batches(models, clip):
    """A stream and a cached file, in batches that do not line up with the keys: an alpha on every frame,
    the network on frames 0, 3, 6, ... only (plus re-keys), the same alphas either way, counts in the report."""
    from dataclasses import replace

    from tests.stages.test_matting import ContentRunner
    from vidtriplane.config.preprocess import MattingConfig, PreprocessConfig

    cfg = PreprocessConfig(matting=MattingConfig(enabled=True, every=3))
    runner = ContentRunner()
    with_matting = replace(models, matting=runner)
    outs, state = _run(clip, with_matting, cfg, 5)
    alpha = _cat(outs, "alpha")
    assert alpha.shape == (16, 512, 512) and sum(len(b) for b in outs) == 16
    assert state.matting.network == runner.crops and state.matting.network + state.matting.carried == 16
    assert 6 <= state.matting.network < 16  # 0, 3, ..., 15 at least; the blank frames 6-8 may re-key
    live = pp.Preprocessor(with_matting, cfg)
    again = [live(batch_of(clip[s:s + 4], s)) for s in range(0, 16, 4)]
    np.testing.assert_array_equal(_cat(again, "alpha"), alpha)
    assert live.report["matting"] == {"network": state.matting.network, "carried": state.matting.carried}
    assert "matting" not in pp.Preprocessor(models, PreprocessConfig()).report
