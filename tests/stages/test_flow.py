"""Optical-flow tracking of the face box: follows a known motion, re-anchors, gives up on a lost face."""
import numpy as np
import pytest

from tests.stages.face_media import astronaut, moving_clip, place
from vidtriplane.config.preprocess import FlowConfig, LandmarkConfig
from vidtriplane.stages import flow, landmarks as lmk

pytest.importorskip("dlib")


@pytest.fixture(scope="module")
def backend():
    return lmk.load_backend()


def _track(frames, backend, cfg):
    state, pts, steps = lmk.LandmarkState(), [], []
    for f in frames:
        p, _, state = lmk.track_frame(f, state, backend, cfg)
        pts.append(p)
        steps.append(state.step)
    return np.stack(pts), steps


def test_box_follows_a_known_shift_and_zoom(backend):
    img = astronaut()
    first = place(img, (640, 480), (320, 240))
    pts, _, state = lmk.track_frame(first, lmk.LandmarkState(), backend, LandmarkConfig())
    assert state.step == "detect" and state.flow is not None and state.flow.since_anchor == 0
    moved = place(img, (640, 480), (320 + 7, 240 - 4), scale=1.05)  # about the image centre (255.5, 255.5)
    box = flow.track_box(lmk.to_gray(moved), state.flow, FlowConfig())
    x0, y0, x1, y1 = state.box
    # the image point p goes to 1.05 (p - c) + c', c = (255.5, 255.5) image -> (320, 240) / (327, 236) frame
    cx, cy = (x0 + x1) / 2 - 320, (y0 + y1) / 2 - 240
    want = (1.05 * cx + 327, 1.05 * cy + 236, 1.05 * (x1 - x0))
    got = ((box[0] + box[2]) / 2, (box[1] + box[3]) / 2, box[2] - box[0])
    np.testing.assert_allclose(got, want, atol=0.6)


def test_flow_frames_agree_with_detector_frames_and_anchor_on_schedule(backend):
    frames = moving_clip(18)
    with_flow, steps = _track(frames, backend, LandmarkConfig(flow=FlowConfig(anchor_every=6)))
    without, plain_steps = _track(frames, backend, LandmarkConfig(flow=FlowConfig(enabled=False)))
    assert set(plain_steps) == {"detect", "track"}
    assert steps[0] == "detect" and steps.count("flow") == 15 and [i for i, s in enumerate(steps) if s == "track"] == [6, 12]
    # same face, same predictor: the landmarks agree closely (the box differs by a pixel or two)
    eyes = np.linalg.norm(with_flow[:, 36:48].mean(1) - without[:, 36:48].mean(1), axis=1)
    assert eyes.max() < 2.0


def test_a_face_that_disappears_is_dropped(backend):
    frames = moving_clip(8, blank=(4, 5))
    pts, steps = _track(frames, backend, LandmarkConfig())
    assert np.isfinite(pts[:4]).all() and np.isnan(pts[4:6]).all() and np.isfinite(pts[6:]).all()
    assert steps[4] == "redetect" and steps[6] == "detect"  # flow failed on the blank frame, then detection


def test_config_checks():
    with pytest.raises(ValueError, match="min_points"):
        FlowConfig(min_points=0)
    with pytest.raises(ValueError, match="anchor_every"):
        FlowConfig(anchor_every=0)
