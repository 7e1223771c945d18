"""StyleGAN2 layers with EG3D's parameter names (``eg3d:eg3d/training/networks_stylegan2.py``).

Equalised learning rate: every weight is stored unscaled (N(0, 1) at init) and scaled at run time,
so official checkpoints load as they are.

* :class:`FullyConnectedLayer` - ``act(x @ (W * lr/sqrt(in))^T + b * lr)``.
* :class:`SynthesisLayer` - modulated 3x3 conv (optionally 2x up) + noise + bias + lrelu.
* :class:`ToRGBLayer` - modulated 1x1 conv without demodulation + bias.
* :class:`SynthesisBlock` - [const] -> conv0 (up) -> conv1 -> torgb, with the skip image upsampled.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from vidtriplane.models.eg3d.ops import activation_gain, bias_act, modulated_conv2d, setup_filter, upsample2d

NOISE_MODES = ("random", "const", "none")


class FullyConnectedLayer(nn.Module):
    """Equalised-lr linear layer: ``weight`` [out, in], ``bias`` [out]."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        *,
        bias: bool = True,
        activation: str = "linear",  # 'linear', 'lrelu', ...
        lr_multiplier: float = 1.0,  # run-time gain on weight and bias
        bias_init: float = 0.0,  # initial bias value (1 for style affines)
    ) -> None:
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        self.activation = activation
        self.weight = nn.Parameter(torch.randn(out_features, in_features) / lr_multiplier)
        self.bias = nn.Parameter(torch.full([out_features], float(bias_init))) if bias else None
        self.weight_gain = lr_multiplier / math.sqrt(in_features)
        self.bias_gain = lr_multiplier

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight.to(x.dtype) * self.weight_gain
        b = self.bias
        if b is not None:
            b = b.to(x.dtype)
            if self.bias_gain != 1:
                b = b * self.bias_gain
        if self.activation == "linear" and b is not None:
            return torch.addmm(b.unsqueeze(0), x, w.t())
        return bias_act(x.matmul(w.t()), b, act=self.activation)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, activation={self.activation}"


class SynthesisLayer(nn.Module):
    """Modulated convolution layer. Keys: weight, noise_strength, bias, resample_filter, noise_const, affine.*"""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        *,
        w_dim: int,
        resolution: int,  # output resolution
        kernel_size: int = 3,
        up: int = 1,  # 1 or 2
        conv_clamp: float | None = None,  # clamp activations to +-conv_clamp
        use_noise: bool = True,
    ) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.resolution = resolution
        self.up = up
        self.use_noise = use_noise
        self.conv_clamp = conv_clamp
        self.padding = kernel_size // 2
        self.act_gain = activation_gain("lrelu")
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel_size, kernel_size))
        if use_noise:
            self.noise_strength = nn.Parameter(torch.zeros([]))
        self.bias = nn.Parameter(torch.zeros(out_channels))
        self.register_buffer("resample_filter", setup_filter())
        if use_noise:
            self.register_buffer("noise_const", torch.randn(resolution, resolution))
        self.affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1.0)

    def forward(self, x: torch.Tensor, w: torch.Tensor, *, noise_mode: str = "random", fused: bool = True,
                gain: float = 1.0) -> torch.Tensor:
        if noise_mode not in NOISE_MODES:
            raise ValueError(f"noise_mode must be one of {NOISE_MODES}, got {noise_mode!r}")
        # 1. styles from w
        styles = self.affine(w)
        # 2. noise: fresh per sample, the stored constant, or none
        noise = None
        if self.use_noise and noise_mode == "random":
            noise = torch.randn(x.shape[0], 1, self.resolution, self.resolution, device=x.device) * self.noise_strength
        elif self.use_noise and noise_mode == "const":
            noise = self.noise_const * self.noise_strength
        # 3. modulated conv (flip_weight only matters for the transposed path; official: up == 1)
        x = modulated_conv2d(x, self.weight, styles, noise=noise, up=self.up, padding=self.padding,
                             resample_filter=self.resample_filter, flip_weight=(self.up == 1), fused=fused)
        # 4. bias, lrelu * sqrt(2), clamp
        clamp = self.conv_clamp * gain if self.conv_clamp is not None else None
        return bias_act(x, self.bias.to(x.dtype), act="lrelu", gain=self.act_gain * gain, clamp=clamp, inplace=True)

    def extra_repr(self) -> str:
        return f"{self.in_channels}->{self.out_channels}, resolution={self.resolution}, up={self.up}"


