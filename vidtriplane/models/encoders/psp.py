"""pSp GradualStyleEncoder on IR-SE-50: image -> W+ codes (``tpn:models/encoders/psp_encoders.py``).

Three feature levels of the trunk (c1 64x64, c2 32x32, c3 16x16 for a 256 input) are merged top-down
like a feature pyramid; each of the ``n_styles`` W+ rows comes from its own GradualStyleBlock (a chain of
stride-2 convs down to 1x1, then an equalized-lr linear layer). Coarse rows read the 16x16 level, middle
rows 32x32, fine rows 64x64. The output is *relative* to the average latent (the caller adds it).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from vidtriplane.models.encoders.irse import make_body, make_input_layer, run_body, stage_channels

# Body units whose outputs feed the pyramid: c1 (stage 2 end), c2 (stage 3 end), c3 (stage 4 end).
PSP_TAPS = (6, 20, 23)


@dataclass(frozen=True)
class PSPConfig:
    """Shape of the pSp encoder."""

    in_channels: int = 3
    """Image channels."""
    width: int = 64
    """IR-SE-50 base width (64 in the official model; smaller for tiny test models)."""
    style_dim: int = 512
    """Size of one W+ row (the generator's w_dim)."""
    n_styles: int = 14
    """Number of W+ rows (the generator's num_ws)."""
    coarse_ind: int = 3
    """Rows [0, coarse_ind) read the 16x16 level."""
    middle_ind: int = 7
    """Rows [coarse_ind, middle_ind) read 32x32; the rest read 64x64."""
    input_size: int = 256
    """Input resolution; sets how many stride-2 convs each style block has."""

    @classmethod
    def tiny(cls, *, style_dim: int = 512, n_styles: int = 14, input_size: int = 256) -> "PSPConfig":
        """A narrow encoder (trunk width 8) with the official key names, for fast plumbing tests."""
        return cls(width=8, style_dim=style_dim, n_styles=n_styles, input_size=input_size)


class EqualLinear(nn.Module):
    """Linear layer with equalized learning rate: weight stored unscaled, scaled by lr_mul/sqrt(in)."""

    def __init__(self, in_dim: int, out_dim: int, *, lr_mul: float = 1.0) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_dim, in_dim) / lr_mul)
        self.bias = nn.Parameter(torch.zeros(out_dim))
        self.scale = (1 / math.sqrt(in_dim)) * lr_mul
        self.lr_mul = lr_mul

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight * self.scale, bias=self.bias * self.lr_mul)


class GradualStyleBlock(nn.Module):
    """Stride-2 conv + LeakyReLU(0.01) repeated log2(spatial) times down to 1x1, then EqualLinear.

    Officially ``in_channels`` = ``out_channels`` = 512; tiny models keep the convs at the trunk's width
    and let the linear layer map to the (possibly wider) style size.
    """

    def __init__(self, in_channels: int, out_channels: int, spatial: int) -> None:
        super().__init__()
        num_pools = int(math.log2(spatial))
        if 2 ** num_pools != spatial or num_pools < 1:
            raise ValueError(f"style block spatial size must be a power of two >= 2, got {spatial}")
        layers: list[nn.Module] = []
        for _ in range(num_pools):
            layers += [nn.Conv2d(in_channels, in_channels, kernel_size=3, stride=2, padding=1), nn.LeakyReLU(0.01)]
        self.hidden = in_channels
        self.convs = nn.Sequential(*layers)  # keys convs.0, convs.2, ...
        self.linear = EqualLinear(in_channels, out_channels, lr_mul=1.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.convs(x).reshape(-1, self.hidden)
        return self.linear(x)


def upsample_add(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Bilinear-resize ``x`` to ``y``'s size (align_corners=True) and add ``y``."""
    return F.interpolate(x, size=y.shape[-2:], mode="bilinear", align_corners=True) + y


class GradualStyleEncoder(nn.Module):
    """pSp encoder: [B, 3, 256, 256] in [-1, 1] -> W+ offsets [B, n_styles, style_dim]."""

    def __init__(self, config: PSPConfig = PSPConfig()) -> None:
        super().__init__()
        self.config = config
        _, ch1, ch2, ch3 = stage_channels(config.width)
        self.input_layer = make_input_layer(config.in_channels, config.width)
        self.body = make_body(config.width)
        s3 = config.input_size // 16  # 16 for 256 input
        styles = []
        for i in range(config.n_styles):
            spatial = s3 if i < config.coarse_ind else (2 * s3 if i < config.middle_ind else 4 * s3)
            styles.append(GradualStyleBlock(ch3, config.style_dim, spatial))
        self.styles = nn.ModuleList(styles)
        self.latlayer1 = nn.Conv2d(ch2, ch3, kernel_size=1, stride=1, padding=0)
        self.latlayer2 = nn.Conv2d(ch1, ch3, kernel_size=1, stride=1, padding=0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        cfg = self.config
        # 1. Trunk with three taps.
        c1, c2, c3 = run_body(self.body, self.input_layer(x), PSP_TAPS)
        # 2. Coarse rows from the 16x16 level.
        latents = [self.styles[j](c3) for j in range(cfg.coarse_ind)]
        # 3. Middle rows from the merged 32x32 level.
        p2 = upsample_add(c3, self.latlayer1(c2))
        latents += [self.styles[j](p2) for j in range(cfg.coarse_ind, cfg.middle_ind)]
        # 4. Fine rows from the merged 64x64 level.
        p1 = upsample_add(p2, self.latlayer2(c1))
        latents += [self.styles[j](p1) for j in range(cfg.middle_ind, cfg.n_styles)]
        return torch.stack(latents, dim=1)
