"""EG3D super-resolution ``SuperresolutionHybrid8XDC`` (``eg3d:eg3d/training/superresolution.py``).

(rgb [B, 3, r, r], features [B, 32, r, r]) with r = neural rendering resolution -> image [B, 3, 4S, 4S]:
inputs are resized to S = ``input_resolution`` (bilinear, antialiased) when r != S, then two 2x
'skip' synthesis blocks, all styled by the last w (ws[:, -1]). The official blocks run in float16 on
CUDA with activations clamped to +-256; ``use_fp16`` reproduces that (default float32; the clamp
stays on either way). Keys: ``block0.*``, ``block1.*`` (noise buffers exist but noise is off).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from vidtriplane.models.eg3d.layers import SynthesisBlock


class SuperResolution(nn.Module):
    """Two upsampling blocks: in_channels -> channels[0] @ 2S -> channels[1] @ 4S."""

    def __init__(
        self,
        *,
        in_channels: int = 32,
        img_resolution: int = 512,  # output resolution (4x the input resolution)
        channels: tuple[int, int] = (256, 128),
        w_dim: int = 512,
        conv_clamp: float | None = 256.0,
        antialias: bool = True,
        use_fp16: bool = False,
    ) -> None:
        super().__init__()
        if img_resolution % 4:
            raise ValueError(f"img_resolution must be a multiple of 4, got {img_resolution}")
        self.input_resolution = img_resolution // 4
        self.antialias = antialias
        self.block0 = SynthesisBlock(in_channels, channels[0], w_dim=w_dim, resolution=img_resolution // 2,
                                     img_channels=3, conv_clamp=conv_clamp, use_fp16=use_fp16)
        self.block1 = SynthesisBlock(channels[0], channels[1], w_dim=w_dim, resolution=img_resolution,
                                     img_channels=3, conv_clamp=conv_clamp, use_fp16=use_fp16)

    def forward(self, rgb: torch.Tensor, x: torch.Tensor, ws: torch.Tensor, *, noise_mode: str = "none") -> torch.Tensor:
        # 1. every layer uses the last w
        ws = ws[:, -1:, :].repeat(1, 3, 1)
        # 2. bring the neural rendering to the expected input size
        size = (self.input_resolution, self.input_resolution)
        if x.shape[-1] != self.input_resolution:
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=self.antialias)
            rgb = F.interpolate(rgb, size=size, mode="bilinear", align_corners=False, antialias=self.antialias)
        # 3. two 2x blocks
        x, rgb = self.block0(x, rgb, ws, noise_mode=noise_mode)
        _, rgb = self.block1(x, rgb, ws, noise_mode=noise_mode)
        return rgb
