"""Official-format TriPlaneNet / EG3D files: loading, version/variant detection, precise errors."""
from __future__ import annotations

import logging
import os

import pytest
import torch

from vidtriplane.checkpoints import (
    CheckpointError,
    detect_v2_variant,
    detect_version,
    eg3d_config_from_init_kwargs,
    load_eg3d,
    load_triplanenet,
    read_eg3d_checkpoint,
    read_triplanenet_checkpoint,
)
from vidtriplane.models.eg3d import EG3DConfig, EG3DGenerator
from vidtriplane.models.state import StateDictMismatch
from vidtriplane.models.triplanenet import TriPlaneNet, TriPlaneNetConfig, TriPlaneNetV2

# The official FFHQ-512 constructor kwargs (eg3d:eg3d/train.py defaults with the eg3d:docs/models.md command),
# as stored in ffhq512-128.pth.
FFHQ_INIT_KWARGS = {
    "z_dim": 512, "w_dim": 512, "mapping_kwargs": {"num_layers": 2}, "channel_base": 32768, "channel_max": 512,
    "fused_modconv_default": "inference_only",
    "rendering_kwargs": {
        "depth_resolution": 48, "depth_resolution_importance": 48, "ray_start": 2.25, "ray_end": 3.3,
        "box_warp": 1, "avg_camera_radius": 2.7, "avg_camera_pivot": [0, 0, 0.2], "image_resolution": 512,
        "disparity_space_sampling": False, "clamp_mode": "softplus",
        "superresolution_module": "models.eg3d.superresolution.SuperresolutionHybrid8XDC",
        "c_gen_conditioning_zero": False, "c_scale": 1.0, "superresolution_noise_mode": "none",
        "density_reg": 0.25, "density_reg_p_dist": 0.004, "reg_type": "l1", "decoder_lr_mul": 1.0,
        "sr_antialias": True,
    },
    "num_fp16_res": 0, "sr_num_fp16_res": 4,
    "sr_kwargs": {"channel_base": 32768, "channel_max": 512, "fused_modconv_default": "inference_only"},
    "conv_clamp": None, "c_dim": 25, "img_resolution": 512, "img_channels": 3,
}
OPTS = {"n_styles": 14, "batch_size": 2, "learning_rate": 1e-4, "exp_dir": "/x", "CTTR": False}


