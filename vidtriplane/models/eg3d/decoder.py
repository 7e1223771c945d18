"""EG3D's tri-plane feature decoder ``OSGDecoder`` (``eg3d:eg3d/training/triplane.py``).

Mean over the three planes -> FC(32 -> 64) -> softplus -> FC(64 -> 1 + 32).
Output 0 is the raw density; outputs 1..32 go through the MipNeRF-widened sigmoid
``sigmoid(x) * (1 + 2e-3) - 1e-3`` (3 colour + 29 feature channels).
Keys: ``net.0.{weight,bias}``, ``net.2.{weight,bias}`` (``net.1`` is the parameterless softplus).
"""
from __future__ import annotations

import torch
from torch import nn

from vidtriplane.models.eg3d.layers import FullyConnectedLayer


class OSGDecoder(nn.Module):
    """[B, n_planes, M, C] plane features -> (rgb [B, M, out_features], sigma [B, M, 1])."""

    def __init__(self, in_features: int = 32, *, hidden: int = 64, out_features: int = 32,
                 lr_multiplier: float = 1.0) -> None:
        super().__init__()
        self.net = nn.Sequential(
            FullyConnectedLayer(in_features, hidden, lr_multiplier=lr_multiplier),
            nn.Softplus(),
            FullyConnectedLayer(hidden, 1 + out_features, lr_multiplier=lr_multiplier),
        )

    def forward(self, plane_features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # 1. aggregate the planes
        x = plane_features.mean(1)
        n, m, c = x.shape
        # 2. MLP on every sample
        x = self.net(x.reshape(n * m, c)).view(n, m, -1)
        # 3. widened sigmoid for colours/features, raw density
        rgb = torch.sigmoid(x[..., 1:]) * (1 + 2 * 0.001) - 0.001
        sigma = x[..., 0:1]
        return rgb, sigma
