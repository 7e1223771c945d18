"""IR-SE-50: the ResNet-like trunk shared by the pSp and tri-plane encoders (``tpn:models/encoders/helpers.py``).

The same units build the face-recognition backbones of the ID loss and metric
(:mod:`vidtriplane.models.arcface`): IR-SE-50 (``STAGES_50``, with SE) and IR-101 (``STAGES_100``,
plain IR units without SE, ``tpn:models/encoders/helpers.py: get_blocks(100)``).

Module and parameter names follow the official TriPlaneNet checkpoint (``input_layer.*``, ``body.N.*``,
``res_layer``, ``shortcut_layer``, SE ``fc1``/``fc2``) so the official ``state_dict`` loads strictly.

Layout for a 256x256 input (``width`` = 64):

| body units | (in, out, stride) | output |
|---|---|---|
| 0-2   | (64, 64, 2), (64, 64, 1) x2     | 128x128x64  |
| 3-6   | (64, 128, 2), (128, 128, 1) x3  | 64x64x128   |
| 7-20  | (128, 256, 2), (256, 256, 1) x13| 32x32x256   |
| 21-23 | (256, 512, 2), (512, 512, 1) x2 | 16x16x512   |

``width`` scales every channel count (tiny test models); the key names never change.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

# (number of units, channel multiple of ``width``) per stage of the 50-layer variant.
STAGES_50: tuple[tuple[int, int], ...] = ((3, 1), (4, 2), (14, 4), (3, 8))
# The same for the 100-layer variant (CurricularFace IR-101).
STAGES_100: tuple[tuple[int, int], ...] = ((3, 1), (13, 2), (30, 4), (3, 8))
SE_REDUCTION = 16


def stage_channels(width: int) -> tuple[int, int, int, int]:
    """Output channels of the four stages: (64, 128, 256, 512) for ``width`` = 64."""
    return tuple(width * mult for _, mult in STAGES_50)  # type: ignore[return-value]


class SEModule(nn.Module):
    """Squeeze-and-excitation gate: avg-pool -> fc1 -> ReLU -> fc2 -> sigmoid -> scale the input."""

    def __init__(self, channels: int, *, reduction: int = SE_REDUCTION) -> None:
        super().__init__()
        hidden = max(1, channels // reduction)
        self.avg_pool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(channels, hidden, kernel_size=1, padding=0, bias=False)
        self.relu = nn.ReLU(inplace=True)
        self.fc2 = nn.Conv2d(hidden, channels, kernel_size=1, padding=0, bias=False)
        self.sigmoid = nn.Sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate = self.sigmoid(self.fc2(self.relu(self.fc1(self.avg_pool(x)))))
        return x * gate


class BottleneckIRSE(nn.Module):
    """One IR-SE unit: ``shortcut(x) + res_layer(x)`` with no activation after the sum.

    ``se=False`` gives the plain IR unit (``res_layer`` without its index-5 SE gate)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, *, se: bool = True) -> None:
        super().__init__()
        if in_channels == out_channels:
            # A 1x1 max-pool with a stride is pure subsampling (no parameters).
            self.shortcut_layer: nn.Module = nn.MaxPool2d(kernel_size=1, stride=stride)
        else:
            self.shortcut_layer = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, kernel_size=1, stride=stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )
        layers = [
            nn.BatchNorm2d(in_channels),                                                    # 0
            nn.Conv2d(in_channels, out_channels, kernel_size=3, stride=1, padding=1, bias=False),  # 1
            nn.PReLU(out_channels),                                                         # 2
            nn.Conv2d(out_channels, out_channels, kernel_size=3, stride=stride, padding=1, bias=False),  # 3
            nn.BatchNorm2d(out_channels),                                                   # 4
        ]
        if se:
            layers.append(SEModule(out_channels))                                           # 5
        self.res_layer = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.shortcut_layer(x) + self.res_layer(x)


def make_input_layer(in_channels: int, width: int = 64) -> nn.Sequential:
    """``input_layer``: Conv3x3(in -> width, no bias) -> BatchNorm -> PReLU, stride 1."""
    return nn.Sequential(
        nn.Conv2d(in_channels, width, kernel_size=3, stride=1, padding=1, bias=False),
        nn.BatchNorm2d(width),
        nn.PReLU(width),
    )


def make_body(width: int = 64, *, stages: Sequence[tuple[int, int]] = STAGES_50, se: bool = True) -> nn.Sequential:
    """``body``: the IR(-SE) units (24 for the default 50-layer trunk); each stage starts with a stride-2 unit.

    ``stages``: (units, channel multiple of ``width``) per stage; ``se``: squeeze-and-excitation gates."""
    units: list[nn.Module] = []
    in_ch = width
    for count, mult in stages:
        out_ch = width * mult
        units.append(BottleneckIRSE(in_ch, out_ch, 2, se=se))
        units.extend(BottleneckIRSE(out_ch, out_ch, 1, se=se) for _ in range(count - 1))
        in_ch = out_ch
    return nn.Sequential(*units)


def run_body(body: nn.Sequential, x: torch.Tensor, taps: Sequence[int]) -> list[torch.Tensor]:
    """Run every unit of ``body`` and return the outputs of the units listed in ``taps`` (in order)."""
    wanted = {index: slot for slot, index in enumerate(taps)}
    out: list[torch.Tensor | None] = [None] * len(taps)
    for index, unit in enumerate(body):
        x = unit(x)
        if index in wanted:
            out[wanted[index]] = x
    missing = [taps[slot] for slot, t in enumerate(out) if t is None]
    if missing:
        raise ValueError(f"taps {missing} are beyond the {len(body)} units of the body")
    return out  # type: ignore[return-value]
