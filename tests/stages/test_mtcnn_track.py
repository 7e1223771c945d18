"""The MTCNN landmark backend for video: face choice rules, scene cuts, detector/tracker hand-over."""
import copy

import numpy as np
import pytest
import torch

from tests.stages.face_media import astronaut, moving_clip, place
from vidtriplane.config.preprocess import MtcnnConfig
from vidtriplane.stages import face_mtcnn, mtcnn_track
from vidtriplane.stages import landmarks as lmk


def dets(boxes, scores):
    boxes = torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4)
    return face_mtcnn.Detections(boxes, torch.tensor(scores, dtype=torch.float32), torch.zeros(len(boxes), 5, 2))


def test_pick_face_rules():
    # no previous face: the largest box (width + height), if its confidence is > 0.9 (batch_mtcnn.py)
    found = dets([[0, 0, 50, 50], [100, 100, 180, 160], [200, 0, 230, 30]], [0.99, 0.95, 0.999])
    assert mtcnn_track.pick_face(found, None, 0.9) == 1
    weak_largest = dets([[0, 0, 50, 50], [100, 100, 180, 160]], [0.99, 0.85])
    assert mtcnn_track.pick_face(weak_largest, None, 0.9) is None  # official: the largest face decides
    # with a previous face: the confident detection that overlaps it most, even if another is larger
    assert mtcnn_track.pick_face(found, torch.tensor([2.0, 2.0, 52.0, 52.0]), 0.9) == 0
    assert mtcnn_track.pick_face(found, torch.tensor([500.0, 500.0, 520.0, 520.0]), 0.9) == 1
    assert mtcnn_track.pick_face(dets([], []), None, 0.9) is None


def test_scene_cuts():
    clip = moving_clip(12)
    x = mtcnn_track.frames_tensor(clip, torch.device("cpu"))
    threshold = MtcnnConfig().scene_cut
    cuts, thumb = mtcnn_track.scene_cuts(x, None, threshold)
    assert not cuts.any() and thumb.shape == (3, 16, 16)
    other = np.ascontiguousarray(clip[:, :, ::-1])  # the mirrored shot
    cuts, _ = mtcnn_track.scene_cuts(mtcnn_track.frames_tensor(np.concatenate([clip[:4], other[4:8]]), x.device),
                                     thumb, threshold)
    assert cuts.tolist() == [True, False, False, False, True, False, False, False]  # vs the last thumbnail too


def test_grey_frames_become_rgb():
    grey = np.random.default_rng(0).integers(0, 256, (2, 10, 12), dtype=np.uint8)
    for frames in (grey, grey[..., None]):
        x = mtcnn_track.frames_tensor(frames, torch.device("cpu"))
        assert x.shape == (2, 3, 10, 12) and torch.equal(x[:, 0], x[:, 2]) and x[1, 1, 3, 4] == grey[1, 3, 4]


@pytest.fixture
def backend(mtcnn_nets):
    return lmk.MtcnnBackend(mtcnn_nets)


@pytest.fixture
def calls(monkeypatch):
    """Counts of full detections and O-net refinements (frames, per call)."""
    seen = {"detect": [], "refine": []}
    detect, refine = face_mtcnn.detect, face_mtcnn.refine

    def counting_detect(nets, images, **kw):
        seen["detect"].append(len(images))
        return detect(nets, images, **kw)

    def counting_refine(nets, images, boxes, *a, **kw):
        seen["refine"].append(len(images))
        return refine(nets, images, boxes, *a, **kw)

    monkeypatch.setattr(face_mtcnn, "detect", counting_detect)
    monkeypatch.setattr(face_mtcnn, "refine", counting_refine)
    return seen


def _run(frames, backend, cfg, size):
    state, pts, conf = lmk.LandmarkState(), [], []
    for s in range(0, len(frames), size):
        found, state = lmk.detect_batch(frames[s:s + size], state, backend, cfg)
        pts.append(found.points)
        conf.append(found.confidence)
    return np.concatenate(pts), np.concatenate(conf), state


def test_hand_over_on_a_moving_face(backend, calls, mtcnn_nets):
    clip = moving_clip(16, blank=(9, 10))
    cfg = lmk.LandmarkConfig(backend="mtcnn")
    pts, conf, state = _run(clip, backend, cfg, 8)
    face = np.isfinite(pts).all(axis=(1, 2))
    assert face.tolist() == [i not in (9, 10) for i in range(16)]
    assert (conf[face] > 0.9).all() and (conf[~face] == 0).all()
    # frame 0 is detected and 1-7 tracked in one batched run; in the second batch frame 8 is tracked, the
    # blank frame 9 is a cut with no face, so frames 10-15 are detected in one batched call
    assert calls["detect"] == [1, 1, 6] and calls["refine"] == [7, 1]
    assert state.tracking and state.box is not None
    # tracked points stay within a few pixels of a fresh detection (face ~100 px)
    tracked = [3, 7, 8]
    for i, d in zip(tracked, face_mtcnn.detect(mtcnn_nets, clip[tracked])):
        assert np.abs(d.points.numpy()[0] - pts[i]).max() < 3.5


def test_batch_size_changes_points_by_about_a_pixel_at_most(backend):
    clip = moving_clip(10)
    cfg = lmk.LandmarkConfig(backend="mtcnn", detect_every=4)
    a, _, _ = _run(clip, backend, cfg, 10)
    b, _, _ = _run(clip, backend, cfg, 3)
    np.testing.assert_array_equal(a[[0, 5]], b[[0, 5]])  # key frames: the same full detection
    assert np.abs(a - b).max() < 1.5  # tracked frames start O-net from other boxes


