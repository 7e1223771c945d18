"""Ranger: RAdam + Lookahead + gradient centralisation (``tpn:training/ranger.py``).

Per parameter p with gradient g, at step t (counted per parameter, from 1):

1. gradient centralisation: if g has more than one dimension, ``g <- g - mean(g over all dims but 0)``;
2. moments: ``v <- b2 v + (1 - b2) g^2``, ``m <- b1 m + (1 - b1) g``;
3. RAdam (Liu et al. 2020, eq. 6-7): ``rho_inf = 2 / (1 - b2) - 1``,
   ``rho_t = rho_inf - 2 t b2^t / (1 - b2^t)``;
   if ``rho_t > N_sma_threshold`` (5):
   ``r_t = sqrt((1 - b2^t) (rho_t - 4)(rho_t - 2) rho_inf / ((rho_inf - 4)(rho_inf - 2) rho_t)) / (1 - b1^t)``
   and ``p <- p - lr r_t m / (sqrt(v) + eps)``; otherwise ``p <- p - lr m / (1 - b1^t)``
   (weight decay, when non-zero, first does ``p <- p - wd lr p``);
4. Lookahead (Zhang et al. 2019): the slow copy starts as p before the first update; every k steps
   ``slow <- slow + alpha (p - slow)`` and ``p <- slow``.

Defaults are TriPlaneNet's: lr 1e-4, alpha 0.5, k 6, threshold 5, betas (0.95, 0.999), eps 1e-5,
weight decay 0, centralisation on every gradient with more than one dimension. Everything the update
needs (step, moments, slow weights, hyper-parameters) is in ``state_dict()``, so saving and loading in
the middle of a run continues bit for bit. Gradients are not modified in place (the official code
centralises ``p.grad`` itself; the update is the same).
"""
from __future__ import annotations

import math
from typing import Callable, Iterable

import torch
from torch.optim import Optimizer


class Ranger(Optimizer):
    """RAdam + Lookahead + gradient centralisation, as a ``torch.optim.Optimizer``."""

    def __init__(
        self,
        params: Iterable[torch.Tensor] | Iterable[dict],
        lr: float = 1e-4,
        *,
        alpha: float = 0.5,  # Lookahead: how far the slow weights move towards the fast ones
        k: int = 6,  # Lookahead: synchronise every k steps
        n_sma_threshold: float = 5.0,  # RAdam: rectified update only when rho_t exceeds this
        betas: tuple[float, float] = (0.95, 0.999),
        eps: float = 1e-5,
        weight_decay: float = 0.0,
        gc_min_dims: int = 2,  # centralise gradients with at least this many dimensions (3 = conv only)
    ) -> None:
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"Ranger: alpha must be in [0, 1], got {alpha}")
        if k < 1:
            raise ValueError(f"Ranger: k must be >= 1, got {k}")
        if lr <= 0 or eps <= 0:
            raise ValueError(f"Ranger: lr and eps must be > 0, got lr={lr}, eps={eps}")
        if not (0.0 <= betas[0] < 1.0 and 0.0 <= betas[1] < 1.0):
            raise ValueError(f"Ranger: betas must be in [0, 1), got {betas}")
        defaults = dict(lr=lr, alpha=alpha, k=k, n_sma_threshold=n_sma_threshold, betas=tuple(betas), eps=eps,
                        weight_decay=weight_decay, gc_min_dims=gc_min_dims)
        super().__init__(params, defaults)

    @staticmethod
    def rectification(step: int, betas: tuple[float, float], threshold: float) -> tuple[bool, float]:
        """(use the adaptive update?, step size before lr) of RAdam at ``step`` (1-based)."""
        beta1, beta2 = betas
        beta2_t = beta2 ** step
        rho_inf = 2 / (1 - beta2) - 1
        rho_t = rho_inf - 2 * step * beta2_t / (1 - beta2_t)
        if rho_t > threshold:
            ratio = (rho_t - 4) / (rho_inf - 4) * (rho_t - 2) / rho_t * rho_inf / (rho_inf - 2)
            return True, math.sqrt((1 - beta2_t) * ratio) / (1 - beta1 ** step)
        return False, 1.0 / (1 - beta1 ** step)

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                if p.grad.is_sparse:
                    raise RuntimeError("Ranger does not support sparse gradients")
                grad = p.grad.float()
                fast = p.float()
                state = self.state[p]
                if not state:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(fast)
                    state["exp_avg_sq"] = torch.zeros_like(fast)
                    state["slow_buffer"] = p.detach().clone()
                # 1. gradient centralisation
                if grad.dim() >= group["gc_min_dims"]:
                    grad = grad - grad.mean(dim=tuple(range(1, grad.dim())), keepdim=True)
                # 2. moments
                state["step"] += 1
                t = state["step"]
                exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
                exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
                exp_avg.mul_(beta1).add_(grad, alpha=1 - beta1)
                # 3. rectified (or plain momentum) update
                adaptive, step_size = self.rectification(t, (beta1, beta2), group["n_sma_threshold"])
                if group["weight_decay"] != 0:
                    fast = fast.add(fast, alpha=-group["weight_decay"] * group["lr"])
                if adaptive:
                    fast = fast.addcdiv(exp_avg, exp_avg_sq.sqrt().add_(group["eps"]), value=-step_size * group["lr"])
                else:
                    fast = fast.add(exp_avg, alpha=-step_size * group["lr"])
                p.copy_(fast)
                # 4. Lookahead synchronisation
                if t % group["k"] == 0:
                    slow = state["slow_buffer"]
                    slow.add_(p - slow, alpha=group["alpha"])
                    p.copy_(slow)
        return loss


__all__ = ["Ranger"]
