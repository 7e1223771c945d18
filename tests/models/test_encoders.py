"""IR-SE-50, pSp and tri-plane encoders: official key names/shapes, tiny configs, behaviour, parity."""
from __future__ import annotations

import json

import pytest
import torch

from tests.conftest import shared_path
from vidtriplane.models.encoders import (
    GradualStyleEncoder,
    PSPConfig,
    TriPlaneEncoder,
    TriPlaneEncoderConfig,
    TriPlaneEncoderV2,
)
from vidtriplane.models.encoders.irse import make_body, run_body


def _manifest_part(part: str) -> dict:
    spec = json.loads(shared_path("spec", "official_state_dict_manifest.json").read_text())
    return spec[part]


def _assert_matches_manifest(module: torch.nn.Module, part: str) -> None:
    ref = _manifest_part(part)
    sd = module.state_dict()
    missing, extra = sorted(set(ref) - set(sd)), sorted(set(sd) - set(ref))
    assert not missing and not extra, f"missing {missing[:5]}, unexpected {extra[:5]}"
    assert list(sd) == list(ref), "key order differs from the official state_dict"
    wrong = {k: (list(v.shape), ref[k]["shape"]) for k, v in sd.items() if list(v.shape) != ref[k]["shape"]}
    assert not wrong, wrong
    assert all(str(v.dtype).removeprefix("torch.") == ref[k]["dtype"] for k, v in sd.items())


@pytest.mark.parametrize(
    ("build", "part", "count"),
    [
        (lambda: GradualStyleEncoder(), "psp_encoder", 565),
        (lambda: TriPlaneEncoder(), "triplanenet_encoder", 441),
        (lambda: TriPlaneEncoderV2(TriPlaneEncoderConfig.v2("pixelshuffle")), "triplanenet_v2_encoder_pixelshuffle", 441),
        (lambda: TriPlaneEncoderV2(TriPlaneEncoderConfig.v2("upsample")), "triplanenet_v2_encoder_upsample", 441),
    ],
    ids=["psp", "v1", "v2-pixelshuffle", "v2-upsample"],
)
def test_state_dict_equals_official_manifest(build, part, count):
    with torch.device("meta"):  # shapes only: no memory, no init cost
        module = build()
    assert len(module.state_dict()) == count
    _assert_matches_manifest(module, part)


def test_parameter_counts_match_spec():
    with torch.device("meta"):
        counts = {
            "psp": GradualStyleEncoder(),
            "v1": TriPlaneEncoder(),
            "v2ps": TriPlaneEncoderV2(TriPlaneEncoderConfig.v2("pixelshuffle")),
            "v2up": TriPlaneEncoderV2(TriPlaneEncoderConfig.v2("upsample")),
        }
    n = {k: sum(p.numel() for p in m.parameters()) for k, m in counts.items()}
    assert n == {"psp": 209_450_688, "v1": 42_106_496, "v2ps": 42_191_168, "v2up": 41_368_416}


@pytest.mark.parametrize("variant", ["pixelshuffle", "upsample"])
def test_tiny_configs_keep_official_key_names(variant):
    with torch.device("meta"):
        pairs = [
            (GradualStyleEncoder(PSPConfig.tiny()), GradualStyleEncoder()),
            (TriPlaneEncoder(TriPlaneEncoderConfig.tiny()), TriPlaneEncoder()),
            (TriPlaneEncoderV2(TriPlaneEncoderConfig.tiny(in_channels=9, variant=variant)),
             TriPlaneEncoderV2(TriPlaneEncoderConfig.v2(variant))),
        ]
    for tiny, full in pairs:
        assert list(tiny.state_dict()) == list(full.state_dict())
        assert sum(p.numel() for p in tiny.parameters()) < sum(p.numel() for p in full.parameters()) / 20


def test_tiny_encoders_output_shapes_and_residual_planes():
    torch.manual_seed(0)
    x = torch.randn(2, 3, 256, 256)
    psp = GradualStyleEncoder(PSPConfig.tiny(style_dim=24, n_styles=10)).eval()
    with torch.no_grad():
        assert psp(x).shape == (2, 10, 24)
    v1 = TriPlaneEncoder(TriPlaneEncoderConfig.tiny(plane_channels=12)).eval()
    with torch.no_grad():
        assert v1(torch.randn(1, 6, 256, 256)).shape == (1, 12, 256, 256)
    for variant in ("pixelshuffle", "upsample"):
        v2 = TriPlaneEncoderV2(TriPlaneEncoderConfig.tiny(in_channels=9, plane_channels=12, variant=variant)).eval()
        planes = torch.randn(1, 12, 256, 256)
        inp = torch.randn(1, 9, 256, 256)
        with torch.no_grad():
            refined = v2(inp, planes)
            assert refined.shape == planes.shape
            assert not torch.allclose(refined, planes)
            # The output is planes + head(...): a zero last conv returns the planes exactly.
            v2.final_head_two[4].weight.zero_()
            v2.final_head_two[4].bias.zero_()
            assert torch.equal(v2(inp, planes), planes)


def test_double_conv_has_two_prelus_and_up_concats_skip_first():
    enc = TriPlaneEncoder(TriPlaneEncoderConfig.tiny()).eval()
    dc = enc.up2.conv.double_conv
    assert [type(m).__name__ for m in dc] == ["BatchNorm2d", "Conv2d", "PReLU", "Conv2d", "PReLU", "PReLU"]
    # Skip first: the BatchNorm's first channels see the skip tensor, the rest the shuffled low-res map.
    seen = {}
    dc[0].register_forward_hook(lambda m, i, o: seen.setdefault("in", i[0]))
    low, skip = torch.randn(1, 64, 8, 8), torch.randn(1, 32, 16, 16)
    with torch.no_grad():
        enc.up2(low, skip)
    assert torch.equal(seen["in"][:, :32], skip)
    assert torch.equal(seen["in"][:, 32:], torch.nn.functional.pixel_shuffle(low, 2))


def test_run_body_taps_and_bad_tap():
    body = make_body(8).eval()
    with torch.no_grad():
        outs = run_body(body, torch.randn(1, 8, 64, 64), (2, 6, 20, 23))
    assert [tuple(o.shape[1:]) for o in outs] == [(8, 32, 32), (16, 16, 16), (32, 8, 8), (64, 4, 4)]
    with pytest.raises(ValueError, match="beyond the 24 units"):
        run_body(body, torch.randn(1, 8, 16, 16), (30,))


def test_bad_width_and_variant_are_rejected():
    with pytest.raises(ValueError, match="multiple of 8"):
        TriPlaneEncoder(TriPlaneEncoderConfig(width=12))
    with pytest.raises(ValueError, match="variant"):
        TriPlaneEncoderV2(TriPlaneEncoderConfig(in_channels=9, width=8, variant="bilinear"))  # type: ignore[arg-type]
