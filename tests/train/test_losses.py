"""Training losses: every term against a direct computation of its definition on small random tensors."""
from __future__ import annotations

import pytest
import torch

from tests.models.random_nets import random_face_embedder, random_lpips
from vidtriplane.models.arcface import FaceEmbedder
from vidtriplane.models.discriminator import Discriminator, DiscriminatorConfig
from vidtriplane.config.train import LossConfig
from vidtriplane.train.losses import (
    LossNets,
    conf_weighted_mean,
    discriminator_loss,
    generator_adv_loss,
    id_loss,
    psp_loss,
    psp_loss_v2,
    r1_due,
    r1_penalty,
    triplane_loss,
    triplane_loss_v2,
)


@pytest.fixture(scope="module")
def nets() -> LossNets:
    return LossNets(lpips=random_lpips(), arcface=random_face_embedder())


def _pair(seed: int, scale: float = 0.5, b: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(b, 3, 256, 256, generator=g) * 2 - 1
    y = x + scale * torch.randn(x.shape, generator=g)
    return y, x


def _adaptive_pool_matrix(n_in: int, n_out: int) -> torch.Tensor:
    """Row i averages input indices floor(i * n_in / n_out) .. ceil((i + 1) * n_in / n_out) - 1."""
    m = torch.zeros(n_out, n_in)
    for i in range(n_out):
        lo, hi = (i * n_in) // n_out, -(-((i + 1) * n_in) // n_out)
        m[i, lo:hi] = 1 / (hi - lo)
    return m


def _direct_id(arcface: FaceEmbedder, y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    p = _adaptive_pool_matrix(188, 112)

    def embed(img):
        crop = img[:, :, 35:223, 32:220]
        return arcface(p @ crop @ p.T)

    return (1 - (embed(y) * embed(x)).sum(1)).mean()


def _smooth_l1(d: torch.Tensor) -> torch.Tensor:
    a = d.abs()
    return torch.where(a < 1, 0.5 * a * a, a - 0.5)


def test_id_loss_is_one_minus_cosine_of_the_cropped_pooled_faces(nets):
    y, x = _pair(1)
    y.requires_grad_(True)
    loss = id_loss(nets.arcface, y, x)
    with torch.no_grad():
        expected = _direct_id(nets.arcface, y, x)
    assert float(loss.detach()) == pytest.approx(float(expected), rel=1e-5, abs=1e-6)
    loss.backward()
    assert y.grad.abs().sum() > 0
    assert y.grad[:, :, :35].abs().sum() == 0 and y.grad[:, :, :, 220:].abs().sum() == 0  # outside the crop
    assert float(id_loss(nets.arcface, x, x)) == pytest.approx(0.0, abs=1e-6)


def test_psp_loss_terms_and_total(nets):
    y, x = _pair(2)
    total, terms = psp_loss(y, x, nets, LossConfig.v1())
    with torch.no_grad():
        mse = ((y - x) ** 2).mean()
        lp = nets.lpips(y, x).mean()
        idl = _direct_id(nets.arcface, y, x)
    assert terms["loss_l2_psp"] == pytest.approx(float(mse), rel=1e-6)
    assert terms["loss_lpips_psp"] == pytest.approx(float(lp), rel=1e-6)
    # 1 - cos in fp32 loses ~1e-7 absolute to cancellation (and the batched and direct ArcFace passes
    # round differently with the thread count): an absolute tolerance, not a relative one, on small values
    assert terms["loss_id_psp"] == pytest.approx(float(idl), rel=1e-5, abs=1e-6)
    expected = 1.0 * mse + 0.8 * lp + 0.1 * idl
    assert float(total) == pytest.approx(float(expected), rel=1e-5, abs=1e-6)
    assert terms["loss_psp"] == pytest.approx(float(total))


@pytest.mark.parametrize("cfg,lpips_weight", [(LossConfig.v1(), 0.1), (LossConfig.v2(), 0.8)], ids=["v1", "v2"])
def test_triplane_loss_terms_and_total(nets, cfg, lpips_weight):
    y, x = _pair(3, scale=1.5)  # differences on both sides of the smooth-L1 knee
    total, terms = triplane_loss(y, x, nets, cfg)
    with torch.no_grad():
        d = y - x
        assert (d.abs() > 1).any() and (d.abs() < 1).any()
        l1 = _smooth_l1(d).mean()
        lp = nets.lpips(y, x).mean()
        idl = _direct_id(nets.arcface, y, x)
    assert terms["loss_l1_triplane"] == pytest.approx(float(l1), rel=1e-6)
    assert float(total) == pytest.approx(float(1.0 * l1 + lpips_weight * lp + 0.1 * idl), rel=1e-5, abs=1e-6)


def test_absent_networks_are_skipped_with_their_weight():
    y, x = _pair(4)
    total, terms = psp_loss(y, x, LossNets(), LossConfig.v1())
    assert float(total) == pytest.approx(float(((y - x) ** 2).mean()), rel=1e-6)
    assert terms["skipped_loss_lpips_psp"] == 0.8 and terms["skipped_loss_id_psp"] == 0.1
    assert "loss_lpips_psp" not in terms
    total, terms = triplane_loss(y, x, LossNets(), LossConfig.v1().replace(l1_lambda_triplane=0, id_lambda_triplane=0))
    assert float(total) == 0.0
    assert terms == {"skipped_loss_lpips_triplane": 0.1, "loss_triplane": 0.0}  # weight 0: not even reported


def test_v2_mirror_terms_weight_pixels_by_confidence(nets):
    y, x = _pair(5, scale=1.2)
    ym, xm = _pair(6, scale=1.2)
    g = torch.Generator().manual_seed(7)
    conf = torch.rand(2, 256, 256, generator=g) * 3
    cfg = LossConfig.v2()
    with torch.no_grad():
        lp_m, id_m = nets.lpips(ym, xm).mean(), _direct_id(nets.arcface, ym, xm)
        l2_m = (((xm - ym) ** 2).mean(1) / (conf + 1)).mean()
        l1_m = (_smooth_l1(ym - xm).mean(1) / (conf + 1)).mean()
    main_psp, _ = psp_loss(y, x, nets, cfg)
    total, terms = psp_loss_v2(y, x, ym, xm, conf, nets, cfg)
    assert terms["loss_l2_psp_mirror"] == pytest.approx(float(l2_m), rel=1e-6)
    mirror = 1.0 * l2_m + 0.8 * lp_m + 0.1 * id_m
    assert terms["loss_psp_mirror"] == pytest.approx(float(mirror), rel=1e-5, abs=1e-6)
    assert float(total) == pytest.approx(float(main_psp + 0.1 * mirror), rel=1e-5, abs=1e-6)
    main_tri, _ = triplane_loss(y, x, nets, cfg)
    total, terms = triplane_loss_v2(y, x, ym, xm, conf[:, None], nets, cfg)  # [B, 1, H, W] works too
    assert terms["loss_l1_triplane_mirror"] == pytest.approx(float(l1_m), rel=1e-6)
    assert float(total) == pytest.approx(float(main_tri + 0.1 * (1.0 * l1_m + 0.8 * lp_m + 0.1 * id_m)), rel=1e-5, abs=1e-6)
    assert terms["loss_triplane_total"] == pytest.approx(float(total))
    # no confidence map: plain means
    assert float(conf_weighted_mean((xm - ym) ** 2, None, 1.0)) == pytest.approx(float(((xm - ym) ** 2).mean()))
    with pytest.raises(ValueError, match="confidence map"):
        conf_weighted_mean((xm - ym) ** 2, conf[:, :128], 1.0)


def test_gan_losses_and_lazy_r1():
    torch.manual_seed(8)
    D = Discriminator(DiscriminatorConfig.tiny(32))
    g = torch.Generator().manual_seed(9)
    real = torch.rand(3, 3, 32, 32, generator=g) * 2 - 1
    fake = (torch.rand(3, 3, 32, 32, generator=g) * 2 - 1).requires_grad_(True)
    cfg = LossConfig.v2()
    with torch.no_grad():
        lr, lf = D(real), D(fake)
    softplus = lambda t: torch.log1p(torch.exp(t))  # noqa: E731

    adv, terms = generator_adv_loss(D, fake, cfg)
    assert terms["loss_G_adv"] == pytest.approx(float(softplus(-lf).mean()), rel=1e-5)
    assert float(adv.detach()) == pytest.approx(0.005 * float(softplus(-lf).mean()), rel=1e-5)
    adv.backward()
    assert fake.grad.abs().sum() > 0

    d_loss, terms = discriminator_loss(D, real, fake)
    assert float(d_loss.detach()) == pytest.approx(float((softplus(-lr).mean() + softplus(lf).mean()) / 2), rel=1e-5)
    assert d_loss.grad_fn is not None

    r1, terms = r1_penalty(D, real, cfg)
    probe = real.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(D(probe).sum(), probe)
    expected = 10.0 / 2 * grad.pow(2).flatten(1).sum(1).mean() * 16
    assert float(r1.detach()) == pytest.approx(float(expected), rel=1e-5)
    D.zero_grad()
    r1.backward()  # second-order: the penalty trains D
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in D.parameters())
    assert [s for s in range(40) if r1_due(s, cfg)] == [0, 16, 32]

    none, terms = generator_adv_loss(None, fake, cfg)
    assert float(none) == 0.0 and terms == {"skipped_loss_G_adv": 0.005}
