"""Metrics: known answers, MS-SSIM size limits, ID with dropped faces, aggregation and missing weights."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from tests.models.random_nets import random_face_embedder, random_lpips
from vidtriplane.eval.face_align import faces_to_tensor
from vidtriplane.eval.metrics import (
    MetricAccumulator,
    MetricError,
    MetricNets,
    id_similarity,
    mse_per_image,
    msssim_per_image,
    to_uint8,
)
from vidtriplane.models.arcface import FaceEmbedder, FaceEmbedderConfig
from vidtriplane.models.lpips import LPIPS


def _images(seed: int, b: int = 2, size: int = 256) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    # smooth images (upsampled noise), so that MS-SSIM sees structure
    low = torch.rand(b, 3, size // 8, size // 8, generator=g) * 2 - 1
    return torch.nn.functional.interpolate(low, size=(size, size), mode="bilinear", align_corners=False)


@pytest.fixture(scope="module")
def lpips() -> LPIPS:
    return random_lpips()


def _center_aligner(images: np.ndarray) -> tuple[torch.Tensor, np.ndarray]:
    """A stand-in detector: the centre 112 px of each image; 'no face' when the image is all black."""
    h, w = images.shape[1:3]
    crops = images[:, (h - 112) // 2:(h + 112) // 2, (w - 112) // 2:(w + 112) // 2]
    return faces_to_tensor(crops), images.reshape(len(images), -1).max(axis=1) > 0


def test_identical_images_score_perfectly(lpips):
    x = _images(1)
    acc = MetricAccumulator(MetricNets(lpips=lpips))
    acc.add(x, x.clone())
    r = acc.report()
    assert r.count == 2 and r.mse == 0.0 and r.lpips == 0.0
    assert r.msssim == pytest.approx(1.0, abs=1e-6)


def test_known_noise_level_gives_the_expected_mse():
    x = _images(2)
    g = torch.Generator().manual_seed(3)
    sigma = 0.1
    y = x + sigma * torch.randn(x.shape, generator=g)
    mse = mse_per_image(x, y)
    assert mse.shape == (2,)
    assert torch.allclose(mse, torch.full((2,), sigma ** 2), rtol=0.02)  # 196608 samples per image
    assert torch.allclose(mse_per_image(x, x + 0.25), torch.full((2,), 0.0625), rtol=1e-6)  # constant offset: c^2
    # nn.MSELoss semantics on [-1, 1] values, per image
    assert float(mse[1]) == pytest.approx(float(torch.nn.MSELoss()(y[1:], x[1:])), rel=1e-6)


def test_msssim_decreases_with_noise_and_refuses_small_images():
    x = _images(4)
    g = torch.Generator().manual_seed(5)
    noise = torch.randn(x.shape, generator=g)
    mild, strong = msssim_per_image(x, x + 0.05 * noise), msssim_per_image(x, x + 0.5 * noise)
    assert (mild < 1).all() and (strong < mild).all()
    small = _images(6, size=128)
    with pytest.raises(MetricError, match="at least 161 px"):
        msssim_per_image(small, small)
    with pytest.raises(MetricError, match="at least 161 px"):
        MetricAccumulator(size=None).add(small, small)
    acc = MetricAccumulator()  # default: resized to 256 first, like the official Resize((256, 256))
    acc.add(small, small)
    assert acc.report().msssim == pytest.approx(1.0, abs=1e-6)


def test_id_similarity_drops_images_without_a_face():
    embedder = random_face_embedder(FaceEmbedderConfig.tiny(se=False, affine_output=False), seed=7)
    x = _images(8, b=3)
    y = _images(9, b=3)
    y[2] = -1.0  # black output image: no face found
    sims = id_similarity(embedder, _center_aligner, x, y)
    assert math.isnan(float(sims[2])) and not torch.isnan(sims[:2]).any()
    with torch.no_grad():
        ex = embedder(_center_aligner(to_uint8(x))[0])
        ey = embedder(_center_aligner(to_uint8(y))[0])
    assert torch.allclose(sims[:2], (ex[:2] * ey[:2]).sum(1), atol=1e-6)
    assert torch.allclose(id_similarity(embedder, _center_aligner, x, x), torch.ones(3), atol=1e-5)

    acc = MetricAccumulator(MetricNets(id_embedder=embedder, align=_center_aligner))
    acc.add(x, y)
    acc.add(x[:1], x[:1])
    r = acc.report()
    assert r.count == 4 and r.id_count == 3
    expected = (float(sims[0]) + float(sims[1]) + 1.0) / 3  # nanmean: the faceless pair drops out
    assert r.id == pytest.approx(expected, abs=1e-5)
    assert math.isnan(r.per_image["id"][2]) and len(r.per_image["mse"]) == 4


def test_missing_networks_are_named_in_the_report():
    x = _images(10, b=1)
    acc = MetricAccumulator(MetricNets())
    acc.add(x, x)
    r = acc.report()
    assert r.lpips is None and r.id is None and r.mse == 0.0
    assert "alexnet-owt-7be5be79.pth" in r.missing["lpips"] and "alex.pth" in r.missing["lpips"]
    assert "CurricularFace_Backbone.pth" in r.missing["id"]
    assert "lpips: not computed (needs alexnet-owt-7be5be79.pth" in r.summary()
    torch.manual_seed(0)
    no_aligner = MetricAccumulator(MetricNets(id_embedder=FaceEmbedder(FaceEmbedderConfig.tiny())))
    assert "aligner" in no_aligner.missing["id"]


def test_to_uint8_truncates_like_to_pil_image():
    v = torch.tensor([-1.0, 1.0, 2 * 127.9 / 255 - 1, 0.0, 3.0]).view(1, 1, 1, 5).expand(1, 3, 1, 5)
    out = to_uint8(v)
    assert out.shape == (1, 1, 5, 3) and out.dtype == np.uint8
    assert out[0, 0, :, 0].tolist() == [0, 255, 127, 127, 255]
    with pytest.raises(MetricError, match="one shape"):
        mse_per_image(torch.zeros(1, 3, 8, 8), torch.zeros(1, 3, 8, 9))
