"""EG3D generator structure (official keys) and behaviour, on the tiny config where a forward pass is needed."""
from __future__ import annotations

import json

import pytest
import torch

from tests.conftest import shared_path
from vidtriplane.geometry.camera import lookat_label
from vidtriplane.models.eg3d import EG3DConfig, EG3DGenerator, EG3DOutput
from vidtriplane.models.state import StateDictMismatch, load_strict


@pytest.fixture(scope="module")
def full_G() -> EG3DGenerator:
    return EG3DGenerator(EG3DConfig())


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    G = EG3DGenerator(EG3DConfig.tiny()).eval()
    with torch.no_grad():  # non-zero noise strengths so the noise path matters
        for name, p in G.named_parameters():
            if name.endswith("noise_strength"):
                p.fill_(0.1)
    c = lookat_label([0.0, 0.3], [0.0, -0.1])
    ws = G.mapping(torch.randn(2, 512), c)
    with torch.no_grad():
        out = G.synthesis(ws, c)
    return G, ws, c, out


def test_state_dict_matches_the_official_manifest(full_G):
    manifest = json.loads(shared_path("spec", "official_state_dict_manifest.json").read_text())["eg3d_G"]
    sd = full_G.state_dict()
    assert list(sd) == list(manifest)
    for key, entry in manifest.items():
        assert list(sd[key].shape) == entry["shape"], key
    buffers = {k for k, _ in full_G.named_buffers()}
    assert {k for k, e in manifest.items() if e["kind"] == "buffer"} == buffers


def test_full_config_sizes(full_G):
    cfg = full_G.cfg
    assert (cfg.num_ws, cfg.backbone_channels, cfg.sr_input_resolution) == (14, 96, 128)
    assert (cfg.depth_resolution, cfg.depth_resolution_importance, cfg.ray_start, cfg.ray_end) == (48, 48, 2.25, 3.3)
    assert sum(p.numel() for p in full_G.parameters()) == 30_662_136
    with pytest.raises(Exception):
        cfg.z_dim = 3  # frozen


def test_strict_loading_with_official_names_and_clear_errors(full_G):
    sd = {k: torch.zeros_like(v) for k, v in full_G.state_dict().items()}
    G = EG3DGenerator(EG3DConfig.tiny())
    tiny_sd = {k: torch.full_like(v, 0.5) for k, v in G.state_dict().items()}
    G.load_state_dict(tiny_sd, strict=True)
    assert torch.equal(G.decoder.net[0].weight, torch.full_like(G.decoder.net[0].weight, 0.5))
    bad = dict(sd)
    bad["decoder.net.0.weightX"] = bad.pop("decoder.net.0.weight")
    bad["superresolution.block1.torgb.bias"] = torch.zeros(4)
    with pytest.raises(StateDictMismatch) as info:
        load_strict(full_G, bad, what="EG3D generator")
    msg = str(info.value)
    assert "decoder.net.0.weight" in msg and "decoder.net.0.weightX" in msg
    assert "superresolution.block1.torgb.bias (checkpoint [4] vs model [3])" in msg


def test_tiny_output_fields_and_shapes(tiny):
    G, ws, c, out = tiny
    assert isinstance(out, EG3DOutput)
    assert G.cfg.num_ws == 10 and ws.shape == (2, 10, 512)
    shapes = {"image": (2, 3, 128, 128), "image_raw": (2, 3, 32, 32), "image_depth": (2, 1, 32, 32),
              "feature_image": (2, 32, 32, 32), "weights_total": (2, 1, 32, 32), "planes": (2, 96, 64, 64)}
    for name, shape in shapes.items():
        t = getattr(out, name)
        assert t.shape == shape, name
        assert torch.isfinite(t).all(), name
    assert torch.equal(out.image_raw, out.feature_image[:, :3])
    assert ((out.image_depth >= 2.25) & (out.image_depth <= 3.3 + 0.05)).all()
    assert not torch.allclose(out.image[0], out.image[1])


def test_mapping_truncation(tiny):
    G, _, c, _ = tiny
    z = torch.randn(2, 512)
    with torch.no_grad():
        G.backbone.mapping.w_avg.normal_()
        ws = G.mapping(z, c)
        assert torch.allclose(G.mapping(z, c, truncation_psi=0.0), G.backbone.mapping.w_avg.expand_as(ws))
        half = G.mapping(z, c, truncation_psi=0.5, truncation_cutoff=3)
    w_avg = G.backbone.mapping.w_avg
    assert torch.allclose(half[:, :3], w_avg + 0.5 * (ws[:, :3] - w_avg), atol=1e-6)
    assert torch.equal(half[:, 3:], ws[:, 3:])
    assert (ws == ws[:, :1]).all()