def test_key_frames_every_k(backend, calls):
    clip = moving_clip(10)
    _run(clip, backend, lmk.LandmarkConfig(backend="mtcnn", detect_every=4), 10)
    # as with dlib, detect_every counts tracked frames: detections at 0 and 5, runs 1-4 and 6-9
    assert calls["detect"] == [1, 1] and calls["refine"] == [4, 4]


def test_scene_cut_redetects_and_switches_face(backend, calls):
    img = astronaut()
    a = np.stack([place(img, (640, 480), (200 + 2 * i, 240), scale=0.8) for i in range(4)])
    b = np.stack([place(img, (640, 480), (460, 200 + 2 * i), scale=0.6, angle=10) for i in range(4)])
    pts, conf, _ = _run(np.concatenate([a, b]), backend, lmk.LandmarkConfig(backend="mtcnn"), 8)
    assert np.isfinite(pts).all() and (conf > 0.9).all()
    assert calls["detect"] == [1, 1]  # frame 0 and the cut at frame 4
    nose = pts[:, 2]
    assert (np.abs(nose[:4, 0] - 174) < 10).all()  # astronaut nose x 223 -> 200 + (223 - 255.5) * 0.8
    assert (np.abs(nose[4:, 0] - 440) < 15).all()  # -> about 460 + (223 - 255.5) * 0.6


def test_a_larger_second_face_does_not_steal_the_track(backend):
    img = astronaut()
    frames = []
    for i in range(6):
        f = place(img, (800, 480), (200, 240), scale=0.5)
        if i >= 2:  # a bigger copy enters on the right
            big = place(img, (800, 480), (600, 240), scale=0.9)
            f = np.where(np.arange(800)[None, :, None] >= 400, big, f)
        frames.append(f)
    frames = np.stack(frames)
    cfg = lmk.LandmarkConfig(backend="mtcnn", detect_every=1, mtcnn=MtcnnConfig(scene_cut=1.0))
    pts, _, _ = _run(frames, backend, cfg, 6)
    assert (pts[:, 2, 0] < 400).all()  # still the first face
    fresh, _, _ = _run(frames[2:3], backend, cfg, 1)
    assert fresh[0, 2, 0] > 400  # without a track, the largest face is chosen


def test_official_points_are_truncated_like_batch_mtcnn(backend):
    img = astronaut()
    exact, _ = lmk.detect_batch(img[None], lmk.LandmarkState(), backend, lmk.LandmarkConfig(backend="mtcnn"))
    cfg = lmk.LandmarkConfig(backend="mtcnn", mtcnn=MtcnnConfig(official_points=True))
    whole, _ = lmk.detect_batch(img[None], lmk.LandmarkState(), backend, cfg)
    # MTCNN's own coordinates are ours + 0.5; the official landmark files hold their int()
    np.testing.assert_array_equal(whole.points, np.trunc(exact.points + 0.5))
    assert np.abs(whole.points - exact.points).max() <= 0.5 + 1e-4


@pytest.mark.gpu
def test_cuda_matches_cpu(mtcnn_nets):
    clip = moving_clip(4)
    cpu = face_mtcnn.detect(mtcnn_nets, clip)
    cuda_nets = copy.deepcopy(mtcnn_nets).cuda()
    gpu = face_mtcnn.detect(cuda_nets, torch.from_numpy(clip).cuda())
    for a, b in zip(cpu, gpu):
        assert b.points.is_cuda and len(a) == len(b)
        torch.testing.assert_close(b.points.cpu(), a.points, atol=0.05, rtol=0)
    cfg = lmk.LandmarkConfig(backend="mtcnn")
    pc, _, _, _ = mtcnn_track.track_batch(clip, lmk.LandmarkState(), mtcnn_nets, cfg)
    pg, _, _, _ = mtcnn_track.track_batch(clip, lmk.LandmarkState(), cuda_nets, cfg)
    np.testing.assert_allclose(pg, pc, atol=0.05)


def test_pose_landmarks_from_the_five_points(backend):
    pytest.importorskip("dlib")
    img = astronaut()
    hybrid = lmk.MtcnnBackend(backend.nets, lmk.load_backend(lmk.LandmarkConfig()))
    found, _ = lmk.detect_batch(np.stack([img, np.zeros_like(img)]), lmk.LandmarkState(), hybrid,
                                lmk.LandmarkConfig(backend="mtcnn"))
    assert found.points.shape == (2, 5, 2) and found.pose_points.shape == (2, 68, 2)
    assert np.isnan(found.pose_points[1]).all()
    # the 68 points agree with the dlib backend's own (HOG box) landmarks on this face
    ref, _, _ = lmk.track_frame(img, lmk.LandmarkState(), lmk.load_backend(), lmk.LandmarkConfig())
    assert np.abs(found.pose_points[0] - ref).mean() < 1.0


def test_steps_name_what_found_each_face(backend):
    clip = moving_clip(6)
    clip[3, 60:420, 180:460] = 128  # the face covered, not a scene cut (most of the frame is unchanged)
    found, state = lmk.detect_batch(clip, lmk.LandmarkState(), backend, lmk.LandmarkConfig(backend="mtcnn"))
    assert np.isnan(found.points[3]).all() and np.isfinite(found.points[[0, 1, 2, 4, 5]]).all()
    # O-net loses the face at frame 3, which is then detected at once ('redetect': a face was followed);
    # nothing there, so 4 and 5 are detected in one call (4 without a face followed, 5 with one)
    assert found.steps == ("detect", "track", "track", "redetect", "detect", "redetect")
    assert state.step == "redetect" and state.flow is None and state.tracking
