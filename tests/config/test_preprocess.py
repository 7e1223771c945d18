"""The preprocess config: the MTCNN settings, the landmark device, the pose cache key."""
from __future__ import annotations

import pytest

from vidtriplane.config import ConfigError, resolve
from vidtriplane.config.preprocess import LandmarkConfig, MtcnnConfig, PreprocessConfig


def test_mtcnn_settings_through_set():
    cfg = resolve("preprocess", overrides=["landmarks.backend=mtcnn", "landmarks.mtcnn.min_face=40",
                                           "landmarks.mtcnn.thresholds=[0.5, 0.6, 0.7]", "landmarks.device=cuda:1"])
    assert cfg.landmarks.backend == "mtcnn" and cfg.landmarks.device == "cuda:1"
    assert cfg.landmarks.mtcnn == MtcnnConfig(min_face=40.0, thresholds=(0.5, 0.6, 0.7))
    assert MtcnnConfig().min_confidence == 0.9 and MtcnnConfig().pose_points == "dlib68"


@pytest.mark.parametrize("override,match", [
    ("landmarks.mtcnn.thresholds=[0.6, 0.7, 1.5]", "three values in"),
    ("landmarks.mtcnn.thresholds=[0.6, 0.7]", "expected 3 values"),
    ("landmarks.mtcnn.scale_factor=1.2", "0 < scale_factor < 1"),
    ("landmarks.mtcnn.pose_points=68", "not one of"),
    ("landmarks.backend=retinaface", "not one of"),
])
def test_bad_mtcnn_settings_are_config_errors(override, match):
    with pytest.raises(ConfigError, match=match):
        resolve("preprocess", overrides=[override])


def test_pose_cache_key_ignores_the_device_and_unused_mtcnn_settings():
    dlib = PreprocessConfig()
    settings = dlib.geometry_settings()
    assert "device" not in settings["landmarks"] and "mtcnn" not in settings["landmarks"]
    assert "matting" not in settings and settings["landmarks"]["backend"] == "dlib"
    # a dlib run's key does not move with settings it does not use
    other = PreprocessConfig(landmarks=LandmarkConfig(device="cpu", mtcnn=MtcnnConfig(min_face=60)))
    assert other.geometry_settings() == settings
    mtcnn = PreprocessConfig(landmarks=LandmarkConfig(backend="mtcnn", device="cuda"))
    assert mtcnn.geometry_settings()["landmarks"]["mtcnn"]["min_confidence"] == 0.9
    assert "device" not in mtcnn.geometry_settings()["landmarks"]
    moved = PreprocessConfig(landmarks=LandmarkConfig(backend="mtcnn", mtcnn=MtcnnConfig(min_face=60)))
    assert moved.geometry_settings() != mtcnn.geometry_settings()
