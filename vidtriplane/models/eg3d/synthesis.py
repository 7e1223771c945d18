"""The StyleGAN2 backbone that generates the tri-planes (``eg3d:eg3d/training/networks_stylegan2.py``: ``SynthesisNetwork``, ``SynthesisBlock``).

``SynthesisNetwork``: blocks b4 ... b{resolution} ('skip' architecture), channels
``min(channel_base // res, channel_max)``; block k > 0 reads ws[2k-1 : 2k+2] (neighbouring blocks share
the boundary w). ``Backbone`` holds ``synthesis`` then ``mapping`` (the official key order).
"""
from __future__ import annotations

import torch
from torch import nn

from vidtriplane.models.eg3d.layers import SynthesisBlock
from vidtriplane.models.eg3d.mapping import MappingNetwork


def block_resolutions(img_resolution: int) -> list[int]:
    """[4, 8, ..., img_resolution]."""
    if img_resolution < 4 or img_resolution & (img_resolution - 1):
        raise ValueError(f"resolution must be a power of two >= 4, got {img_resolution}")
    return [2 ** i for i in range(2, img_resolution.bit_length())]


def synthesis_num_ws(img_resolution: int) -> int:
    """Number of ws the synthesis network reads: 2 per block minus 1, plus the final toRGB (14 for 256)."""
    return 2 * len(block_resolutions(img_resolution))


class SynthesisNetwork(nn.Module):
    """ws [B, num_ws, w_dim] -> image [B, img_channels, R, R] (float32)."""

    def __init__(
        self,
        *,
        w_dim: int,
        img_resolution: int,
        img_channels: int,
        channel_base: int = 32768,
        channel_max: int = 512,
        conv_clamp: float | None = None,
    ) -> None:
        super().__init__()
        self.w_dim = w_dim
        self.img_resolution = img_resolution
        self.img_channels = img_channels
        self.resolutions = block_resolutions(img_resolution)
        channels = {res: min(channel_base // res, channel_max) for res in self.resolutions}
        for res in self.resolutions:
            in_channels = channels[res // 2] if res > 4 else 0
            block = SynthesisBlock(in_channels, channels[res], w_dim=w_dim, resolution=res,
                                   img_channels=img_channels, conv_clamp=conv_clamp)
            setattr(self, f"b{res}", block)
        self.num_ws = synthesis_num_ws(img_resolution)

    def forward(self, ws: torch.Tensor, *, noise_mode: str = "random") -> torch.Tensor:
        if ws.ndim != 3 or ws.shape[1:] != (self.num_ws, self.w_dim):
            raise ValueError(f"synthesis: ws must be [B, {self.num_ws}, {self.w_dim}], got {list(ws.shape)}")
        ws = ws.to(torch.float32)
        x = img = None
        w_idx = 0
        for res in self.resolutions:
            block = getattr(self, f"b{res}")
            x, img = block(x, img, ws.narrow(1, w_idx, block.num_conv + 1), noise_mode=noise_mode)
            w_idx += block.num_conv
        return img


class Backbone(nn.Module):
    """Container with the official names: ``synthesis`` (registered first) and ``mapping``."""

    def __init__(self, *, z_dim: int, c_dim: int, w_dim: int, img_resolution: int, img_channels: int,
                 channel_base: int, channel_max: int, mapping_layers: int, mapping_lr_multiplier: float) -> None:
        super().__init__()
        self.synthesis = SynthesisNetwork(w_dim=w_dim, img_resolution=img_resolution, img_channels=img_channels,
                                          channel_base=channel_base, channel_max=channel_max)
        self.mapping = MappingNetwork(z_dim=z_dim, c_dim=c_dim, w_dim=w_dim, num_ws=self.synthesis.num_ws,
                                      num_layers=mapping_layers, lr_multiplier=mapping_lr_multiplier)