def _random_state(module: torch.nn.Module, seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {k: (torch.randn(v.shape, generator=g) if v.is_floating_point() else v.clone())
            for k, v in module.state_dict().items()}


def _save_v1(path, seed=0, **extra) -> dict[str, torch.Tensor]:
    sd = _random_state(TriPlaneNet(TriPlaneNetConfig.tiny()), seed)
    torch.save({"state_dict": sd, "opts": dict(OPTS), "best_val_loss": 0.1, "step": 1000,
                "triplane_optimizer": {"state": {}, "param_groups": []}, **extra}, path)
    return sd


def test_eg3d_config_from_the_official_init_kwargs_is_the_ffhq_default():
    assert eg3d_config_from_init_kwargs(FFHQ_INIT_KWARGS) == EG3DConfig()
    other = dict(FFHQ_INIT_KWARGS, rendering_kwargs=dict(FFHQ_INIT_KWARGS["rendering_kwargs"], depth_resolution=64))
    assert eg3d_config_from_init_kwargs(other).depth_resolution == 64
    bad = dict(FFHQ_INIT_KWARGS, rendering_kwargs=dict(FFHQ_INIT_KWARGS["rendering_kwargs"], ray_start="auto"))
    with pytest.raises(CheckpointError, match="unsupported EG3D rendering"):
        eg3d_config_from_init_kwargs(bad)


def test_v1_checkpoint_loads_strictly_and_latent_avg_falls_back_to_w_avg(tmp_path, caplog):
    path = tmp_path / "triplanenet_final.pth"
    sd = _save_v1(path)
    with caplog.at_level(logging.INFO, logger="vidtriplane.checkpoints"):
        net = load_triplanenet(path, config=TriPlaneNetConfig.tiny())
    assert isinstance(net, TriPlaneNet) and not net.training
    loaded = net.state_dict()
    assert list(loaded) == list(sd) and all(torch.equal(loaded[k], sd[k]) for k in sd)
    assert "mapping.w_avg" in caplog.text
    assert torch.equal(net.latent_avg, sd["decoder.backbone.mapping.w_avg"].repeat(10, 1))
    info = read_triplanenet_checkpoint(path)
    assert (info.version, info.opts["n_styles"]) == (1, 14)


def test_latent_avg_comes_from_the_eg3d_file(tmp_path):
    path, eg3d_path = tmp_path / "v1.pth", tmp_path / "ffhq512-128.pth"
    _save_v1(path)
    g_ema = _random_state(EG3DGenerator(EG3DConfig.tiny()), 5)
    avg = torch.randn(512)
    torch.save({"G_ema": g_ema, "init_kwargs": FFHQ_INIT_KWARGS, "latent_avg": avg}, eg3d_path)
    net = load_triplanenet(path, eg3d=eg3d_path, config=TriPlaneNetConfig.tiny())
    assert torch.equal(net.latent_avg, avg.repeat(10, 1))
    # A G_ema that does not fit the generator is named precisely.
    del g_ema["decoder.net.0.bias"]
    torch.save({"G_ema": g_ema, "init_kwargs": FFHQ_INIT_KWARGS, "latent_avg": avg}, eg3d_path)
    with pytest.raises(StateDictMismatch, match=r"G_ema.*1 missing key: decoder\.net\.0\.bias"):
        load_triplanenet(path, eg3d=eg3d_path, config=TriPlaneNetConfig.tiny())


def test_full_size_eg3d_file_loads(tmp_path):
    G = EG3DGenerator(EG3DConfig())
    sd = _random_state(G, 7)
    avg = torch.randn(1, 512)
    path = tmp_path / "ffhq512-128.pth"
    torch.save({"G_ema": sd, "init_kwargs": FFHQ_INIT_KWARGS, "latent_avg": avg}, path)
    G2, latent_avg = load_eg3d(path)
    assert len(sd) == 176 and all(torch.equal(G2.state_dict()[k], v) for k, v in sd.items())
    assert torch.equal(latent_avg, avg[0])
    assert read_eg3d_checkpoint(path).config == EG3DConfig()


@pytest.mark.parametrize("variant", ["pixelshuffle", "upsample"])
def test_v2_checkpoint_detects_the_variant_from_shapes(tmp_path, variant, caplog):
    sd = _random_state(TriPlaneNetV2(TriPlaneNetConfig.tiny(version=2, variant=variant)), 3)
    path = tmp_path / "v2.pth"
    # opts says the opposite: the shapes win (with a warning); an extra key is ignored with a warning.
    opts = dict(OPTS, use_pixelshuffle=variant != "pixelshuffle")
    torch.save({"state_dict": {**sd, "discriminator.weight": torch.ones(3)}, "opts": opts}, path)
    with caplog.at_level(logging.WARNING, logger="vidtriplane.checkpoints"):
        info = read_triplanenet_checkpoint(path)
        net = load_triplanenet(path, config=TriPlaneNetConfig.tiny(version=2, variant=variant))
    assert (info.version, info.variant) == (2, variant)
    assert isinstance(net, TriPlaneNetV2) and net.triplanenet_encoder.config.variant == variant
    assert all(torch.equal(net.state_dict()[k], v) for k, v in sd.items())
    assert "disagrees with the tensor shapes" in caplog.text and "discriminator.weight" in caplog.text
    # v2 is non-strict about extras only: a missing tensor is still an error.
    del sd["triplanenet_encoder.final_head_two.4.bias"]
    torch.save({"state_dict": sd, "opts": opts}, path)
    with pytest.raises(StateDictMismatch, match=r"final_head_two\.4\.bias"):
        load_triplanenet(path, config=TriPlaneNetConfig.tiny(version=2, variant=variant))


def test_version_and_variant_detection_on_official_shapes():
    with torch.device("meta"):
        shapes = {
            "v1": TriPlaneNet().state_dict(),
            "pixelshuffle": TriPlaneNetV2(TriPlaneNetConfig.v2("pixelshuffle")).state_dict(),
            "upsample": TriPlaneNetV2(TriPlaneNetConfig.v2("upsample")).state_dict(),
        }
    assert detect_version(shapes["v1"]) == 1
    assert detect_version(shapes["upsample"]) == 2
    assert detect_v2_variant(shapes["pixelshuffle"]) == "pixelshuffle"
    assert detect_v2_variant(shapes["upsample"]) == "upsample"
    odd = dict(shapes["upsample"], **{"triplanenet_encoder.up2.conv.double_conv.0.weight": torch.empty(500)})
    with pytest.raises(CheckpointError, match="500 channels; expected 384"):
        detect_v2_variant(odd)
    with pytest.raises(CheckpointError, match=r"\[64, 6, 3, 3\] \(v1\)"):
        detect_version({"triplanenet_encoder.input_layer.0.weight": torch.empty(64, 5, 3, 3)})


def test_wrong_tensors_are_named(tmp_path):
    path = tmp_path / "v1.pth"
    sd = _save_v1(path)
    sd.pop("psp_encoder.styles.3.linear.bias")
    sd["psp_encoder.latlayer1.weight"] = torch.zeros(7, 7, 1, 1)
    torch.save({"state_dict": sd, "opts": OPTS}, path)
    with pytest.raises(StateDictMismatch) as err:
        load_triplanenet(path, config=TriPlaneNetConfig.tiny())
    message = str(err.value)
    assert "1 missing key: psp_encoder.styles.3.linear.bias" in message
    assert "psp_encoder.latlayer1.weight (checkpoint [7, 7, 1, 1] vs model [64, 32, 1, 1])" in message


def test_wrong_files_give_precise_errors(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_triplanenet(tmp_path / "nope.pth")
    (tmp_path / "junk.pth").write_bytes(b"definitely not a torch file\n" * 20)
    with pytest.raises(CheckpointError, match="junk.pth is not a readable torch file"):
        load_triplanenet(tmp_path / "junk.pth")
    torch.save({"state_dict": {"x": torch.ones(1000)}}, tmp_path / "full.pth")
    (tmp_path / "cut.pth").write_bytes((tmp_path / "full.pth").read_bytes()[:300])
    with pytest.raises(CheckpointError, match="cut.pth is an incomplete zip archive"):
        load_triplanenet(tmp_path / "cut.pth")
    torch.save([torch.ones(2)], tmp_path / "list.pth")
    with pytest.raises(CheckpointError, match="holds a list, expected a dict"):
        load_triplanenet(tmp_path / "list.pth")
    torch.save({"model": {}}, tmp_path / "nokey.pth")
    with pytest.raises(CheckpointError, match=r"lacks the key\(s\) \['state_dict'\]"):
        load_triplanenet(tmp_path / "nokey.pth")
    torch.save({"state_dict": {"psp_encoder.x": torch.ones(1)}}, tmp_path / "partial.pth")
    with pytest.raises(CheckpointError, match=r"no \['triplanenet_encoder.', 'decoder.'\] entries"):
        load_triplanenet(tmp_path / "partial.pth")
    torch.save({"state_dict": {"a": 1}}, tmp_path / "notensor.pth")
    with pytest.raises(CheckpointError, match="not named tensors"):
        load_triplanenet(tmp_path / "notensor.pth")
    torch.save({"G_ema": {}, "init_kwargs": FFHQ_INIT_KWARGS}, tmp_path / "eg3d.pth")
    with pytest.raises(CheckpointError, match=r"EG3D file .* lacks the key\(s\) \['latent_avg'\]"):
        read_eg3d_checkpoint(tmp_path / "eg3d.pth")
    torch.save({"G_ema": {}, "init_kwargs": FFHQ_INIT_KWARGS, "latent_avg": torch.ones(3)}, tmp_path / "eg3d.pth")
    with pytest.raises(CheckpointError, match=r"'latent_avg' must be a \[512\] tensor, got \[3\]"):
        read_eg3d_checkpoint(tmp_path / "eg3d.pth")


class _Hostile:
    """Unpickling this would create a directory (stands in for arbitrary code)."""

    def __init__(self, target: str) -> None:
        self.target = target

    def __reduce__(self):
        return (os.mkdir, (self.target,))


def test_a_pickle_with_code_is_refused_without_running_it(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "hostile.pth"
    torch.save({"state_dict": {"x": torch.ones(1)}, "opts": _Hostile(str(marker))}, path)
    with pytest.raises(CheckpointError, match=r"refused because loading it could run code.*weights import"):
        load_triplanenet(path)
    assert not marker.exists()
    with pytest.raises(CheckpointError, match="posix.mkdir|os.mkdir|mkdir"):
        read_eg3d_checkpoint(path)
    assert not marker.exists()


@pytest.mark.slow
def test_full_size_v1_checkpoint_loads_with_official_defaults(tmp_path):
    """A real-size official-layout v1 file (1182 tensors, ~1.1 GB) into the default FFHQ model."""
    sd = TriPlaneNet().state_dict()
    path = tmp_path / "triplanenet_final.pth"
    torch.save({"state_dict": sd, "opts": dict(OPTS)}, path)
    net = load_triplanenet(path)
    assert isinstance(net, TriPlaneNet) and len(net.state_dict()) == 1182
    key = "psp_encoder.styles.13.convs.10.weight"
    assert torch.equal(net.state_dict()[key], sd[key])
    assert net.latent_avg.shape == (14, 512)


def test_converted_nvidia_pickle_loads_like_the_pth(tmp_path):
    """`weights import eg3d-ffhq512-128-pkl` stores safetensors + JSON; load_eg3d reads that pair too."""
    from vidtriplane.checkpoints import save_converted
    from vidtriplane.weights.pickle_safe import ExtractedNetwork

    G = EG3DGenerator(EG3DConfig())
    sd = _random_state(G, 3)
    dest = tmp_path / "ffhq512-128.safetensors"
    save_converted(ExtractedNetwork(state_dict=sd, config={"class_name": "TriPlaneGenerator", "init_kwargs": FFHQ_INIT_KWARGS}), dest)
    G2, latent_avg = load_eg3d(dest)
    assert all(torch.equal(G2.state_dict()[k], v) for k, v in sd.items())
    assert torch.equal(latent_avg, sd["backbone.mapping.w_avg"])


def test_easydict_init_kwargs_load_as_plain_dicts(tmp_path, monkeypatch):
    """EG3D .pth files may pickle init_kwargs as dnnlib EasyDicts: they load as plain dicts, no code runs."""
    import sys
    import types

    dnnlib = types.ModuleType("dnnlib")
    util = types.ModuleType("dnnlib.util")

    class EasyDict(dict):
        def __getattr__(self, name):
            return self[name]

    EasyDict.__module__ = "dnnlib.util"
    EasyDict.__qualname__ = "EasyDict"
    util.EasyDict = EasyDict
    dnnlib.util = util
    monkeypatch.setitem(sys.modules, "dnnlib", dnnlib)
    monkeypatch.setitem(sys.modules, "dnnlib.util", util)
    kwargs = EasyDict(FFHQ_INIT_KWARGS)
    for key, value in FFHQ_INIT_KWARGS.items():
        if isinstance(value, dict):
            kwargs[key] = EasyDict(value)
    G = EG3DGenerator(EG3DConfig.tiny())
    path = tmp_path / "eg3d.pth"
    torch.save({"G_ema": G.state_dict(), "init_kwargs": kwargs, "latent_avg": torch.zeros(512)}, path)
    monkeypatch.delitem(sys.modules, "dnnlib")
    monkeypatch.delitem(sys.modules, "dnnlib.util")
    ckpt = read_eg3d_checkpoint(path)
    assert ckpt.config == EG3DConfig()
