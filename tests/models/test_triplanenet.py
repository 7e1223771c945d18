"""TriPlaneNet v1/v2 plumbing on tiny random models: encode once / render many, CTTR, latent_avg, v2 mirror."""
from __future__ import annotations

import logging

import pytest
import torch

from vidtriplane.geometry.camera import flip_yaw, lookat_label
from vidtriplane.models.triplanenet import (
    Inversion,
    TriPlaneNet,
    TriPlaneNetConfig,
    TriPlaneNetV2,
    pool_to,
)


def _randomize(net: torch.nn.Module, seed: int) -> None:
    """Random BatchNorm statistics and small non-zero biases so every path carries signal."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in net.state_dict().items():
            if name.endswith("running_var"):
                t.copy_(1 + 0.5 * torch.rand(t.shape, generator=g))
            elif name.endswith("running_mean") or (name.endswith(".bias") and not name.startswith("decoder.")):
                t.copy_(0.1 * torch.randn(t.shape, generator=g))


@pytest.fixture(scope="module")
def v1() -> TriPlaneNet:
    torch.manual_seed(0)
    net = TriPlaneNet(TriPlaneNetConfig.tiny()).eval()
    _randomize(net, 1)
    net.set_latent_avg(0.3 * torch.randn(512))
    return net


@pytest.fixture(scope="module")
def batch() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(2)
    x = torch.tanh(torch.randn(2, 3, 64, 64, generator=g))
    c = lookat_label(torch.tensor([0.0, 0.3]), torch.tensor([0.0, -0.1]))
    return x, c


class CallCounter:
    """Counts forward calls of named sub-modules."""

    def __init__(self, **modules: torch.nn.Module) -> None:
        self.counts = {name: 0 for name in modules}
        self.handles = [m.register_forward_hook(self._hook(name)) for name, m in modules.items()]

    def _hook(self, name: str):
        def hook(module, inputs, output):
            self.counts[name] += 1
        return hook

    def close(self) -> None:
        for h in self.handles:
            h.remove()


def _counter(net) -> CallCounter:
    return CallCounter(psp=net.psp_encoder, tri=net.triplanenet_encoder, backbone=net.decoder.backbone.synthesis,
                       sr=net.decoder.superresolution)


def test_state_dict_has_three_parts_and_no_latent_avg(v1):
    keys = list(v1.state_dict())
    assert {k.split(".")[0] for k in keys} == {"psp_encoder", "triplanenet_encoder", "decoder"}
    assert not any("latent_avg" in k for k in keys)
    assert isinstance(v1.latent_avg, torch.Tensor) and v1.latent_avg.shape == (10, 512)


def test_encode_once_render_many_equals_full_forward_passes(v1, batch):
    x, c = batch
    views = [lookat_label(torch.tensor([yaw] * 2), torch.tensor([0.0] * 2)) for yaw in (-0.4, 0.0, 0.5)]
    counter = _counter(v1)
    try:
        with torch.no_grad():
            full = [v1(x, c, c_novel=cv) for cv in views]
        assert counter.counts == {"psp": 3, "tri": 3, "backbone": 3, "sr": 6}
        counter.counts = dict.fromkeys(counter.counts, 0)
        with torch.no_grad():
            inv = v1.encode(x, c)
            cached = [pool_to(v1.render(inv, cv).image, (64, 64)) for cv in views]
        # Encoders and backbone once; one SR per render plus the first-branch render.
        assert counter.counts == {"psp": 1, "tri": 1, "backbone": 1, "sr": 4}
    finally:
        counter.close()
    for a, b in zip(full, cached):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6)
    assert not torch.allclose(cached[0], cached[2], atol=1e-3)  # the views differ


def test_encode_matches_the_official_recipe(v1, batch):
    """Against the generator's own paths: backbone inside synthesis, planes = backbone + offsets."""
    x, c = batch
    with torch.no_grad():
        inv = v1.encode(x, c)
        codes = v1.psp_encoder(x) + v1.latent_avg
        y_psp = pool_to(v1.decoder.synthesis(codes, c).image, (64, 64))
        offsets = v1.triplanenet_encoder(torch.cat([y_psp, x - y_psp], dim=1))
        final = v1.decoder.synthesis(codes, c, triplane_offsets=offsets).image
        ours = v1.render(inv, c).image
    assert isinstance(inv, Inversion) and inv.cttr_steps == 0
    torch.testing.assert_close(inv.codes, codes, rtol=0, atol=0)
    torch.testing.assert_close(inv.y_psp, y_psp, rtol=0, atol=1e-6)
    torch.testing.assert_close(inv.offsets, offsets, rtol=0, atol=1e-6)
    torch.testing.assert_close(inv.planes, inv.backbone_planes + inv.offsets, rtol=0, atol=0)
    torch.testing.assert_close(ours, final, rtol=0, atol=1e-6)
    assert inv.offsets.abs().mean() > 1e-3


def test_cttr_replaces_offsets_and_reuses_codes(v1, batch):
    x, c = batch
    c_novel = lookat_label(torch.tensor([-0.4, -0.4]), torch.tensor([0.0, 0.0]))
    with torch.no_grad():
        inv0 = v1.encode(x, c)
        inv2 = v1.encode(x, c, cttr_steps=2)
        # Manual cascade: each pass reads a render of the input view with the previous offsets.
        offsets = inv0.offsets
        for _ in range(2):
            y1 = pool_to(v1.decoder.synthesis(inv0.codes, c, triplane_offsets=offsets).image, (64, 64))
            offsets = v1.triplanenet_encoder(torch.cat([y1, x - y1], dim=1))
        one = v1(x, c, c_novel=c_novel, cttr=True)
        inv1 = v1.encode(x, c, cttr_steps=1)
        one_ref = pool_to(v1.render(inv1, c_novel).image, (64, 64))
    assert inv2.cttr_steps == 2 and inv1.cttr_steps == 1
    torch.testing.assert_close(inv2.codes, inv0.codes, rtol=0, atol=0)
    torch.testing.assert_close(inv2.offsets, offsets, rtol=0, atol=1e-6)
    torch.testing.assert_close(inv2.planes, inv2.backbone_planes + offsets, rtol=0, atol=1e-6)
    assert not torch.allclose(inv2.offsets, inv0.offsets, atol=1e-4)
    torch.testing.assert_close(one, one_ref, rtol=0, atol=1e-6)


