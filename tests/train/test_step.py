"""One training step's forward passes: each loss reaches only its own branch (``official_spec.md`` 1.5)."""
from __future__ import annotations

import pytest
import torch

from tests.train.tiny import tiny_config
from vidtriplane.train import step as steps
from vidtriplane.train.data import TrainSamples
from vidtriplane.train.losses import LossNets
from vidtriplane.train.networks import build_network


def setup(version: int):
    cfg = tiny_config(f"model.version={version}", "model.variant=pixelshuffle")
    net = build_network(cfg)
    net.train()
    net.decoder.eval()
    ds = TrainSamples(None, synthetic=2, image_size=64, conf_size=64, z_dim=net.decoder.cfg.z_dim, seed=0)
    batch = torch.utils.data.default_collate([ds[(0, 0)], ds[(0, 1)]])
    inp = steps.prepare(batch, net.decoder, cfg, input_size=64, device=torch.device("cpu"), full=False)
    for p in list(net.psp_encoder.parameters()) + list(net.triplanenet_encoder.parameters()):
        p.requires_grad_(True)
    return cfg, net, inp


def grads(module) -> float:
    return sum(float(p.grad.abs().sum()) for p in module.parameters() if p.grad is not None)


@pytest.mark.parametrize("version", [1, 2])
def test_each_loss_reaches_only_its_branch(version):
    cfg, net, inp = setup(version)
    kw = steps.render_kwargs(cfg)
    first = steps.first_branch(net, inp, kw, version=version)
    second = steps.second_branch(net, inp, first, kw, version=version)
    # the tri-plane loss: gradients in the tri-plane encoder only
    loss, terms = steps.triplane_objective(second, inp, LossNets(), cfg)
    loss.backward(retain_graph=True)
    assert grads(net.triplanenet_encoder) > 0 and grads(net.psp_encoder) == 0
    assert all(p.grad is None for p in net.decoder.parameters())
    assert ("loss_triplane_total" in terms) == (version == 2)
    # the pSp loss: gradients in pSp only
    net.zero_grad(set_to_none=True)
    loss, terms = steps.psp_objective(first, inp, LossNets(), cfg)
    loss.backward()
    assert grads(net.psp_encoder) > 0 and grads(net.triplanenet_encoder) == 0
    assert terms["loss_l2_psp"] == pytest.approx(float(((first.y.detach() - inp.x) ** 2).mean()), rel=1e-6)


def test_v2_inputs_carry_the_mirror_view():
    cfg, net, inp = setup(2)
    assert torch.equal(inp.x_mirror, inp.x.flip(-1))
    first = steps.first_branch(net, inp, steps.render_kwargs(cfg), version=2)
    # the mirror render is the codes drawn at the flipped camera: not the flipped render (the face is not symmetric)
    assert first.y_mirror is not None and not torch.allclose(first.y_mirror, first.y.flip(-1), atol=1e-3)


def test_the_branch_total_is_what_was_minimised():
    assert steps.branch_total({"loss_psp": 1.0}, "psp") == 1.0
    assert steps.branch_total({"loss_psp": 1.0, "loss_psp_total": 1.5}, "psp") == 1.5
