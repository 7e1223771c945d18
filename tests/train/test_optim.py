"""Ranger against an independent float64 implementation of the update rule, and exact resume."""
from __future__ import annotations

import io
import math

import numpy as np
import pytest
import torch

from vidtriplane.train.optim import Ranger

SHAPES = {"conv": (4, 3, 3, 3), "fc": (5, 4), "bias": (5,)}


def _grads(steps: int, seed: int = 0) -> list[dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    return [{n: torch.randn(s, generator=g) + 0.3 for n, s in SHAPES.items()} for _ in range(steps)]


def _params(seed: int = 1) -> dict[str, torch.nn.Parameter]:
    g = torch.Generator().manual_seed(seed)
    return {n: torch.nn.Parameter(torch.randn(s, generator=g)) for n, s in SHAPES.items()}


class ReferenceRanger:
    """The spec's rule, step by step, in float64 numpy (written without looking at the class under test)."""

    def __init__(self, params, lr=1e-4, alpha=0.5, k=6, threshold=5, b1=0.95, b2=0.999, eps=1e-5):
        self.p = {n: v.detach().double().numpy().copy() for n, v in params.items()}
        self.slow = {n: v.copy() for n, v in self.p.items()}
        self.m = {n: np.zeros_like(v) for n, v in self.p.items()}
        self.v = {n: np.zeros_like(v) for n, v in self.p.items()}
        self.hp = (lr, alpha, k, threshold, b1, b2, eps)
        self.t = 0
        self.rectified: list[bool] = []

    def step(self, grads):
        lr, alpha, k, threshold, b1, b2, eps = self.hp
        self.t += 1
        t = self.t
        rho_inf = 2.0 / (1.0 - b2) - 1.0
        rho = rho_inf - 2.0 * t * b2 ** t / (1.0 - b2 ** t)
        self.rectified.append(rho > threshold)
        for n, g in grads.items():
            g = g.double().numpy()
            if g.ndim > 1:
                g = g - g.reshape(g.shape[0], -1).mean(axis=1).reshape((-1,) + (1,) * (g.ndim - 1))
            self.v[n] = b2 * self.v[n] + (1 - b2) * g * g
            self.m[n] = b1 * self.m[n] + (1 - b1) * g
            if rho > threshold:
                r = math.sqrt((1 - b2 ** t) * (rho - 4) * (rho - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho))
                self.p[n] = self.p[n] - lr * r / (1 - b1 ** t) * self.m[n] / (np.sqrt(self.v[n]) + eps)
            else:
                self.p[n] = self.p[n] - lr / (1 - b1 ** t) * self.m[n]
            if t % k == 0:
                self.slow[n] = self.slow[n] + alpha * (self.p[n] - self.slow[n])
                self.p[n] = self.slow[n].copy()


def _apply(opt: Ranger, params, grads) -> None:
    for n, p in params.items():
        p.grad = grads[n].clone()
    opt.step()


@pytest.mark.parametrize("lr", [1e-4, 1e-2])
def test_matches_the_reference_before_and_after_the_threshold_and_across_lookahead(lr):
    params = _params()
    ref = ReferenceRanger(params, lr=lr)
    opt = Ranger(params.values(), lr=lr)
    for grads in _grads(13):
        before = {n: p.detach().clone() for n, p in params.items()}
        _apply(opt, params, grads)
        ref.step(grads)
        for n, p in params.items():
            assert not torch.equal(p, before[n])
            np.testing.assert_allclose(p.detach().double().numpy(), ref.p[n], rtol=1e-5, atol=1e-7 * lr / 1e-4)
    assert ref.rectified == [False] * 5 + [True] * 8  # steps 1-5 plain momentum, 6+ rectified
    assert opt.state[params["conv"]]["step"] == 13


def test_lookahead_pulls_back_halfway_at_step_k():
    params = _params()
    opt = Ranger(params.values(), lr=1e-2, k=3)
    start = params["fc"].detach().clone()
    grads = _grads(3)
    for g in grads[:2]:
        _apply(opt, params, g)
    ref = ReferenceRanger(params, lr=1e-2, k=10**9)  # fast weights only, from step 2's weights
    ref.t, ref.m, ref.v = 2, {n: opt.state[p]["exp_avg"].double().numpy() for n, p in params.items()}, \
        {n: opt.state[p]["exp_avg_sq"].double().numpy() for n, p in params.items()}
    ref.step(grads[2])
    _apply(opt, params, grads[2])
    expected = start.double().numpy() + 0.5 * (ref.p["fc"] - start.double().numpy())
    np.testing.assert_allclose(params["fc"].detach().double().numpy(), expected, rtol=1e-5, atol=1e-8)


def test_state_dict_round_trip_continues_bit_identically():
    grads = _grads(14, seed=5)
    a_params = _params(seed=6)
    a = Ranger(a_params.values(), lr=1e-3)
    for g in grads[:8]:
        _apply(a, a_params, g)
    buf = io.BytesIO()
    torch.save({"opt": a.state_dict(), "params": {n: p.detach() for n, p in a_params.items()}}, buf)
    buf.seek(0)
    saved = torch.load(buf, weights_only=True)  # checkpoints are read with weights_only
    b_params = {n: torch.nn.Parameter(t.clone()) for n, t in saved["params"].items()}
    b = Ranger(b_params.values(), lr=0.5, k=2)  # wrong hyper-parameters: the state_dict restores them
    b.load_state_dict(saved["opt"])
    assert b.param_groups[0]["lr"] == 1e-3 and b.param_groups[0]["k"] == 6
    for g in grads[8:]:  # crosses the Lookahead sync at step 12
        _apply(a, a_params, g)
        _apply(b, b_params, g)
    for n in SHAPES:
        assert torch.equal(a_params[n], b_params[n]), n
        assert torch.equal(a.state[a_params[n]]["slow_buffer"], b.state[b_params[n]]["slow_buffer"])


def test_gradients_are_left_untouched_and_bad_settings_refused():
    params = _params()
    opt = Ranger(params.values())
    grads = _grads(1)[0]
    _apply(opt, params, grads)
    assert torch.equal(params["conv"].grad, grads["conv"])  # centralisation works on a copy
    with pytest.raises(ValueError, match="alpha"):
        Ranger(params.values(), alpha=1.5)
    with pytest.raises(ValueError, match="k must be"):
        Ranger(params.values(), k=0)
