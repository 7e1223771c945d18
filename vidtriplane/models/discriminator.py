"""StyleGAN2-ADA ``resnet`` discriminator without conditioning (c_dim 0), used by TriPlaneNet v2's GAN loss.

TriPlaneNet v2 (``tpn:training/coach_v2.py``) builds ``Discriminator(c_dim=0, img_resolution=512,
img_channels=3, architecture='resnet', channel_base=32768, channel_max=512, num_fp16_res=4,
conv_clamp=256, mbstd_group_size=None, mbstd_num_channels=1)`` from ``tpn:models/stylegan2/stylegan_ada.py``
and loads ``discriminator.pth`` into it. This is our own compact version with the same parameter
names (``b512 ... b8``: ``fromrgb`` (first block only), ``conv0``, ``conv1`` (2x down), ``skip`` (1x1,
2x down, no bias); ``b4``: ``conv``, ``fc``, ``out``; every conv layer and block keeps its
``resample_filter`` buffer). Equalised learning rate: weights are stored unscaled.

Per block (resnet): ``x = skip(x) * sqrt(.5) + conv1(conv0(x)) * sqrt(.5)``; activations lrelu(0.2)*sqrt(2),
clamped to +-256 (times the gain). Epilogue: minibatch-stddev (group = whole batch when
``mbstd_group_size`` is None) -> conv 3x3 -> fc -> out (one logit). On CUDA the ``num_fp16_res`` highest
resolutions run in float16 like the official code; on the CPU everything is float32.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from vidtriplane.models.eg3d.layers import FullyConnectedLayer
from vidtriplane.models.eg3d.ops import activation_gain, bias_act, setup_filter, upfirdn2d


@dataclass(frozen=True)
class DiscriminatorConfig:
    """Shape of the discriminator (defaults: TriPlaneNet v2's 512 px, c_dim 0)."""

    img_resolution: int = 512
    """Input resolution (a power of two >= 8)."""
    img_channels: int = 3
    channel_base: int = 32768
    """Channels at resolution r: min(channel_base // r, channel_max)."""
    channel_max: int = 512
    num_fp16_res: int = 4
    """The blocks of this many highest resolutions run in float16 on CUDA (never on the CPU)."""
    conv_clamp: float | None = 256.0
    """Clamp of the conv activations (None = off)."""
    mbstd_group_size: int | None = None
    """Minibatch-stddev group size; None = the whole batch."""
    mbstd_num_channels: int = 1
    """Minibatch-stddev feature channels (0 disables the layer)."""

    def __post_init__(self) -> None:
        log2 = int(math.log2(self.img_resolution)) if self.img_resolution > 0 else 0
        if self.img_resolution < 8 or 2 ** log2 != self.img_resolution:
            raise ValueError(f"img_resolution must be a power of two >= 8, got {self.img_resolution}")

    @classmethod
    def tiny(cls, img_resolution: int = 32) -> "DiscriminatorConfig":
        """Few channels (4 at the input, 32 at 4x4) for fast plumbing tests."""
        return cls(img_resolution=img_resolution, channel_base=128, channel_max=32)

    def channels(self, res: int) -> int:
        return min(self.channel_base // res, self.channel_max)


def downsample_conv2d(x: torch.Tensor, w: torch.Tensor, f: torch.Tensor, *, padding: int, down: int = 2) -> torch.Tensor:
    """Convolution (correlation) followed by ``down``-fold FIR decimation, as one padded filter + strided conv.

    ``padding`` is the conv's own padding; the filter adds ``(fw - down + 1) // 2`` before and
    ``(fw - down) // 2`` after (``eg3d:torch_utils/ops/conv2d_resample.py``, down-only paths).
    """
    fh, fw = f.shape
    px0, px1 = padding + (fw - down + 1) // 2, padding + (fw - down) // 2
    py0, py1 = padding + (fh - down + 1) // 2, padding + (fh - down) // 2
    if w.shape[2] == 1 and w.shape[3] == 1:
        # 1x1: decimate first (cheaper), then convolve
        return F.conv2d(upfirdn2d(x, f, down=down, padding=[px0, px1, py0, py1]), w)
    return F.conv2d(upfirdn2d(x, f, padding=[px0, px1, py0, py1]), w, stride=down)


class Conv2dLayer(nn.Module):
    """Equalised-lr conv + bias + activation (+ clamp), optionally 2x down. Keys: weight, [bias], resample_filter."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, *, bias: bool = True,
                 activation: str = "linear", down: int = 1, conv_clamp: float | None = None) -> None:
        super().__init__()
        self.activation = activation
        self.down = down
        self.conv_clamp = conv_clamp
        self.padding = kernel_size // 2
        self.weight_gain = 1 / math.sqrt(in_channels * kernel_size ** 2)
        self.act_gain = activation_gain(activation)
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        self.register_buffer("resample_filter", setup_filter())

    def forward(self, x: torch.Tensor, gain: float = 1.0) -> torch.Tensor:
        w = (self.weight * self.weight_gain).to(x.dtype)
        if self.down > 1:
            x = downsample_conv2d(x, w, self.resample_filter, padding=self.padding, down=self.down)
        else:
            x = F.conv2d(x, w, padding=self.padding)
        b = self.bias.to(x.dtype) if self.bias is not None else None
        clamp = self.conv_clamp * gain if self.conv_clamp is not None else None
        return bias_act(x, b, act=self.activation, gain=self.act_gain * gain, clamp=clamp)


class DiscriminatorBlock(nn.Module):
    """One resolution of the resnet discriminator: [fromrgb] -> conv0 -> conv1 (down) plus a 1x1 skip (down)."""

    def __init__(self, in_channels: int, tmp_channels: int, out_channels: int, *, img_channels: int,
                 conv_clamp: float | None, use_fp16: bool) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.use_fp16 = use_fp16
        self.register_buffer("resample_filter", setup_filter())
        if in_channels == 0:
            self.fromrgb = Conv2dLayer(img_channels, tmp_channels, 1, activation="lrelu", conv_clamp=conv_clamp)
        self.conv0 = Conv2dLayer(tmp_channels, tmp_channels, 3, activation="lrelu", conv_clamp=conv_clamp)
        self.conv1 = Conv2dLayer(tmp_channels, out_channels, 3, activation="lrelu", down=2, conv_clamp=conv_clamp)
        self.skip = Conv2dLayer(tmp_channels, out_channels, 1, bias=False, down=2)

    def forward(self, x: torch.Tensor | None, img: torch.Tensor) -> torch.Tensor:
        dtype = torch.float16 if (self.use_fp16 and img.device.type == "cuda") else torch.float32
        # 1. input: features from the previous block, or the image through fromrgb
        x = self.fromrgb(img.to(dtype)) if self.in_channels == 0 else x.to(dtype)
        # 2. residual: skip and main path, each scaled by sqrt(0.5)
        y = self.skip(x, gain=math.sqrt(0.5))
        x = self.conv1(self.conv0(x), gain=math.sqrt(0.5))
        return y + x


def minibatch_stddev(x: torch.Tensor, group_size: int | None, num_channels: int = 1) -> torch.Tensor:
    """Append ``num_channels`` feature maps holding the mean stddev over groups of samples."""
    n, c, h, w = x.shape
    g = min(group_size, n) if group_size is not None else n
    y = x.reshape(g, -1, num_channels, c // num_channels, h, w)
    y = (y - y.mean(dim=0)).square().mean(dim=0)        # variance over each group
    y = (y + 1e-8).sqrt().mean(dim=[2, 3, 4])           # [n/g, F] mean stddev
    y = y.reshape(-1, num_channels, 1, 1).repeat(g, 1, h, w)
    return torch.cat([x, y], dim=1)


class DiscriminatorEpilogue(nn.Module):
    """4x4 head: minibatch stddev -> conv 3x3 -> fc -> out (one logit per image)."""

    def __init__(self, in_channels: int, *, mbstd_group_size: int | None, mbstd_num_channels: int,
                 conv_clamp: float | None) -> None:
        super().__init__()
        self.mbstd_group_size = mbstd_group_size
        self.mbstd_num_channels = mbstd_num_channels
        self.conv = Conv2dLayer(in_channels + mbstd_num_channels, in_channels, 3, activation="lrelu",
                                conv_clamp=conv_clamp)
        self.fc = FullyConnectedLayer(in_channels * 4 * 4, in_channels, activation="lrelu")
        self.out = FullyConnectedLayer(in_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(torch.float32)
        if self.mbstd_num_channels > 0:
            x = minibatch_stddev(x, self.mbstd_group_size, self.mbstd_num_channels)
        return self.out(self.fc(self.conv(x).flatten(1)))


class Discriminator(nn.Module):
    """Images [B, C, R, R] in [-1, 1] -> real/fake logits [B, 1]."""

    def __init__(self, config: DiscriminatorConfig = DiscriminatorConfig()) -> None:
        super().__init__()
        self.config = config
        log2 = int(math.log2(config.img_resolution))
        self.block_resolutions = [2 ** i for i in range(log2, 2, -1)]
        fp16_resolution = max(2 ** (log2 + 1 - config.num_fp16_res), 8)
        for res in self.block_resolutions:
            block = DiscriminatorBlock(
                config.channels(res) if res < config.img_resolution else 0, config.channels(res),
                config.channels(res // 2), img_channels=config.img_channels, conv_clamp=config.conv_clamp,
                use_fp16=res >= fp16_resolution)
            setattr(self, f"b{res}", block)
        self.b4 = DiscriminatorEpilogue(config.channels(4), mbstd_group_size=config.mbstd_group_size,
                                        mbstd_num_channels=config.mbstd_num_channels, conv_clamp=config.conv_clamp)

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        cfg = self.config
        expected = (cfg.img_channels, cfg.img_resolution, cfg.img_resolution)
        if img.ndim != 4 or tuple(img.shape[1:]) != expected:
            raise ValueError(f"discriminator input must be [B, {', '.join(map(str, expected))}], got {list(img.shape)}")
        # 1. blocks from the input resolution down to 8x8 (-> 4x4 features)
        x = None
        for res in self.block_resolutions:
            x = getattr(self, f"b{res}")(x, img)
        # 2. epilogue
        return self.b4(x)


__all__ = ["Conv2dLayer", "Discriminator", "DiscriminatorConfig", "downsample_conv2d", "minibatch_stddev"]
