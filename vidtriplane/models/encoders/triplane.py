"""Tri-plane encoders of TriPlaneNet v1 and v2 (``tpn:models/encoders/triplane_encoders.py``, ``triplane_encoders_v2.py``).

Both are a U-Net on the IR-SE-50 trunk ("RUNet"): skips c0..c3 from body units 2, 6, 20, 21, the bottom
from unit 23, four ``Up`` blocks (upsample the low-resolution map, concatenate the skip FIRST, then
BatchNorm -> Conv -> PReLU -> Conv -> PReLU -> PReLU), then a head at 256x256.

* v1 (``TriPlaneEncoder``): 6-channel input ``[y, x - y]``; pixel-shuffle decoder; ``final_head``
  outputs tri-plane **offsets** [B, 96, 256, 256] that are added to the generator's backbone planes.
* v2 (``TriPlaneEncoderV2``): 9-channel input ``[y, x - y, x_mirror - y_mirror]`` plus the backbone
  planes; ``final_head_two`` reads ``cat[planes, features]`` and the output is the **refined planes**
  ``planes + head(...)``. Two decoder variants: ``"pixelshuffle"`` and ``"upsample"`` (nearest x2).

Channel counts scale with ``width`` (64 officially) so tiny test models keep the official key names.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from vidtriplane.models.encoders.irse import make_body, make_input_layer, run_body

# Body units feeding the decoder: c0 (128x128), c1 (64x64), c2 (32x32), c3 (16x16), bottom (16x16).
TRIPLANE_TAPS = (2, 6, 20, 21, 23)

Variant = Literal["pixelshuffle", "upsample"]


@dataclass(frozen=True)
class TriPlaneEncoderConfig:
    """Shape of a tri-plane encoder (v1 or v2)."""

    in_channels: int = 6
    """Input channels: 6 for v1 ``[y, x - y]``, 9 for v2 (adds ``x_mirror - y_mirror``)."""
    width: int = 64
    """IR-SE-50 base width (64 officially); must be a multiple of 8."""
    plane_channels: int = 96
    """Channels of the tri-plane tensor (3 planes x 32 features in EG3D)."""
    variant: Variant = "pixelshuffle"
    """Decoder upsampling (v2 only; v1 always uses pixel shuffle)."""

    @classmethod
    def v2(cls, variant: Variant = "pixelshuffle", **kwargs) -> "TriPlaneEncoderConfig":
        """The official v2 encoder (9 input channels) with the given decoder variant."""
        return cls(in_channels=9, variant=variant, **kwargs)

    @classmethod
    def tiny(cls, *, in_channels: int = 6, plane_channels: int = 96, variant: Variant = "pixelshuffle"):
        """A narrow encoder with the official key names, for fast plumbing tests."""
        return cls(in_channels=in_channels, width=8, plane_channels=plane_channels, variant=variant)


class DoubleConv(nn.Module):
    """``double_conv``: BN(in) -> Conv3x3(in, out) -> PReLU -> Conv3x3(out, out) -> PReLU -> PReLU."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.double_conv = nn.Sequential(
            nn.BatchNorm2d(in_channels),
            nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1),
            nn.PReLU(out_channels),
            nn.Conv2d(out_channels, out_channels, kernel_size=3, padding=1),
            nn.PReLU(out_channels),
            nn.PReLU(out_channels),  # two PReLUs in a row, as in the official model
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.double_conv(x)