class ToRGBLayer(nn.Module):
    """1x1 modulated conv without demodulation. Keys: weight, bias, affine.*"""

    def __init__(self, in_channels: int, out_channels: int, *, w_dim: int, conv_clamp: float | None = None) -> None:
        super().__init__()
        self.conv_clamp = conv_clamp
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, 1, 1))
        self.bias = nn.Parameter(torch.zeros(out_channels))
        self.affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1.0)
        self.weight_gain = 1 / math.sqrt(in_channels)

    def forward(self, x: torch.Tensor, w: torch.Tensor, *, fused: bool = True) -> torch.Tensor:
        styles = self.affine(w) * self.weight_gain
        x = modulated_conv2d(x, self.weight, styles, demodulate=False, fused=fused)
        return bias_act(x, self.bias.to(x.dtype), clamp=self.conv_clamp, inplace=True)


class SynthesisBlock(nn.Module):
    """One resolution of a 'skip' StyleGAN2 synthesis network.

    ``in_channels == 0`` makes the first block (learned 4x4 ``const``, no conv0). Consumes
    ``num_conv + 1`` ws: conv0 (if any), conv1, torgb.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        *,
        w_dim: int,
        resolution: int,
        img_channels: int,
        conv_clamp: float | None = None,
        use_fp16: bool = False,  # run in float16 (only ever on CUDA, like the official code)
    ) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.resolution = resolution
        self.img_channels = img_channels
        self.use_fp16 = use_fp16
        if in_channels == 0:
            self.const = nn.Parameter(torch.randn(out_channels, resolution, resolution))
        self.register_buffer("resample_filter", setup_filter())
        if in_channels != 0:
            self.conv0 = SynthesisLayer(in_channels, out_channels, w_dim=w_dim, resolution=resolution, up=2,
                                        conv_clamp=conv_clamp)
        self.conv1 = SynthesisLayer(out_channels, out_channels, w_dim=w_dim, resolution=resolution,
                                    conv_clamp=conv_clamp)
        self.torgb = ToRGBLayer(out_channels, img_channels, w_dim=w_dim, conv_clamp=conv_clamp)
        self.num_conv = 1 if in_channels == 0 else 2

    def forward(self, x: torch.Tensor | None, img: torch.Tensor | None, ws: torch.Tensor, *,
                noise_mode: str = "random") -> tuple[torch.Tensor, torch.Tensor]:
        """``ws`` [B, num_conv + 1, w_dim]; returns (features, float32 image)."""
        if ws.shape[1] != self.num_conv + 1:
            raise ValueError(f"block {self.resolution}: expected {self.num_conv + 1} ws, got {ws.shape[1]}")
        w_iter = iter(ws.unbind(dim=1))
        dtype = torch.float16 if (self.use_fp16 and ws.device.type == "cuda") else torch.float32
        # Official fused_modconv_default = 'inference_only': one grouped conv with per-sample weights.
        # On CUDA, cuDNN runs grouped (transposed) convs with per-sample weights as slow GEMV kernels
        # (54% of the GPU time at batch 16, measured on an H100), so there we take the numerically
        # equivalent unfused path: modulate activations, shared-weight conv, demodulate.
        fused = not self.training and ws.device.type != "cuda"
        # 1. input
        if self.in_channels == 0:
            x = self.const.to(dtype).unsqueeze(0).repeat(ws.shape[0], 1, 1, 1)
        else:
            x = x.to(dtype)
        # 2. convolutions
        if self.in_channels != 0:
            x = self.conv0(x, next(w_iter), noise_mode=noise_mode, fused=fused)
        x = self.conv1(x, next(w_iter), noise_mode=noise_mode, fused=fused)
        # 3. skip image: upsample the previous image and add this block's toRGB
        if img is not None:
            img = upsample2d(img, self.resample_filter)
        y = self.torgb(x, next(w_iter), fused=fused).to(torch.float32)
        img = img + y if img is not None else y
        return x, img

    def extra_repr(self) -> str:
        return f"resolution={self.resolution}, in_channels={self.in_channels}, fp16={self.use_fp16}"
