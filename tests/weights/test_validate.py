"""Structure checks against the official state_dict manifest (../shared) and our models on the meta device."""
from __future__ import annotations

import json
from collections import OrderedDict

import pytest
import torch

from tests.conftest import SHARED, shared_path
from vidtriplane.weights import validate
from vidtriplane.weights.loader import CheckpointError
from vidtriplane.weights.validate import InvalidWeights, validate_object

PARTS = ["psp_encoder", "triplanenet_encoder", "triplanenet_v2_encoder_pixelshuffle",
         "triplanenet_v2_encoder_upsample", "eg3d_G"]


def _official_manifest():
    data = json.loads(shared_path("spec", "official_state_dict_manifest.json").read_text())
    return {part: {k: tuple(v["shape"]) for k, v in data[part].items()} for part in PARTS}


@pytest.fixture(scope="module")
def manifest():
    """The official {key: shape} per part; without ../shared, our models (checked against it when present)."""
    if SHARED.joinpath("spec", "official_state_dict_manifest.json").exists():
        return _official_manifest()
    return {part: validate.model_shapes(part) for part in PARTS}


def _meta_state(shapes, prefix=""):
    return OrderedDict((prefix + k, torch.empty(s, device="meta")) for k, s in shapes.items())


def _v1_checkpoint(manifest, encoder="triplanenet_encoder"):
    state = OrderedDict()
    state.update(_meta_state(manifest["psp_encoder"], "psp_encoder."))
    state.update(_meta_state(manifest[encoder], "triplanenet_encoder."))
    state.update(_meta_state(manifest["eg3d_G"], "decoder."))
    return {"state_dict": state, "opts": {"n_styles": 14}}


def test_model_shapes_equal_the_official_manifest():
    manifest = _official_manifest()
    for part in PARTS:
        assert validate.model_shapes(part) == manifest[part], part


def test_coarse_fallback_agrees_with_the_manifest(manifest):
    # the coarse fallback encodes facts about the official files; check them against the best oracle at hand
    for part, (count, anchors) in validate._COARSE.items():
        assert len(manifest[part]) == count
        for key, shape in anchors.items():
            assert manifest[part][key] == shape, (part, key)


def test_v1_checkpoint_accepted_and_broken_ones_named(manifest):
    exp = manifest.get
    ckpt = _v1_checkpoint(manifest)
    report = validate_object("triplanenet-v1", ckpt, expectations=exp)
    assert "1182 tensors" in report.summary

    del ckpt["state_dict"]["triplanenet_encoder.final_head.4.bias"]
    ckpt["state_dict"]["decoder.backbone.mapping.w_avg"] = torch.empty(511, device="meta")
    ckpt["state_dict"]["latent_avg"] = torch.empty(14, 512, device="meta")
    with pytest.raises(InvalidWeights) as info:
        validate_object("triplanenet-v1", ckpt, expectations=exp)
    assert str(info.value).splitlines() == [
        "TriPlaneNet v1 checkpoint does not match the model:",
        "  triplanenet_encoder: 1 missing key: final_head.4.bias",
        "  eg3d_G: 1 shape mismatch: backbone.mapping.w_avg (checkpoint [511] vs model [512])",
        "  keys outside psp_encoder/triplanenet_encoder/decoder: latent_avg"]


def test_v1_coarse_fallback_without_models(manifest):
    ckpt = _v1_checkpoint(manifest)
    assert validate_object("triplanenet-v1", ckpt, expectations=lambda part: None).kind == "triplanenet-v1"
    ckpt["state_dict"]["triplanenet_encoder.final_head.4.weight"] = torch.empty(96, 95, 1, 1, device="meta")
    del ckpt["state_dict"]["psp_encoder.styles.0.linear.bias"]
    with pytest.raises(InvalidWeights) as info:
        validate_object("triplanenet-v1", ckpt, expectations=lambda part: None)
    assert str(info.value).splitlines()[1:] == [
        "  psp_encoder: 564 entries (expected 565)",
        "  triplanenet_encoder: 1 shape mismatch: final_head.4.weight (checkpoint [96, 95, 1, 1] vs model [96, 96, 1, 1])"]


@pytest.mark.parametrize("variant", ["pixelshuffle", "upsample"])
def test_v2_variant_detected(manifest, variant):
    ckpt = _v1_checkpoint(manifest, f"triplanenet_v2_encoder_{variant}")
    report = validate_object("triplanenet-v2", ckpt, expectations=manifest.get)
    assert f"({variant} decoder)" in report.summary
    with pytest.raises(InvalidWeights, match="TriPlaneNet v1"):
        validate_object("triplanenet-v1", ckpt, expectations=manifest.get)