def test_offsets_and_planes_arguments(tiny):
    G, ws, c, out = tiny
    with torch.no_grad():
        zero = G.synthesis(ws, c, triplane_offsets=torch.zeros_like(out.planes))
        offsets = 0.5 * torch.randn_like(out.planes)
        shifted = G.synthesis(ws, c, triplane_offsets=offsets)
        given = G.synthesis(ws, c, planes=out.planes + offsets)
    for name in ("image", "image_depth", "planes"):
        assert torch.allclose(getattr(zero, name), getattr(out, name), atol=1e-6), name
        assert torch.allclose(getattr(given, name), getattr(shifted, name), atol=1e-6), name
    assert torch.allclose(shifted.planes, out.planes + offsets)
    assert (shifted.image - out.image).abs().max() > 1e-2


def test_batch_consistency_tiny(tiny):
    G, ws, c, out = tiny
    with torch.no_grad():
        one = G.synthesis(ws[1:], c[1:])
    assert torch.allclose(one.image, out.image[1:], atol=1e-5)
    assert torch.allclose(one.image_depth, out.image_depth[1:], atol=1e-5)


def test_training_mode_unfused_convs_match_inference(tiny):
    G, ws, c, out = tiny
    G.train()
    try:
        with torch.no_grad():
            train_out = G.synthesis(ws, c)
    finally:
        G.eval()
    assert torch.allclose(train_out.image, out.image, atol=1e-4)


@pytest.mark.parametrize("training", [False, True])
def test_gradients_reach_ws_and_offsets(tiny, training):
    G, ws, c, out = tiny
    G.requires_grad_(False)
    G.train(training)  # training mode takes the unfused modulated convolutions
    try:
        ws_var = ws.detach().clone().requires_grad_()
        offsets = torch.zeros_like(out.planes, requires_grad=True)
        res = G.synthesis(ws_var, c, triplane_offsets=offsets, depth_samples=6, importance_samples=6)
        res.image.square().mean().backward()
    finally:
        G.requires_grad_(True)
        G.eval()
    assert ws_var.grad is not None and ws_var.grad.abs().sum() > 0
    assert offsets.grad is not None and offsets.grad.abs().sum() > 0


def test_other_rendering_resolution_is_resized_for_the_superresolution(tiny):
    G, ws, c, _ = tiny
    with torch.no_grad():
        out = G.synthesis(ws[:1], c[:1], neural_rendering_resolution=16, depth_samples=6, importance_samples=0)
    assert out.image.shape == (1, 3, 128, 128) and out.image_raw.shape == (1, 3, 16, 16)
    assert torch.isfinite(out.image).all()


def test_bad_inputs_raise_clear_errors(tiny):
    G, ws, c, out = tiny
    with pytest.raises(ValueError, match=r"ws must be \[B, 10, 512\]"):
        G.synthesis(ws[:, :5], c)
    with pytest.raises(ValueError, match=r"camera labels must be \[2, 25\]"):
        G.synthesis(ws, c[:1])
    with pytest.raises(ValueError, match="triplane_offsets"):
        G.synthesis(ws, c, triplane_offsets=torch.zeros(2, 96, 8, 8))
    with pytest.raises(ValueError, match="sampling"):
        G.synthesis(ws, c, sampling="random")


@pytest.mark.gpu
def test_tiny_cuda_matches_cpu(tiny):
    G, ws, c, out = tiny
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    Gc = EG3DGenerator(G.cfg).cuda().eval()
    Gc.load_state_dict(G.state_dict())
    with torch.no_grad():
        gpu = Gc.synthesis(ws.cuda(), c.cuda())
    for name in ("image", "image_depth", "feature_image", "planes"):
        assert torch.allclose(getattr(gpu, name).cpu(), getattr(out, name), atol=1e-4), name
    G16 = EG3DGenerator(G.cfg.replace(sr_fp16=True)).cuda().eval()
    G16.load_state_dict(G.state_dict())
    with torch.no_grad():
        half = G16.synthesis(ws.cuda(), c.cuda())
    assert half.image.dtype == torch.float32
    assert (half.image.cpu() - out.image).abs().max() < 0.05
