"""Matting runners: rembg's pre/post-processing, the automatic choice, and the backends against each other
on a real face (skipped when u2netp.onnx is not provisioned)."""
import numpy as np
import pytest

from tests.stages.face_media import astronaut
from tests.stages.test_matting import needs_real_u2netp
from vidtriplane.config.preprocess import MattingConfig
from vidtriplane.stages import matting, matting_backends as mb


def test_input_normalisation_and_output_stretch():
    crop = np.full((2, 64, 48, 3), 100, np.uint8)
    x = mb.to_input(crop)
    assert x.shape == (2, 3, 320, 320) and x.dtype == np.float32
    # divided by the image's maximum (all 100) -> 1, then ImageNet mean / std
    np.testing.assert_allclose(x[:, :, 5, 7], np.tile((1 - mb.MEAN) / mb.STD, (2, 1)), rtol=1e-6)
    pred = np.zeros((1, 1, 320, 320), np.float32) + np.linspace(0.2, 0.6, 320, dtype=np.float32)
    alpha = mb.to_alpha(pred, 64, 48)
    assert alpha.shape == (1, 64, 48) and alpha.min() < 0.02 and alpha.max() > 0.98  # stretched to [0, 1]
    assert (np.diff(alpha[0, 10]) >= 0).all()  # the ramp survives the resize


@pytest.mark.parametrize("cfg, bf16, cuda, expected", [
    (MattingConfig(backend="rembg"), True, True, "rembg"),
    (MattingConfig(backend="onnxruntime"), True, True, "onnxruntime"),
    (MattingConfig(), False, False, "onnxruntime"),
    (MattingConfig(), True, False, "torch"),
    (MattingConfig(precision="fp32"), True, False, "onnxruntime"),
    (MattingConfig(), False, True, "torch"),
])
def test_backend_choice(monkeypatch, cfg, bf16, cuda, expected):
    pytest.importorskip("onnx")
    monkeypatch.setattr(mb, "cpu_has_bf16", lambda: bf16)
    monkeypatch.setattr(mb, "resolve_device", lambda name: "cuda" if cuda and name == "auto" else "cpu")
    assert mb.resolve_backend(cfg) == expected


@needs_real_u2netp
def test_backends_agree_on_a_real_face():
    pytest.importorskip("rembg")
    pytest.importorskip("onnx")
    head = np.ascontiguousarray(astronaut()[20:276, 120:376])  # head and shoulders, grey wall behind
    crops = np.stack([head, np.ascontiguousarray(head[:, ::-1])])
    session = matting.load_session(MattingConfig())
    source = mb.model_source(session)
    ref = mb.OnnxRunner(source, MattingConfig(batch_size=2)).alphas(crops)
    assert ref.shape == (2, 256, 256) and ref.dtype == np.float32
    assert ref[0, 120:160, 100:140].mean() > 0.8 and ref[0, :20, 220:].mean() < 0.3  # face kept, wall removed
    assert np.abs(ref[1] - ref[0][:, ::-1]).mean() < 0.03  # a mirrored crop gives about the mirrored alpha
    # rembg's own per-image path: the same pre/post-processing, so the same 8-bit alpha (up to one level)
    np.testing.assert_allclose(mb.RembgRunner(session).alphas(crops), ref, atol=1.01 / 255)
    # the ONNX graph run by PyTorch in fp32: the same numbers up to float rounding (a level of the 8-bit mask)
    torch_fp32 = mb.TorchRunner(source, MattingConfig(precision="fp32", batch_size=1)).alphas(crops)
    np.testing.assert_allclose(torch_fp32, ref, atol=2.01 / 255)
    if mb.cpu_has_bf16():  # bf16 moves a few edge pixels; on average it agrees to 1-2 %
        bf16 = mb.TorchRunner(source, MattingConfig(precision="bf16")).alphas(crops)
        assert np.abs(bf16 - ref).mean() < 0.02 and np.quantile(np.abs(bf16 - ref), 0.99) < 0.15
    out, alpha = matting.matte(crops, mb.OnnxRunner(source, MattingConfig()), MattingConfig(background=(0, 255, 0)))
    np.testing.assert_array_equal(alpha, ref)
    assert out[0, 5, 250, 1] > 200 and out[0, 5, 250, 0] < 80  # the wall replaced by green
