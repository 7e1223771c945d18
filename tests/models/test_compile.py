"""Whole-network compilation plumbing: which parts get compiled, who uses them, CUDA-graph output copies,
the warm-up (``compiler="eager"`` keeps these fast on the CPU; the GPU test runs inductor + CUDA graphs)."""
from __future__ import annotations

import pytest
import torch

from vidtriplane.geometry.camera import lookat_label
from vidtriplane.models import compile as mc
from vidtriplane.models.triplanenet import TriPlaneNet, TriPlaneNetConfig


def tiny_net(device: str = "cpu") -> TriPlaneNet:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return TriPlaneNet(TriPlaneNetConfig.tiny()).eval().to(device)


def test_compile_network_installs_every_part_outside_the_state_dict():
    net = tiny_net()
    keys = list(net.state_dict())
    names = mc.compile_network(net, compiler="eager")
    assert names == ["GradualStyleEncoder", "TriPlaneEncoder", "SynthesisNetwork", "SuperResolution"]
    assert list(net.state_dict()) == keys
    sr = net.decoder.superresolution
    assert mc.is_compiled(sr) and mc.part(sr, "eager") is sr and mc.part(sr, "compiled") is not sr
    mc.uncompile_network(net)
    assert not mc.is_compiled(sr) and mc.part(sr, "compiled") is sr


def test_generator_alone_gets_backbone_and_sr():
    net = tiny_net()
    assert mc.compile_network(net.decoder, compiler="eager") == ["SynthesisNetwork", "SuperResolution"]


def test_unknown_mode_is_rejected():
    with pytest.raises(ValueError, match="compile mode must be one of"):
        mc.compile_network(tiny_net(), mode="fastest")


def test_compiled_parts_are_used_by_fast_backends_only(monkeypatch):
    from vidtriplane.models.eg3d import backends, generator

    # the renderer is not the subject here: keep it eager whatever the backend
    monkeypatch.setattr(generator, "render_rays_with", lambda _, *a, **k: backends.render_rays_with("eager", *a, **k))
    net = tiny_net()
    calls = []
    mc.compile_network(net, compiler="eager", parts=("psp_encoder", "decoder.superresolution"))
    for module in (net.psp_encoder, net.decoder.superresolution):
        compiled = module.__dict__[mc._ATTR]
        module.__dict__[mc._ATTR] = lambda *a, _f=compiled, _m=module, **k: (calls.append(type(_m).__name__),
                                                                            _f(*a, **k))[1]
    x = torch.rand(1, 3, 64, 64) * 2 - 1
    c = lookat_label(torch.tensor([0.2]), torch.tensor([0.0]))
    with torch.no_grad():
        ref = net.render(net.encode(x, c), c).image
        assert calls == []
        out = net.render(net.encode(x, c, backend="compiled"), c, backend="compiled").image
    assert calls == ["GradualStyleEncoder", "SuperResolution", "SuperResolution"]
    assert (out - ref).abs().max() < 1e-5


def test_cuda_graph_outputs_are_copied():
    out = torch.ones(3)
    wrapped = mc._cloning(lambda: out)
    got = wrapped()
    assert torch.equal(got, out) and got.data_ptr() != out.data_ptr()


def test_warmup_runs_every_batch_size():
    net = tiny_net()
    spent = mc.warmup(net, [1, 2], image_size=64, backend="eager", repeats=1, depth_samples=4, importance_samples=4)
    assert sorted(spent) == [1, 2] and all(s > 0 for s in spent.values())


@pytest.mark.gpu
def test_reduce_overhead_keeps_earlier_inversions_intact():
    """CUDA graphs replay into the same memory: an Inversion must survive the next encode."""
    net = tiny_net("cuda")
    mc.compile_network(net, mode="reduce-overhead")
    x1 = torch.rand(2, 3, 64, 64, device="cuda") * 2 - 1
    x2 = torch.rand(2, 3, 64, 64, device="cuda") * 2 - 1
    c = lookat_label(torch.tensor([0.2, -0.2]), torch.tensor([0.0, 0.0])).cuda()
    with torch.no_grad():
        ref = net.encode(x1, c)
        for _ in range(3):  # warm-up, record, replay
            first = net.encode(x1, c, backend="compiled")
            second = net.encode(x2, c, backend="compiled")
    assert (first.planes - ref.planes).abs().max() < 1e-3
    assert (first.planes - second.planes).abs().max() > 1e-2


def test_a_part_that_fails_to_compile_runs_eagerly_with_one_warning(monkeypatch, caplog):
    import logging

    from torch._dynamo.exc import BackendCompilerFailed

    from vidtriplane.models.eg3d import backends, generator

    monkeypatch.setattr(generator, "render_rays_with", lambda _, *a, **k: backends.render_rays_with("eager", *a, **k))
    monkeypatch.setattr(mc, "_warned", False)
    net = tiny_net()

    def broken(*args, **kwargs):
        raise BackendCompilerFailed(lambda: None, RuntimeError("no C++ compiler"), None)

    for module in (net.psp_encoder, net.decoder.superresolution):  # as compile_network installs them
        module.__dict__[mc._ATTR] = mc._guarded(broken, module)
    x = torch.rand(1, 3, 64, 64) * 2 - 1
    c = lookat_label(torch.tensor([0.2]), torch.tensor([0.0]))
    with torch.no_grad(), caplog.at_level(logging.WARNING, logger="vidtriplane.models.compile"):
        ref = net.render(net.encode(x, c), c).image
        out = net.render(net.encode(x, c, backend="compiled"), c, backend="compiled").image
    assert not mc.is_compiled(net.psp_encoder) and not mc.is_compiled(net.decoder.superresolution)
    assert len([r for r in caplog.records if "failed" in r.getMessage()]) == 1
    assert torch.equal(out, ref)