def test_v1_file_is_not_a_v2_checkpoint(manifest):
    with pytest.raises(InvalidWeights, match=r"v1 checkpoint, not .* v2 .*input_layer.0.weight has shape \[64, 6, 3, 3\]"):
        validate_object("triplanenet-v2", _v1_checkpoint(manifest), expectations=manifest.get)


def test_eg3d_pth(manifest):
    good = {"G_ema": _meta_state(manifest["eg3d_G"]), "init_kwargs": {}, "latent_avg": torch.zeros(512)}
    assert validate_object("eg3d-pth", good, expectations=manifest.get).kind == "eg3d-pth"
    with pytest.raises(InvalidWeights, match="'G_ema'"):
        validate_object("eg3d-pth", {"state_dict": {}}, expectations=manifest.get)
    bad = dict(good, latent_avg=torch.zeros(13, 512))
    with pytest.raises(InvalidWeights, match=r"'latent_avg' must be a \[512\] tensor, got \[13, 512\]"):
        validate_object("eg3d-pth", bad, expectations=manifest.get)
    short = dict(good, G_ema={k: v for k, v in good["G_ema"].items() if k != "decoder.net.0.bias"})
    with pytest.raises(InvalidWeights, match="eg3d_G: 1 missing key: decoder.net.0.bias"):
        validate_object("eg3d-pth", short, expectations=manifest.get)


def test_ir_se50_trunk_must_match_psp(manifest):
    trunk = {k: v for k, v in manifest["psp_encoder"].items() if k.startswith(("input_layer.", "body."))}
    state = _meta_state(trunk)
    state["output_layer.3.weight"] = torch.empty(512, 25088, device="meta")
    assert validate_object("ir-se50", state, expectations=manifest.get).kind == "ir-se50"
    state["body.0.res_layer.1.weight"] = torch.empty(64, 64, 5, 5, device="meta")
    with pytest.raises(InvalidWeights, match=r"IR-SE-50 trunk: 1 shape mismatch: body.0.res_layer.1.weight"):
        validate_object("ir-se50", state, expectations=manifest.get)
    with pytest.raises(InvalidWeights, match="no output_layer"):
        validate_object("curricularface", _meta_state(trunk), expectations=manifest.get)


def test_lpips_and_alexnet_shapes():
    lin = {k: torch.zeros(s) for k, s in validate.LPIPS_ALEX_SHAPES.items()}
    assert validate_object("lpips-linear", lin).summary == "lpips-linear: 5 tensors"
    lin["lin2.model.1.weight"] = torch.zeros(1, 64, 1, 1)
    with pytest.raises(InvalidWeights, match=r"lin2.model.1.weight \(checkpoint \[1, 64, 1, 1\] vs model \[1, 384, 1, 1\]\)"):
        validate_object("lpips-linear", lin)
    alex = {k: torch.empty(s, device="meta") for k, s in validate.ALEXNET_SHAPES.items()}
    assert validate_object("alexnet", alex).kind == "alexnet"
    with pytest.raises(InvalidWeights, match="1 unexpected key: extra"):
        validate_object("alexnet", dict(alex, extra=torch.zeros(1)))


def test_nvidia_pickle_given_as_pth_says_what_to_do(tmp_path):
    from tests.weights.nvidia_pickle import build_snapshot

    path = tmp_path / "ffhq512-128.pkl"
    path.write_bytes(build_snapshot(tmp_path / "ran")[0])
    with pytest.raises(CheckpointError, match="weights import eg3d-ffhq512-128-pkl PATH"):
        validate.validate_file("eg3d-pth", path)
    assert not (tmp_path / "ran").exists()


def test_onnx_sniff(tmp_path):
    good = tmp_path / "m.onnx"
    good.write_bytes(b"\x08\x07\x12\x07pytorch")
    assert validate.validate_file("onnx", good).kind == "onnx"
    bad = tmp_path / "b.onnx"
    bad.write_bytes(b"<html>")
    with pytest.raises(InvalidWeights, match="ONNX"):
        validate.validate_file("onnx", bad)


def test_expected_shapes_of_full_checkpoints(manifest):
    v1 = validate.expected_shapes("triplanenet-v1")
    assert len(v1) == 1182
    assert v1["triplanenet_encoder.input_layer.0.weight"] == (64, 6, 3, 3)
    assert v1 == validate.expected_shapes("triplanenet-v1", expectations=manifest.get)
    v2 = validate.expected_shapes("triplanenet-v2", variant="upsample", expectations=manifest.get)
    assert v2["triplanenet_encoder.up2.conv.double_conv.0.weight"] == (768,)
    assert validate.expected_shapes("eg3d-pkl", expectations=manifest.get) == manifest["eg3d_G"]
    assert validate.expected_shapes("triplanenet-v1", expectations=lambda part: None) is None
