"""Precision of the convolutional parts: bf16 / fp16 autocast against float32 on the tiny TriPlaneNet."""
from __future__ import annotations

import math

import pytest
import torch

from vidtriplane.geometry.camera import lookat_label
from vidtriplane.models import precision as amp
from vidtriplane.models.triplanenet import TriPlaneNet, TriPlaneNetConfig


@pytest.fixture(scope="module")
def tiny():
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        net = TriPlaneNet(TriPlaneNetConfig.tiny()).eval()
    x = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(1)) * 2 - 1
    c = lookat_label(torch.tensor([0.1, -0.2]), torch.tensor([0.0, 0.1]))
    c_novel = lookat_label(torch.tensor([0.4, 0.3]), torch.tensor([0.0, 0.0]))
    with torch.no_grad():
        inv = net.encode(x, c)
        ref = net.render(inv, c_novel).image
    return net, x, c, c_novel, inv, ref


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    return 10 * math.log10(4 / (a.double() - b.double()).square().mean().item())


def test_autocast_contexts():
    with amp.autocast("fp32", "cpu"):
        assert not torch.is_autocast_enabled("cpu")
    with amp.autocast("bf16", "cpu"):
        assert torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16
        with amp.no_autocast("cpu"):
            assert not torch.is_autocast_enabled("cpu")
    with pytest.raises(ValueError, match="precision must be one of"):
        amp.autocast("int8", "cpu")


def test_run_returns_float32_from_half_precision_work():
    x, w = torch.randn(4, 8), torch.randn(8, 3)
    out = amp.run("bf16", torch.matmul, x, w)
    assert out.dtype == torch.float32
    assert 0 < (out - x @ w).abs().max() < 0.1  # really computed in bf16
    assert torch.equal(amp.run("fp32", torch.matmul, x, w), x @ w)


def test_fp32_keywords_change_nothing(tiny):
    net, x, c, c_novel, inv, ref = tiny
    with torch.no_grad():
        again = net.render(net.encode(x, c, backend="eager", precision="fp32"), c_novel, precision="fp32").image
    assert torch.equal(again, ref)


@pytest.mark.parametrize("precision, min_psnr", [("bf16", 30.0), ("fp16", 45.0)])
def test_half_precision_inversion_stays_close(tiny, precision, min_psnr):
    """Encoders, backbone and SR under autocast; everything handed on is float32."""
    net, x, c, c_novel, inv, ref = tiny
    with torch.no_grad():
        half = net.encode(x, c, precision=precision)
        image = net.render(half, c_novel, precision=precision).image
    for t in (half.codes, half.planes, half.offsets, half.y_psp, image):
        assert t.dtype == torch.float32
    assert psnr(image, ref) > min_psnr
    assert psnr(half.y_psp, inv.y_psp) > min_psnr
    assert (half.planes - inv.planes).abs().max() > 0  # the half-precision path really ran
    assert ref.std() > 0.05