class Up(nn.Module):
    """Upsample the low-resolution map (pixel shuffle or nearest), concat ``[skip, up]``, DoubleConv."""

    def __init__(self, in_channels: int, out_channels: int, *, factor: int = 2, pixelshuffle: bool = True) -> None:
        super().__init__()
        self.up: nn.Module = nn.PixelShuffle(factor) if pixelshuffle else nn.Upsample(scale_factor=factor)
        self.conv = DoubleConv(in_channels, out_channels)

    def forward(self, low: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.conv(torch.cat([skip, self.up(low)], dim=1))


def _head(in_channels: int, planes: int) -> nn.Sequential:
    """Conv3x3 -> PReLU -> Conv3x3 -> PReLU -> Conv1x1, no output activation."""
    return nn.Sequential(
        nn.Conv2d(in_channels, planes, kernel_size=3, padding=1),
        nn.PReLU(planes),
        nn.Conv2d(planes, planes, kernel_size=3, padding=1),
        nn.PReLU(planes),
        nn.Conv2d(planes, planes, kernel_size=1),
    )


def _decoder_blocks(width: int, pixelshuffle: bool) -> tuple[list[Up], int]:
    """up1..up4 for a trunk of base ``width``; returns them and the channels of up4's output."""
    w = width
    if w % 8:
        raise ValueError(f"tri-plane encoder width must be a multiple of 8, got {w}")
    if pixelshuffle:
        # (in, out) for width 64: (1024, 512), (384, 384), (224, 256), (128, 96)
        ups = [
            Up(16 * w, 8 * w, factor=1),
            Up(4 * w + 2 * w, 6 * w),
            Up(2 * w + 6 * w // 4, 4 * w),
            Up(w + w, 3 * w // 2),
        ]
        return ups, 3 * w // 2
    # nearest upsample, width 64: (1024, 512), (768, 256), (384, 128), (192, 64)
    ups = [
        Up(16 * w, 8 * w, factor=1, pixelshuffle=False),
        Up(4 * w + 8 * w, 4 * w, pixelshuffle=False),
        Up(2 * w + 4 * w, 2 * w, pixelshuffle=False),
        Up(w + 2 * w, w, pixelshuffle=False),
    ]
    return ups, w


class _TriPlaneTrunk(nn.Module):
    """Shared part: input layer, IR-SE-50 body and up1..up4 (fed with the five taps)."""

    def _build_trunk(self, config: TriPlaneEncoderConfig, pixelshuffle: bool) -> int:
        self.input_layer = make_input_layer(config.in_channels, config.width)
        self.body = make_body(config.width)
        (self.up1, self.up2, self.up3, self.up4), up4_out = _decoder_blocks(config.width, pixelshuffle)
        return up4_out

    def _features(self, x: torch.Tensor) -> torch.Tensor:
        """[B, in, 256, 256] -> up4 output at 128x128."""
        c0, c1, c2, c3, bottom = run_body(self.body, self.input_layer(x), TRIPLANE_TAPS)
        y = self.up1(bottom, c3)
        y = self.up2(y, c2)
        y = self.up3(y, c1)
        return self.up4(y, c0)


class TriPlaneEncoder(_TriPlaneTrunk):
    """TriPlaneNet v1 second branch: ``[y, x - y]`` [B, 6, 256, 256] -> offsets [B, 96, 256, 256]."""

    def __init__(self, config: TriPlaneEncoderConfig = TriPlaneEncoderConfig()) -> None:
        super().__init__()
        self.config = config
        up4_out = self._build_trunk(config, pixelshuffle=True)
        self.head = nn.PixelShuffle(2)
        self.final_head = _head(up4_out // 4, config.plane_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # 1. U-Net features at 128x128; 2. pixel shuffle to 256x256; 3. offsets head.
        return self.final_head(self.head(self._features(x)))


class TriPlaneEncoderV2(_TriPlaneTrunk):
    """TriPlaneNet v2 encoder: (input [B, 9, 256, 256], planes [B, 96, 256, 256]) -> refined planes."""

    def __init__(self, config: TriPlaneEncoderConfig = TriPlaneEncoderConfig.v2()) -> None:
        super().__init__()
        self.config = config
        pixelshuffle = config.variant == "pixelshuffle"
        if config.variant not in ("pixelshuffle", "upsample"):
            raise ValueError(f"variant must be 'pixelshuffle' or 'upsample', got {config.variant!r}")
        up4_out = self._build_trunk(config, pixelshuffle=pixelshuffle)
        self.up5: nn.Module = nn.PixelShuffle(2) if pixelshuffle else nn.Upsample(scale_factor=2)
        feat = up4_out // 4 if pixelshuffle else up4_out
        self.final_head_two = _head(config.plane_channels + feat, config.plane_channels)

    def forward(self, x: torch.Tensor, planes: torch.Tensor) -> torch.Tensor:
        # 1. U-Net features, upsampled to 256x256.
        feat = self.up5(self._features(x))
        # 2. Residual refinement of the given planes: planes first, then the features.
        return planes + self.final_head_two(torch.cat([planes, feat], dim=1))
