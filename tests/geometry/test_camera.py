import json
import math

import pytest
import torch

from tests.conftest import shared_path
from vidtriplane.geometry import camera


def test_frontal_camera_matches_spec():
    c2w = camera.lookat_cam2world(0.0, 0.0, dtype=torch.float64)
    assert torch.allclose(c2w[:3, 3], torch.tensor([0.0, 0.0, 2.7], dtype=torch.float64), atol=1e-12)
    assert torch.allclose(c2w[:3, :3], torch.diag(torch.tensor([1.0, -1.0, -1.0], dtype=torch.float64)), atol=1e-12)


def test_yaw_moves_camera_to_plus_x():
    origin = camera.lookat_cam2world(0.3, 0.0, dtype=torch.float64)[:3, 3]
    assert origin[0].item() == pytest.approx(2.7 * math.sin(0.3), abs=1e-9)
    assert origin[0].item() == pytest.approx(0.798, abs=1e-3)
    assert origin[1].item() == pytest.approx(0.0, abs=1e-12)
    assert origin[2].item() == pytest.approx(2.579, abs=1e-3)


def test_pitch_moves_camera_down_and_looks_at_pivot():
    c2w = camera.lookat_cam2world(0.0, 0.2, dtype=torch.float64)
    origin, forward = c2w[:3, 3], c2w[:3, 2]
    assert origin[1] < 0
    to_pivot = torch.tensor(camera.PIVOT, dtype=torch.float64) - origin
    assert torch.allclose(forward, to_pivot / to_pivot.norm(), atol=1e-12)
    assert torch.linalg.det(c2w[:3, :3]).item() == pytest.approx(1.0, abs=1e-12)


def test_label_layout_and_roundtrip():
    label = camera.lookat_label([0.0, 0.3, -0.5], [0.0, -0.1, 0.25], dtype=torch.float64)
    assert label.shape == (3, 25)
    c2w, K = camera.split_label(label)
    assert torch.equal(camera.make_label(c2w, K), label)
    assert K[0].tolist() == [[4.2647, 0, 0.5], [0, 4.2647, 0.5], [0, 0, 1]]
    yaw, pitch = camera.yaw_pitch(label)
    assert torch.allclose(yaw, torch.tensor([0.0, 0.3, -0.5], dtype=torch.float64), atol=1e-9)
    assert torch.allclose(pitch, torch.tensor([0.0, -0.1, 0.25], dtype=torch.float64), atol=1e-9)


def test_flip_yaw_mirrors_the_camera():
    label = camera.lookat_label(0.4, -0.2, dtype=torch.float64)
    mirrored = camera.flip_yaw(label)
    assert torch.allclose(mirrored, camera.lookat_label(-0.4, -0.2, dtype=torch.float64), atol=1e-12)
    assert torch.equal(camera.flip_yaw(mirrored), label)
    assert torch.equal(mirrored[16:], label[16:])


def test_with_pose_keeps_intrinsics():
    label = camera.lookat_label(0.1, 0.0, focal=5.0)
    novel = camera.with_pose(label, camera.lookat_cam2world(-0.3))
    assert torch.equal(novel[16:], label[16:])
    assert camera.yaw_pitch(novel)[0].item() == pytest.approx(-0.3, abs=1e-6)


def test_angle_between():
    a = camera.lookat_label(0.0, 0.0, dtype=torch.float64)
    b = camera.lookat_label(0.3, 0.0, dtype=torch.float64)
    # the camera turns by more than 0.3: it aims at the pivot (0, 0, 0.2), nearer than the orbit centre
    expected = math.atan2(2.7 * math.sin(0.3), 2.7 * math.cos(0.3) - 0.2)
    assert camera.angle_between(a, b).item() == pytest.approx(expected, abs=1e-9)
    assert camera.angle_between(a, a).item() == pytest.approx(0.0, abs=1e-6)


def test_split_label_rejects_wrong_size():
    with pytest.raises(ValueError, match="25 numbers"):
        camera.split_label(torch.zeros(24))


def test_matches_official_golden_cameras():
    safetensors = pytest.importorskip("safetensors.torch")
    golden = safetensors.load_file(str(shared_path("parity", "golden.safetensors")))
    ours = camera.lookat_label([0.0, 0.3], [0.0, -0.1])
    assert (ours - golden["input.c"]).abs().max().item() < 1e-6
    novel = camera.lookat_label([-0.4, -0.4], [0.0, 0.0])
    assert (novel - golden["input.c_novel"]).abs().max().item() < 1e-6


def test_official_example_label_is_a_valid_camera():
    data = json.loads(shared_path("fixtures", "eg3d_example", "dataset.json").read_text())
    label = torch.tensor(data["labels"][0][1], dtype=torch.float64)
    c2w, K = camera.split_label(label)
    assert torch.linalg.vector_norm(c2w[:3, 3]).item() == pytest.approx(2.7, abs=1e-3)
    yaw, pitch = camera.yaw_pitch(label)
    assert math.degrees(yaw.item()) == pytest.approx(31, abs=1.0)  # README: about 31 degrees of yaw
