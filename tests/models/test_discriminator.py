"""StyleGAN2-ADA resnet discriminator: parameter layout, resampling conv, minibatch stddev, forward."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from vidtriplane.models.discriminator import (
    Conv2dLayer,
    Discriminator,
    DiscriminatorConfig,
    downsample_conv2d,
    minibatch_stddev,
)
from vidtriplane.models.eg3d.ops import setup_filter


def test_full_size_parameter_layout():
    with torch.device("meta"):
        sd = {k: tuple(v.shape) for k, v in Discriminator(DiscriminatorConfig()).state_dict().items()}
    # b512 (12 entries with fromrgb) + b256..b8 (6 x 9) + b4 (conv 3, fc 2, out 2)
    assert len(sd) == 12 + 6 * 9 + 7
    assert sd["b512.fromrgb.weight"] == (64, 3, 1, 1)
    assert sd["b512.conv0.weight"] == (64, 64, 3, 3)
    assert sd["b512.conv1.weight"] == (128, 64, 3, 3)
    assert sd["b512.skip.weight"] == (128, 64, 1, 1) and "b512.skip.bias" not in sd
    assert sd["b64.conv1.weight"] == (512, 512, 3, 3)
    assert sd["b8.resample_filter"] == (4, 4) and sd["b8.conv1.resample_filter"] == (4, 4)
    assert sd["b4.conv.weight"] == (512, 513, 3, 3)
    assert sd["b4.fc.weight"] == (512, 512 * 16) and sd["b4.out.weight"] == (1, 512)
    assert not any(k.startswith("b256.fromrgb") for k in sd)
    assert [k for k in sd if k.startswith("b")][0] == "b512.resample_filter"


def test_downsample_conv_equals_pad_conv_filter_decimate():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 16, 16, generator=g)
    f = setup_filter()
    taps = f.flip([0, 1])[None, None].repeat(4, 1, 1, 1)
    for k in (3, 1):
        w = torch.randn(4, 3, k, k, generator=g)
        pad = k // 2 + 1  # conv padding + the filter's (4 - 2 + 1) // 2 = (4 - 2) // 2 = 1
        ref = F.conv2d(F.pad(x, [pad] * 4), w)               # full correlation
        ref = F.conv2d(ref, taps, groups=4)[:, :, ::2, ::2]  # FIR low-pass, keep every second pixel
        out = downsample_conv2d(x, w, f, padding=k // 2)
        assert out.shape == (2, 4, 8, 8)
        assert torch.allclose(out, ref, atol=1e-5)


def test_conv_layer_is_equalised_lr_conv_bias_lrelu_clamp():
    torch.manual_seed(1)
    layer = Conv2dLayer(3, 5, 3, activation="lrelu", conv_clamp=0.5)
    layer.bias.data.normal_()
    x = torch.randn(2, 3, 8, 8)
    pre = F.conv2d(x, layer.weight / math.sqrt(3 * 9), layer.bias, padding=1)
    ref = (F.leaky_relu(pre, 0.2) * math.sqrt(2)).clamp(-0.5, 0.5)
    assert torch.allclose(layer(x), ref, atol=1e-6)
    assert torch.allclose(layer(x, gain=2.0), (F.leaky_relu(pre, 0.2) * math.sqrt(2) * 2).clamp(-1, 1), atol=1e-6)


def test_minibatch_stddev():
    g = torch.Generator().manual_seed(2)
    x = torch.randn(4, 6, 3, 3, generator=g)
    out = minibatch_stddev(x, None)
    assert out.shape == (4, 7, 3, 3) and torch.equal(out[:, :6], x)
    expected = x.std(dim=0, unbiased=False).mean()
    assert torch.allclose(out[:, 6], expected.expand(4, 3, 3), atol=1e-6)
    grouped = minibatch_stddev(x, 2)  # groups of 2: sample i pairs with sample i + 2
    assert torch.allclose(grouped[0, 6, 0, 0], torch.stack([x[0], x[2]]).std(0, unbiased=False).mean(), atol=1e-6)


def test_tiny_forward():
    torch.manual_seed(3)
    D = Discriminator(DiscriminatorConfig.tiny(32)).eval()
    img = torch.rand(3, 3, 32, 32) * 2 - 1
    out = D(img)
    assert out.shape == (3, 1) and torch.isfinite(out).all()
    assert torch.equal(out, D(img))
    assert not torch.allclose(out, D(img.flip(-1)))
    with pytest.raises(ValueError, match=r"\[B, 3, 32, 32\]"):
        D(torch.zeros(1, 3, 64, 64))
    with pytest.raises(ValueError, match="power of two"):
        DiscriminatorConfig(img_resolution=48)
