"""The StyleGAN2 reference ops against brute-force formulas on small inputs."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from vidtriplane.models.eg3d.ops import (bias_act, conv2d_resample, modulated_conv2d, setup_filter, upfirdn2d,
                                         upsample2d)


def _naive_upfirdn(x: np.ndarray, f: np.ndarray, up: int, pad: tuple[int, int, int, int], gain: float) -> np.ndarray:
    """Zero-insert, pad (x0, x1, y0, y1; >= 0 here), then true 2D convolution, one loop per output pixel."""
    b, c, h, w = x.shape
    z = np.zeros((b, c, h * up, w * up))
    z[:, :, ::up, ::up] = x
    z = np.pad(z, ((0, 0), (0, 0), (pad[2], pad[3]), (pad[0], pad[1])))
    fk = f[::-1, ::-1] * gain
    fh, fw = f.shape
    out = np.zeros((b, c, z.shape[2] - fh + 1, z.shape[3] - fw + 1))
    for i in range(out.shape[2]):
        for j in range(out.shape[3]):
            out[:, :, i, j] = (z[:, :, i:i + fh, j:j + fw] * fk).sum(axis=(2, 3))
    return out


def test_setup_filter_is_the_normalised_1331_outer_product():
    f = setup_filter()
    expected = torch.tensor([1.0, 3, 3, 1])
    assert torch.equal(f, torch.outer(expected, expected) / 64)
    assert f.sum().item() == 1.0


def test_upsample2d_matches_zero_insertion_and_filtering():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 5, 6, generator=g)
    f = torch.rand(4, 4, generator=g)  # asymmetric on purpose: checks the flip
    got = upsample2d(x, f)
    ref = _naive_upfirdn(x.double().numpy(), f.double().numpy(), 2, (2, 1, 2, 1), 4.0)
    assert got.shape == (2, 3, 10, 12)
    np.testing.assert_allclose(got.numpy(), ref, atol=1e-5)


def test_upsample2d_keeps_a_constant_image_constant_inside():
    y = upsample2d(torch.full((1, 1, 8, 8), 0.7), setup_filter())
    assert torch.allclose(y[..., 2:-2, 2:-2], torch.tensor(0.7), atol=1e-6)


def test_upfirdn2d_negative_padding_crops_and_down_decimates():
    x = torch.arange(36.0).reshape(1, 1, 6, 6)
    y = upfirdn2d(x, None, padding=[-1, -2, 0, -1], down=2)
    assert torch.equal(y, x[:, :, 0:5, 1:4][:, :, ::2, ::2])


def test_bias_act_lrelu_gain_and_clamp():
    x = torch.tensor([[-2.0, 0.5], [3.0, -1.0]]).reshape(1, 2, 2, 1)
    b = torch.tensor([1.0, -1.0])
    y = bias_act(x, b, act="lrelu", clamp=2.0)
    pre = x + b.reshape(1, 2, 1, 1)
    ref = torch.where(pre > 0, pre, 0.2 * pre) * math.sqrt(2)
    assert torch.allclose(y, ref.clamp(-2, 2))
    assert bias_act(x, b).equal(pre)


@pytest.mark.parametrize("flip_weight", [True, False])
def test_upsampling_conv_equals_filter_then_conv(flip_weight):
    """Transposed conv + FIR (the fast path) == FIR-upsample, then an ordinary padded conv."""
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 4, 6, 6, generator=g, dtype=torch.float64)
    w = torch.randn(5, 4, 3, 3, generator=g, dtype=torch.float64)
    f = setup_filter().double()
    got = conv2d_resample(x, w, f, up=2, padding=1, flip_weight=flip_weight)
    up = upfirdn2d(x, f, up=2, padding=[3, 2, 3, 2], gain=4)
    ref = F.conv2d(up, w if flip_weight else w.flip([2, 3]))
    assert got.shape == (2, 5, 12, 12)
    assert torch.allclose(got, ref, atol=1e-10)


@pytest.mark.parametrize("up", [1, 2])
@pytest.mark.parametrize("demodulate", [True, False])
def test_modulated_conv_fused_equals_unfused_and_the_formula(up, demodulate):
    g = torch.Generator().manual_seed(2)
    x = torch.randn(3, 4, 8, 8, generator=g, dtype=torch.float64)
    weight = torch.randn(6, 4, 3, 3, generator=g, dtype=torch.float64)
    styles = torch.randn(3, 4, generator=g, dtype=torch.float64)
    noise = torch.randn(8 * up, 8 * up, generator=g, dtype=torch.float64)
    f = setup_filter().double()
    kw = dict(noise=noise, up=up, padding=1, resample_filter=f, demodulate=demodulate, flip_weight=(up == 1))
    fused = modulated_conv2d(x, weight, styles, fused=True, **kw)
    unfused = modulated_conv2d(x, weight, styles, fused=False, **kw)
    assert torch.allclose(fused, unfused, atol=1e-10)
    # per-sample explicit weights
    for i in range(3):
        wi = weight * styles[i].reshape(1, -1, 1, 1)
        if demodulate:
            wi = wi / wi.square().sum(dim=[1, 2, 3], keepdim=True).add(1e-8).sqrt()
        ref = conv2d_resample(x[i:i + 1], wi, f, up=up, padding=1, flip_weight=(up == 1)) + noise
        assert torch.allclose(fused[i:i + 1], ref, atol=1e-10)
    if demodulate:  # demodulation makes the output scale-invariant in the styles
        scaled = modulated_conv2d(x, weight, styles * 7.0, fused=True, **kw)
        assert torch.allclose(scaled, fused, atol=1e-8)


def test_bias_act_inplace_gives_the_same_numbers_and_respects_autograd():
    g = torch.Generator().manual_seed(4)
    x = torch.randn(2, 3, 4, 4, generator=g)
    b = torch.randn(3, generator=g)
    ref = bias_act(x, b, act="lrelu", clamp=0.5)
    y = x.clone()
    out = bias_act(y, b, act="lrelu", clamp=0.5, inplace=True)
    assert torch.equal(out, ref) and out.data_ptr() == y.data_ptr()
    xg = x.clone().requires_grad_()
    out = bias_act(xg, b, act="lrelu", inplace=True)  # recorded: must not overwrite its input
    out.sum().backward()
    assert torch.equal(xg.detach(), x) and xg.grad is not None