def test_cttr_step_accepts_a_precomputed_input_view(v1, batch):
    x, c = batch
    with torch.no_grad():
        inv = v1.encode(x, c)
        image = v1.render(inv, c).image
        counter = _counter(v1)
        try:
            a = v1.cttr_step(inv, x, input_view_image=image)
            assert counter.counts["sr"] == 0 and counter.counts["tri"] == 1
        finally:
            counter.close()
        b = v1.cttr_step(inv, x)
    torch.testing.assert_close(a.offsets, b.offsets, rtol=0, atol=0)
    with pytest.raises(ValueError, match=">= 0"):
        v1.encode(x, c, cttr_steps=-1)


def test_forward_returns_one_tensor_type(v1, batch):
    x, c = batch
    with torch.no_grad():
        outs = [v1(x, c), v1(x, c, resize=False), v1(x, c, cttr=True)]
    assert all(type(o) is torch.Tensor for o in outs)
    assert outs[0].shape == (2, 3, 64, 64) and outs[1].shape == (2, 3, 128, 128)
    torch.testing.assert_close(outs[0], pool_to(outs[1], (64, 64)), rtol=0, atol=1e-6)


def test_render_broadcasts_one_camera_and_passes_sampling_options(v1, batch):
    x, c = batch
    cam = lookat_label(torch.tensor(0.2), torch.tensor(0.0))
    with torch.no_grad():
        inv = v1.encode(x, c)
        a = v1.render(inv, cam).image
        b = v1.render(inv, cam.expand(2, -1)).image
        s1 = v1.render(inv, cam, sampling="stochastic", generator=torch.Generator().manual_seed(0)).image
        s2 = v1.render(inv, cam, sampling="stochastic", generator=torch.Generator().manual_seed(0)).image
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    torch.testing.assert_close(s1, s2, rtol=0, atol=0)
    assert not torch.allclose(a, s1, atol=1e-6)


def test_latent_avg_falls_back_to_w_avg_with_a_log_line(batch, caplog):
    x, c = batch
    net = TriPlaneNet(TriPlaneNetConfig.tiny()).eval()
    with torch.no_grad():
        net.decoder.backbone.mapping.w_avg.copy_(torch.randn(512))
        with caplog.at_level(logging.INFO, logger="vidtriplane.models.triplanenet"):
            codes = net.encode_codes(x)
        expected = net.psp_encoder(x) + net.decoder.backbone.mapping.w_avg.repeat(10, 1)
    assert net.latent_avg is None
    assert "mapping.w_avg" in caplog.text
    torch.testing.assert_close(codes, expected, rtol=0, atol=0)
    net.set_latent_avg(torch.ones(512))
    assert net.latent_avg.shape == (10, 512)
    with pytest.raises(ValueError, match=r"\[512\] or \[10, 512\]"):
        net.set_latent_avg(torch.ones(14, 512))


def test_config_mismatch_is_rejected():
    cfg = TriPlaneNetConfig.tiny()
    with pytest.raises(ValueError, match="9-channel"):
        TriPlaneNetV2(cfg)
    bad = TriPlaneNetConfig(psp=cfg.psp.__class__(n_styles=14), encoder=cfg.encoder, eg3d=cfg.eg3d)
    with pytest.raises(ValueError, match="codes but the generator wants"):
        TriPlaneNet(bad)


@pytest.mark.parametrize("variant", ["pixelshuffle", "upsample"])
def test_v2_uses_mirror_input_and_refined_planes(variant, batch):
    x, c = batch
    torch.manual_seed(3)
    net = TriPlaneNetV2(TriPlaneNetConfig.tiny(version=2, variant=variant)).eval()
    _randomize(net, 4)
    net.set_latent_avg(0.3 * torch.randn(512))
    seen = {}
    handle = net.triplanenet_encoder.register_forward_hook(lambda m, i, o: seen.update(inp=i[0], planes=i[1]))
    try:
        with torch.no_grad():
            inv = net.encode(x, c)
            codes = net.psp_encoder(x) + net.latent_avg
            y = pool_to(net.decoder.synthesis(codes, c).image, (64, 64))
            y_m = pool_to(net.decoder.synthesis(codes, flip_yaw(c)).image, (64, 64))
            backbone = net.decoder.backbone_planes(codes)
            final = net(x, c)
            direct = pool_to(net.decoder.synthesis(codes, c, planes=inv.planes).image, (64, 64))
    finally:
        handle.remove()
    assert seen["inp"].shape == (2, 9, 64, 64)
    torch.testing.assert_close(seen["inp"], torch.cat([y, x - y, x.flip(-1) - y_m], dim=1), rtol=0, atol=1e-6)
    torch.testing.assert_close(seen["planes"], backbone, rtol=0, atol=0)
    assert inv.offsets is None and not torch.allclose(inv.planes, backbone, atol=1e-4)
    torch.testing.assert_close(final, direct, rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match="v1 only"):
        net.encode(x, c, cttr_steps=1)
