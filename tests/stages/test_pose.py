"""Head pose -> EG3D label: exact PnP on synthetic data, the official fixture, mirror and roll consistency."""
import json

import cv2
import numpy as np
import pytest
import torch

from tests.conftest import shared_path
from tests.stages.face_media import astronaut
from vidtriplane.geometry import camera
from vidtriplane.stages import align, pose

pytest.importorskip("dlib")


@pytest.fixture(scope="module")
def backend():
    from vidtriplane.stages.landmarks import load_backend

    return load_backend()


def _label(image, backend, cfg=pose.PoseConfig()):
    from vidtriplane.stages.landmarks import LandmarkConfig, LandmarkState, track_frame

    lm, _, _ = track_frame(image, LandmarkState(), backend, LandmarkConfig())
    assert np.isfinite(lm).all(), "no face found"
    mats = align.crop_matrices(align.crop_params(lm[None], image.shape[0]))
    rot, trans = pose.estimate(lm[None], mats, 512, cfg)
    return torch.from_numpy(pose.labels(rot, trans, cfg)[0].astype(np.float64))


def _deg(x):
    return float(np.degrees(float(x)))


def test_template_is_symmetric_and_matches_the_reference_points():
    t = pose.TEMPLATE_68
    np.testing.assert_allclose(t[[30, 48, 54], :], align.REFERENCE_5[2:], atol=3e-3)
    np.testing.assert_allclose(t[[36, 39]].mean(0), align.REFERENCE_5[0], atol=3e-3)
    # mirror pairs: (x, y, z) <-> (-x, y, z)
    for a, b in ((36, 45), (39, 42), (31, 35), (17, 26), (48, 54), (0, 16)):
        np.testing.assert_allclose(t[a] * [-1, 1, 1], t[b], atol=8e-3)


def test_frontal_label_is_the_frontal_camera():
    lab = torch.from_numpy(pose.frontal_label().astype(np.float64))
    c2w, k = camera.split_label(lab)
    np.testing.assert_allclose(c2w[:3, :3].numpy(), np.diag([1.0, -1.0, -1.0]), atol=1e-6)
    assert float(torch.linalg.vector_norm(c2w[:3, 3])) == pytest.approx(2.7, rel=1e-5)
    np.testing.assert_allclose(k.numpy(), camera.intrinsics(dtype=torch.float64).numpy())


@pytest.mark.parametrize("yaw,pitch,roll", [(0.0, 0.0, 0.0), (0.4, -0.1, 0.05), (-0.6, 0.2, -0.2)])
def test_pnp_recovers_an_exact_projection(yaw, pitch, roll):
    head = cv2.Rodrigues(np.array([[pitch], [yaw], [roll]]))[0]
    r_cv = np.diag([1.0, -1.0, -1.0]) @ head
    t_cv = np.array([0.1, -0.05, 9.95])
    pts, _ = cv2.projectPoints(pose.template(), cv2.Rodrigues(r_cv)[0], t_cv, pose.camera_matrix(512), None)
    r_fit, t_fit = pose.solve_pose(pts[:, 0], 512)
    np.testing.assert_allclose(r_fit, r_cv, atol=1e-6)
    np.testing.assert_allclose(pose.head_rotation(r_fit), [pitch, yaw, roll], atol=1e-6)


def test_template_5_is_the_reference_5():
    # reduced the way section 5.2 reduces the BFM's 68 points (eye-corner means, nose tip, mouth corners)
    np.testing.assert_allclose(pose.template_5(), align.REFERENCE_5, atol=3e-3)


@pytest.mark.parametrize("yaw,pitch,roll", [(0.0, 0.0, 0.0), (0.5, -0.15, 0.1)])
def test_pnp_on_five_points_recovers_an_exact_projection(yaw, pitch, roll):
    head = cv2.Rodrigues(np.array([[pitch], [yaw], [roll]]))[0]
    r_cv = np.diag([1.0, -1.0, -1.0]) @ head
    t_cv = np.array([0.05, 0.1, 9.9])
    pts, _ = cv2.projectPoints(pose.template_5(), cv2.Rodrigues(r_cv)[0], t_cv, pose.camera_matrix(512), None)
    r_fit, _ = pose.solve_pose(pts[:, 0], 512)
    np.testing.assert_allclose(pose.head_rotation(r_fit), [pitch, yaw, roll], atol=1e-5)


def test_official_fixture_angle(backend):
    from PIL import Image

    img = np.asarray(Image.open(shared_path("fixtures", "eg3d_example", "example.png")).convert("RGB"))
    ref = json.loads(shared_path("fixtures", "eg3d_example", "dataset.json").read_text())["labels"][0][1]
    ref = torch.tensor(ref, dtype=torch.float64)
    lab = _label(img, backend)
    assert _deg(camera.angle_between(lab, ref)) < 3.0  # measured 1.1 deg
    yaw, pitch = camera.yaw_pitch(lab)
    ryaw, rpitch = camera.yaw_pitch(ref)
    assert abs(_deg(yaw - ryaw)) < 3.0 and abs(_deg(pitch - rpitch)) < 3.0
    assert float(torch.linalg.vector_norm(camera.split_label(lab)[0][:3, 3])) == pytest.approx(2.7, rel=1e-5)


def test_mirrored_face_has_the_negative_yaw(backend):
    img = astronaut()
    lab = _label(img, backend)
    mir = _label(np.ascontiguousarray(img[:, ::-1]), backend)
    yaw, pitch = camera.yaw_pitch(lab)
    myaw, mpitch = camera.yaw_pitch(mir)
    assert abs(_deg(yaw + myaw)) < 1.5 and abs(_deg(pitch - mpitch)) < 1.5
    assert _deg(camera.angle_between(mir, camera.flip_yaw(lab))) < 2.5


def test_rolling_the_image_rolls_the_camera(backend):
    from tests.stages.face_media import place

    img = astronaut()
    labs = {a: _label(place(img, (640, 640), (320, 320), angle=a), backend) for a in (-12.0, 0.0, 12.0)}
    for a in (-12.0, 12.0):
        r0 = camera.split_label(labs[0.0])[0][:3, :3].numpy()
        ra = camera.split_label(labs[a])[0][:3, :3].numpy()
        rel = cv2.Rodrigues(r0.T @ ra)[0][:, 0]  # relative rotation in the camera's own axes
        # the image turned by a (cv2: counter-clockwise) = the camera rolled by a about its viewing axis
        assert np.degrees(rel[2]) == pytest.approx(a, abs=2.0)
        assert np.degrees(np.abs(rel[:2])).max() < 2.5
