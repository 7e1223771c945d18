"""TriPlaneNet v1 against the official outputs (golden set, deterministic fill and sampling).

The full-size model is filled once per module. The encoders alone are checked on the README's parts (a)
and (b); end to end, one ``encode`` (pSp, first render, tri-plane encoder) is followed by renders at the
input and the novel view, one CTTR pass that reuses the input-view render, and a novel-view render of the
CTTR result. Each test compares one output (README section 5).
"""
from __future__ import annotations

import pytest
import torch

from tests.models import parity
from vidtriplane.models.triplanenet import TriPlaneNet, pool_to


@pytest.fixture(scope="module")
def outputs() -> dict[str, torch.Tensor]:
    g = parity.golden()
    net = TriPlaneNet().eval()
    sd = parity.filled_state_dict(net)
    assert len(sd) == 1182
    net.load_state_dict(sd, strict=True)
    net.set_latent_avg(g["input.latent_avg"])
    assert torch.equal(net.latent_avg, parity.golden_latent_avg())
    x, c, c_novel = g["input.x"].float(), g["input.c"], g["input.c_novel"]
    out: dict[str, torch.Tensor] = {}
    with torch.no_grad():
        out["a.psp_codes"] = net.psp_encoder(x)
        out["b.offsets"] = net.triplanenet_encoder(torch.cat([x.flip(3), x - x.flip(3)], dim=1))
        inv = net.encode(x, c, sampling="deterministic")
        same_view = net.render(inv, c, sampling="deterministic").image
        out["d.codes"] = inv.codes
        out["d.y_hat_psp"] = inv.y_psp
        out["d.offsets"] = inv.offsets
        out["d.y_hat"] = pool_to(same_view, (256, 256))
        out["d.y_hat_novel"] = pool_to(net.render(inv, c_novel, sampling="deterministic").image, (256, 256))
        refined = net.cttr_step(inv, x, input_view_image=same_view, sampling="deterministic")
        out["d.cttr_offsets2"] = refined.offsets
        out["d.y_hat_cttr_novel"] = pool_to(net.render(refined, c_novel, sampling="deterministic").image, (256, 256))
    return out


def test_psp_encoder_alone(outputs):
    parity.check("a.psp_codes", outputs["a.psp_codes"])


def test_triplane_encoder_alone(outputs):
    offsets = outputs["b.offsets"]
    parity.check("b.offsets_sub8", offsets[:, :, ::8, ::8], full=offsets)


def test_codes(outputs):
    parity.check("d.codes", outputs["d.codes"])


def test_first_branch_image(outputs):
    parity.check("d.y_hat_psp", outputs["d.y_hat_psp"])


def test_offsets(outputs):
    offsets = outputs["d.offsets"]
    parity.check("d.offsets_sub8", offsets[:, :, ::8, ::8], full=offsets)


def test_final_image_same_view(outputs):
    parity.check("d.y_hat", outputs["d.y_hat"])


def test_final_image_novel_view(outputs):
    parity.check("d.y_hat_novel", outputs["d.y_hat_novel"])


def test_cttr_offsets_replace_the_first_ones(outputs):
    offsets2 = outputs["d.cttr_offsets2"]
    parity.check("d.cttr_offsets2_sub16", offsets2[:, :, ::16, ::16])
    assert not torch.allclose(offsets2, outputs["d.offsets"], atol=1e-3)


def test_cttr_novel_view(outputs):
    parity.check("d.y_hat_cttr_novel", outputs["d.y_hat_cttr_novel"])

