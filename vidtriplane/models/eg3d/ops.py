"""Pure-PyTorch reference versions of the StyleGAN2/EG3D low-level ops (``eg3d:eg3d/torch_utils/ops/``: ``upfirdn2d``, ``bias_act``, ``conv2d_resample``).

The official code ships CUDA plugins (``upfirdn2d``, ``bias_act``) with slow reference fallbacks; these are
our own implementations of what those references compute, so CPU and CUDA take the same path:

* :func:`setup_filter` - a normalised 2D FIR filter (outer product of a short 1D filter).
* :func:`upfirdn2d` - upsample by zero insertion, pad/crop, FIR-filter, downsample.
* :func:`upsample2d` - 2x FIR upsampling that keeps the image aligned (the "skip" image path).
* :func:`bias_act` - bias + activation + gain + optional clamp.
* :func:`conv2d_resample` - a convolution, optionally with 2x FIR upsampling (transposed conv + filter).
* :func:`modulated_conv2d` - StyleGAN2 weight modulation/demodulation, fused (grouped conv) or not.

All tensors are NCHW. Filters are float32 ``[fh, fw]`` tensors.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F

# activation name -> (function of (x, alpha), default alpha, default gain)
_ACTIVATIONS = {
    "linear": (lambda x, a: x, 0.0, 1.0),
    "relu": (lambda x, a: F.relu(x), 0.0, math.sqrt(2)),
    "lrelu": (lambda x, a: F.leaky_relu(x, a), 0.2, math.sqrt(2)),
    "tanh": (lambda x, a: torch.tanh(x), 0.0, 1.0),
    "sigmoid": (lambda x, a: torch.sigmoid(x), 0.0, 1.0),
    "softplus": (lambda x, a: F.softplus(x), 0.0, 1.0),
}


def activation_gain(act: str) -> float:
    """Default output gain of an activation (sqrt(2) for relu/lrelu, 1 otherwise)."""
    return _ACTIVATIONS[act][2]


def setup_filter(taps: Sequence[float] = (1, 3, 3, 1)) -> torch.Tensor:
    """2D FIR filter ``outer(taps, taps) / sum``; [1,3,3,1] gives the [4,4] low-pass of StyleGAN2."""
    f = torch.as_tensor(list(taps), dtype=torch.float32)
    f = torch.outer(f, f)
    return f / f.sum()


def _pads(padding: int | Sequence[int]) -> tuple[int, int, int, int]:
    """Normalise ``padding`` to (x0, x1, y0, y1)."""
    if isinstance(padding, int):
        return padding, padding, padding, padding
    padding = list(padding)
    if len(padding) == 2:
        px, py = padding
        return px, px, py, py
    if len(padding) == 4:
        return tuple(padding)  # type: ignore[return-value]
    raise ValueError(f"padding must be an int, [x, y] or [x0, x1, y0, y1], got {padding!r}")


def upfirdn2d(
    x: torch.Tensor,
    f: torch.Tensor | None,
    *,
    up: int = 1,
    down: int = 1,
    padding: int | Sequence[int] = 0,
    flip_filter: bool = False,
    gain: float = 1.0,
) -> torch.Tensor:
    """Upsample (insert ``up - 1`` zeros after each pixel), pad (negative = crop), FIR-filter, downsample.

    The filter is applied as a true convolution (flipped) unless ``flip_filter``; it is scaled by
    ``gain`` (``gain ** (ndim / 2)`` per axis pair, i.e. ``gain`` for a 2D filter).
    """
    if f is None:
        f = torch.ones(1, 1, dtype=torch.float32, device=x.device)
    b, c, h, w = x.shape
    x0, x1, y0, y1 = _pads(padding)
    # 1. zero insertion
    if up > 1:
        x = x.reshape(b, c, h, 1, w, 1)
        x = F.pad(x, [0, up - 1, 0, 0, 0, up - 1])
        x = x.reshape(b, c, h * up, w * up)
    # 2. pad, then crop for negative padding
    x = F.pad(x, [max(x0, 0), max(x1, 0), max(y0, 0), max(y1, 0)])
    x = x[:, :, max(-y0, 0): x.shape[2] - max(-y1, 0), max(-x0, 0): x.shape[3] - max(-x1, 0)]
    # 3. depthwise FIR filter
    f = (f * (gain ** (f.ndim / 2))).to(x.dtype)
    if not flip_filter:
        f = f.flip(list(range(f.ndim)))
    weight = f[None, None].repeat(c, 1, 1, 1)
    x = F.conv2d(x, weight, groups=c)
    # 4. decimation
    return x[:, :, ::down, ::down]


def upsample2d(x: torch.Tensor, f: torch.Tensor, *, up: int = 2, gain: float = 1.0) -> torch.Tensor:
    """FIR upsampling by ``up`` whose output is exactly ``up`` times the input size."""
    fh, fw = f.shape
    pad = [(fw + up - 1) // 2, (fw - up) // 2, (fh + up - 1) // 2, (fh - up) // 2]
    return upfirdn2d(x, f, up=up, padding=pad, gain=gain * up * up)


def bias_act(
    x: torch.Tensor,
    b: torch.Tensor | None = None,
    *,
    dim: int = 1,
    act: str = "linear",
    alpha: float | None = None,
    gain: float | None = None,
    clamp: float | None = None,
    inplace: bool = False,
) -> torch.Tensor:
    """``clamp(act(x + b) * gain, -clamp, clamp)`` with the bias broadcast along ``dim``.

    ``inplace`` lets the caller hand over ``x`` (a fresh temporary) to be overwritten when no gradient
    is being recorded; the numbers are the same either way.
    """
    func, def_alpha, def_gain = _ACTIVATIONS[act]
    alpha = float(def_alpha if alpha is None else alpha)
    gain = float(def_gain if gain is None else gain)
    if inplace and act in ("linear", "lrelu") and not (torch.is_grad_enabled() and (
            x.requires_grad or (b is not None and b.requires_grad))):
        if b is not None:
            x.add_(b.reshape([-1 if i == dim else 1 for i in range(x.ndim)]))
        if act == "lrelu":
            F.leaky_relu_(x, alpha)
        if gain != 1:
            x.mul_(gain)
        if clamp is not None and clamp >= 0:
            x.clamp_(-clamp, clamp)
        return x
    if b is not None:
        x = x + b.reshape([-1 if i == dim else 1 for i in range(x.ndim)])
    x = func(x, alpha)
    if gain != 1:
        x = x * gain
    if clamp is not None and clamp >= 0:
        x = x.clamp(-clamp, clamp)
    return x


def conv2d_resample(
    x: torch.Tensor,
    w: torch.Tensor,
    f: torch.Tensor | None = None,
    *,
    up: int = 1,
    padding: int = 0,
    groups: int = 1,
    flip_weight: bool = True,
) -> torch.Tensor:
    """2D convolution, optionally with ``up``-fold FIR upsampling (``padding`` is relative to the upsampled image).

    ``flip_weight=True`` is correlation (what ``F.conv2d`` does), ``False`` a true convolution.
    Upsampling with a kxk kernel runs a stride-``up`` transposed convolution followed by the FIR filter
    with gain ``up**2`` (the official fast path; padding applied once).
    """
    out_ch, in_per_group, kh, kw = w.shape
    if up == 1:
        if not flip_weight and (kh > 1 or kw > 1):
            w = w.flip([2, 3])
        return F.conv2d(x, w, padding=padding, groups=groups)
    if f is None:
        raise ValueError("conv2d_resample: upsampling needs a FIR filter f")
    fh, fw = f.shape
    # 1. padding of the whole up -> conv -> filter chain, then the part the transposed conv takes over
    px0 = padding + (fw + up - 1) // 2 - (kw - 1)
    px1 = padding + (fw - up) // 2 - (kw - up)
    py0 = padding + (fh + up - 1) // 2 - (kh - 1)
    py1 = padding + (fh - up) // 2 - (kh - up)
    pxt = max(min(-px0, -px1), 0)
    pyt = max(min(-py0, -py1), 0)
    # 2. transposed weight layout [groups * in, out / groups, kh, kw]
    if groups == 1:
        wt = w.transpose(0, 1)
    else:
        wt = w.reshape(groups, out_ch // groups, in_per_group, kh, kw).transpose(1, 2)
        wt = wt.reshape(groups * in_per_group, out_ch // groups, kh, kw)
    # conv_transpose2d is a true convolution: flip for correlation semantics
    if flip_weight:
        wt = wt.flip([2, 3])
    x = F.conv_transpose2d(x, wt, stride=up, padding=[pyt, pxt], groups=groups)
    # 3. FIR low-pass (gain up^2 restores the signal level lost to zero insertion)
    return upfirdn2d(x, f, padding=[px0 + pxt, px1 + pxt, py0 + pyt, py1 + pyt], gain=up * up)


def modulated_conv2d(
    x: torch.Tensor,
    weight: torch.Tensor,
    styles: torch.Tensor,
    *,
    noise: torch.Tensor | None = None,
    up: int = 1,
    padding: int = 0,
    resample_filter: torch.Tensor | None = None,
    demodulate: bool = True,
    flip_weight: bool = True,
    fused: bool = True,
) -> torch.Tensor:
    """StyleGAN2 modulated convolution (Karras et al. 2020, eq. 1-3).

    ``w'_{oikk} = weight_{oikk} * styles_i``; with ``demodulate``, ``w'' = w' / sqrt(sum_{ikk} w'^2 + 1e-8)``.
    ``fused`` runs one grouped convolution with per-sample weights (inference); otherwise the styles
    and demodulation scale the activations around a shared convolution (training; same result).
    ``noise`` (broadcastable to the output) is added after demodulation.
    """
    batch = x.shape[0]
    out_ch, in_ch, kh, kw = weight.shape
    if styles.shape != (batch, in_ch):
        raise ValueError(f"modulated_conv2d: styles must be [{batch}, {in_ch}], got {list(styles.shape)}")
    # 1. keep float16 activations in range (pre-normalise weights and styles)
    if x.dtype == torch.float16 and demodulate:
        weight = weight * (1 / math.sqrt(in_ch * kh * kw) / weight.norm(float("inf"), dim=[1, 2, 3], keepdim=True))
        styles = styles / styles.norm(float("inf"), dim=1, keepdim=True)
    # 2. per-sample weights and demodulation coefficients
    w = None
    dcoefs = None
    if demodulate or fused:
        w = weight.unsqueeze(0) * styles.reshape(batch, 1, -1, 1, 1)
    if demodulate:
        dcoefs = (w.square().sum(dim=[2, 3, 4]) + 1e-8).rsqrt()
    if demodulate and fused:
        w = w * dcoefs.reshape(batch, -1, 1, 1, 1)
    # 3a. not fused: scale activations before and after a shared convolution
    if not fused:
        x = x * styles.to(x.dtype).reshape(batch, -1, 1, 1)
        x = conv2d_resample(x, weight.to(x.dtype), resample_filter, up=up, padding=padding, flip_weight=flip_weight)
        if demodulate:
            x = x * dcoefs.to(x.dtype).reshape(batch, -1, 1, 1)
        if noise is not None:
            x = x.add_(noise.to(x.dtype))  # x is a fresh temporary; add's backward needs neither input
        return x
    # 3b. fused: one grouped convolution, one group per sample
    x = x.reshape(1, -1, *x.shape[2:])
    w = w.reshape(-1, in_ch, kh, kw)
    x = conv2d_resample(x, w.to(x.dtype), resample_filter, up=up, padding=padding, groups=batch,
                        flip_weight=flip_weight)
    x = x.reshape(batch, -1, *x.shape[2:])
    if noise is not None:
        x = x.add_(noise.to(x.dtype))
    return x
