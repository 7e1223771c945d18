"""Matting: compositing math, and rembg u2netp on a real crop when the model is provisioned."""
import os
from pathlib import Path

import numpy as np
import pytest

from tests.stages.face_media import astronaut
from vidtriplane.stages import matting


def test_composite_replaces_the_background():
    img = np.full((4, 4, 3), 200, np.uint8)
    alpha = np.zeros((4, 4), np.float32)
    alpha[:2] = 1.0
    alpha[2, 0] = 0.5
    out = matting.composite(img, alpha, (0, 10, 20))
    assert (out[:2] == 200).all() and (out[3] == [0, 10, 20]).all()
    np.testing.assert_array_equal(out[2, 0], [100, 105, 110])


def test_config_checks_the_colour():
    with pytest.raises(ValueError, match="background"):
        matting.MattingConfig(background=(0, 0, 300))


def _u2netp_available() -> bool:
    home = Path(os.environ.get("U2NET_HOME", Path.home() / ".u2net"))
    return (home / "u2netp.onnx").is_file() or (home / "models" / "u2netp" / "u2netp.onnx").is_file()


@pytest.mark.skipif(not _u2netp_available(), reason="u2netp.onnx not provisioned in $U2NET_HOME (see stages/matting.py)")
def test_u2netp_on_a_real_face():
    pytest.importorskip("rembg")
    cfg = matting.MattingConfig(enabled=True, background=(0, 255, 0))
    session = matting.load_session(cfg)
    crop = np.ascontiguousarray(astronaut()[20:276, 120:376])  # head and shoulders, grey wall behind
    out, alpha = matting.matte(crop[None], session, cfg)
    assert out.shape == (1, 256, 256, 3) and alpha.shape == (1, 256, 256) and alpha.dtype == np.float32
    assert alpha[0, 120:160, 100:140].mean() > 0.8  # the face
    assert alpha[0, :20, 220:].mean() < 0.3  # the wall, top right
    assert out[0, 5, 250, 1] > 200 and out[0, 5, 250, 0] < 80  # replaced by green
