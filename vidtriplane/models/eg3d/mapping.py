"""StyleGAN2 mapping network with camera conditioning (``eg3d:eg3d/training/networks_stylegan2.py``: ``MappingNetwork``).

z [B, z_dim] and c [B, c_dim] -> ws [B, num_ws, w_dim]:
normalise z; embed c (linear FC) and normalise; concatenate; ``num_layers`` lrelu FCs with
lr multiplier 0.01; broadcast to ``num_ws`` rows; optional truncation towards ``w_avg``.
Keys: ``w_avg`` (buffer), ``embed.*``, ``fc{i}.*``.
"""
from __future__ import annotations

import torch
from torch import nn

from vidtriplane.models.eg3d.layers import FullyConnectedLayer


def normalize_2nd_moment(x: torch.Tensor, dim: int = 1, eps: float = 1e-8) -> torch.Tensor:
    """``x / sqrt(mean(x^2) + eps)`` along ``dim`` (pixel norm)."""
    return x * (x.square().mean(dim=dim, keepdim=True) + eps).rsqrt()


class MappingNetwork(nn.Module):
    """z, c -> ws. ``c_dim`` 0 disables conditioning (then ``embed`` does not exist)."""

    def __init__(
        self,
        *,
        z_dim: int,
        c_dim: int,
        w_dim: int,
        num_ws: int,
        num_layers: int = 2,
        lr_multiplier: float = 0.01,
    ) -> None:
        super().__init__()
        self.z_dim = z_dim
        self.c_dim = c_dim
        self.w_dim = w_dim
        self.num_ws = num_ws
        self.num_layers = num_layers
        embed_features = w_dim if c_dim > 0 else 0
        features = [z_dim + embed_features] + [w_dim] * num_layers
        self.register_buffer("w_avg", torch.zeros(w_dim))
        if c_dim > 0:
            self.embed = FullyConnectedLayer(c_dim, embed_features)
        for i in range(num_layers):
            setattr(self, f"fc{i}", FullyConnectedLayer(features[i], features[i + 1], activation="lrelu",
                                                        lr_multiplier=lr_multiplier))

    def forward(self, z: torch.Tensor, c: torch.Tensor, *, truncation_psi: float = 1.0,
                truncation_cutoff: int | None = None) -> torch.Tensor:
        if z.ndim != 2 or z.shape[1] != self.z_dim:
            raise ValueError(f"mapping: z must be [B, {self.z_dim}], got {list(z.shape)}")
        # 1. inputs
        x = normalize_2nd_moment(z.to(torch.float32))
        if self.c_dim > 0:
            if c.ndim != 2 or c.shape != (z.shape[0], self.c_dim):
                raise ValueError(f"mapping: c must be [{z.shape[0]}, {self.c_dim}], got {list(c.shape)}")
            y = normalize_2nd_moment(self.embed(c.to(torch.float32)))
            x = torch.cat([x, y], dim=1)
        # 2. MLP
        for i in range(self.num_layers):
            x = getattr(self, f"fc{i}")(x)
        # 3. broadcast and truncate
        x = x.unsqueeze(1).repeat(1, self.num_ws, 1)
        if truncation_psi != 1:
            if truncation_cutoff is None:
                x = self.w_avg.lerp(x, truncation_psi)
            else:
                x = x.clone()
                x[:, :truncation_cutoff] = self.w_avg.lerp(x[:, :truncation_cutoff], truncation_psi)
        return x
