"""Networks of a run: IR-SE-50 initialisation of both encoders (spec 1.6) and missing-weights messages."""
from __future__ import annotations

import pytest
import torch

from tests.train.tiny import tiny_config
from vidtriplane.models.arcface import FaceEmbedder, FaceEmbedderConfig
from vidtriplane.train.networks import TrainSetupError, build_loss_nets, build_network, init_from_irse50


def test_both_trunks_start_from_ir_se50_and_the_wider_first_conv_keeps_channels_0_to_2(tmp_path):
    torch.manual_seed(1)
    arcface = FaceEmbedder(FaceEmbedderConfig(width=8))  # the IR-SE-50 layout at the tiny encoders' width
    sd = arcface.state_dict()
    torch.save(sd, tmp_path / "model_ir_se50.pth")
    net = build_network(tiny_config("model.version=2"))
    styles_before = net.psp_encoder.styles.state_dict()
    torch.manual_seed(0)
    init_from_irse50(net, tmp_path / "model_ir_se50.pth")
    psp, tri = net.psp_encoder.state_dict(), net.triplanenet_encoder.state_dict()
    trunk = [k for k in sd if k.startswith(("input_layer.", "body."))]
    assert all(torch.equal(psp[k], sd[k]) for k in trunk)
    assert all(torch.equal(tri[k], sd[k]) for k in trunk if k != "input_layer.0.weight")
    first = tri["input_layer.0.weight"]
    assert first.shape == (8, 9, 3, 3) and torch.equal(first[:, :3], sd["input_layer.0.weight"])
    noise = first[:, 3:]
    assert 0.7 < float(noise.std()) < 1.3 and abs(float(noise.mean())) < 0.3  # standard normal noise
    assert all(torch.equal(v, net.psp_encoder.styles.state_dict()[k]) for k, v in styles_before.items())


def test_a_trunk_of_another_shape_is_refused(tmp_path):
    torch.save(FaceEmbedder(FaceEmbedderConfig(width=16)).state_dict(), tmp_path / "wrong.pth")
    net = build_network(tiny_config())
    with pytest.raises(ValueError, match=r"IR-SE-50 input_layer .* do not fit the model"):
        init_from_irse50(net, tmp_path / "wrong.pth")


def test_missing_loss_weights_name_the_file_and_the_import_command(tmp_path, monkeypatch):
    monkeypatch.setenv("VIDTRIPLANE_HOME", str(tmp_path))
    monkeypatch.setenv("VIDTRIPLANE_OFFLINE", "1")
    with pytest.raises(TrainSetupError) as info:
        build_loss_nets(tiny_config("loss.networks=registry"), torch.device("cpu"))
    text = str(info.value)
    assert "alexnet-owt-7be5be79.pth" in text and "vidtriplane weights import alexnet" in text
    assert "loss.networks=none" in text


def test_missing_eg3d_weights_suggest_generated(tmp_path, monkeypatch):
    monkeypatch.setenv("VIDTRIPLANE_HOME", str(tmp_path))
    monkeypatch.setenv("VIDTRIPLANE_OFFLINE", "1")
    with pytest.raises(TrainSetupError, match=r"(?s)ffhq512-128.pth.*vidtriplane weights import.*model.eg3d=generated"):
        build_network(tiny_config("model.size=full", "model.eg3d=eg3d-ffhq512-128"))
