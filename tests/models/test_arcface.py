"""ArcFace IR-SE-50 and CurricularFace IR-101: published key/shape layout, forward, loading."""
from __future__ import annotations

import json

import pytest
import torch

from tests.conftest import shared_path
from tests.models.random_nets import random_face_embedder
from vidtriplane.checkpoints import load_face_embedder
from vidtriplane.models.arcface import FaceEmbedder, FaceEmbedderConfig
from vidtriplane.models.state import StateDictMismatch


def _shapes(config: FaceEmbedderConfig) -> dict[str, tuple[int, ...]]:
    with torch.device("meta"):
        return {k: tuple(v.shape) for k, v in FaceEmbedder(config).state_dict().items()}


def _bn(prefix: str, n: int, affine: bool = True) -> dict[str, tuple[int, ...]]:
    out = {f"{prefix}.weight": (n,), f"{prefix}.bias": (n,)} if affine else {}
    out.update({f"{prefix}.running_mean": (n,), f"{prefix}.running_var": (n,), f"{prefix}.num_batches_tracked": ()})
    return out


# The output head of both published files: BN2d(512) -> Dropout -> Flatten -> Linear(25088, 512) -> BN1d(512).
def _head(affine: bool) -> dict[str, tuple[int, ...]]:
    return {**_bn("output_layer.0", 512), "output_layer.3.weight": (512, 512 * 7 * 7), "output_layer.3.bias": (512,),
            **_bn("output_layer.4", 512, affine)}


def test_ir_se50_layout_is_the_psp_trunk_plus_the_arcface_head():
    shapes = _shapes(FaceEmbedderConfig.ir_se50())
    # 7 stem + 24 units x 15 (BN, conv, PReLU, conv, BN, SE fc1/fc2) + 3 conv shortcuts x 6 + 12 head
    assert len(shapes) == 7 + 24 * 15 + 3 * 6 + 12
    head = {k: v for k, v in shapes.items() if k.startswith("output_layer.")}
    assert head == _head(affine=True)
    manifest = json.loads(shared_path("spec", "official_state_dict_manifest.json").read_text())["psp_encoder"]
    trunk = {k: tuple(v["shape"]) for k, v in manifest.items() if k.startswith(("input_layer.", "body."))}
    assert {k: v for k, v in shapes.items() if not k.startswith("output_layer.")} == trunk


def test_ir101_layout():
    shapes = _shapes(FaceEmbedderConfig.ir101())
    # 7 stem + 49 plain IR units x 13 + 3 conv shortcuts x 6 + 10 head (the last BN has no affine terms)
    assert len(shapes) == 7 + 49 * 13 + 3 * 6 + 10
    assert {k: v for k, v in shapes.items() if k.startswith("output_layer.")} == _head(affine=False)
    units = {int(k.split(".")[1]) for k in shapes if k.startswith("body.")}
    assert units == set(range(49))
    assert not any(".res_layer.5." in k for k in shapes)  # no SE gates
    # stage boundaries 3 / 13 / 30 / 3: channel-changing units have a conv shortcut
    shortcuts = sorted(int(k.split(".")[1]) for k in shapes if k.endswith("shortcut_layer.0.weight"))
    assert shortcuts == [3, 16, 46]
    assert shapes["body.3.shortcut_layer.0.weight"] == (128, 64, 1, 1)
    assert shapes["body.16.res_layer.3.weight"] == (256, 256, 3, 3)
    assert shapes["body.46.res_layer.1.weight"] == (512, 256, 3, 3)
    assert shapes["body.48.res_layer.4.running_var"] == (512,)
    assert shapes["input_layer.0.weight"] == (64, 3, 3, 3)


@pytest.mark.parametrize("se,affine", [(True, True), (False, False)], ids=["ir-se", "ir"])
def test_forward_gives_deterministic_unit_embeddings(se, affine):
    net = random_face_embedder(FaceEmbedderConfig.tiny(se=se, affine_output=affine))
    x = torch.rand(3, 3, 112, 112) * 2 - 1
    net.eval()
    with torch.no_grad():
        e1, e2 = net(x), net(x)
    assert e1.shape == (3, 32)
    assert torch.equal(e1, e2)
    assert torch.allclose(e1.norm(dim=1), torch.ones(3), atol=1e-6)
    assert not torch.allclose(e1[0], e1[1])  # different images, different embeddings
    with torch.no_grad():
        alone = net(x[1:2])
    assert torch.allclose(alone[0], e1[1], atol=1e-6)  # eval mode: no batch dependence
    net.train()
    with torch.no_grad():
        assert not torch.allclose(net(x), e1)  # dropout and batch statistics act in train mode


def test_full_size_forward_shape():
    net = FaceEmbedder(FaceEmbedderConfig.ir_se50()).eval()
    with torch.no_grad():
        e = net(torch.zeros(1, 3, 112, 112).uniform_(-1, 1))
    assert e.shape == (1, 512)
    assert float(e.norm()) == pytest.approx(1.0, abs=1e-5)
    with pytest.raises(ValueError, match=r"\[B, 3, 112, 112\]"):
        net(torch.zeros(1, 3, 256, 256))


def test_loader_round_trip_and_mismatch(tmp_path):
    cfg = FaceEmbedderConfig.tiny(se=False, affine_output=False)
    torch.manual_seed(3)
    src = FaceEmbedder(cfg).eval()
    torch.save(src.state_dict(), tmp_path / "ir.pth")
    loaded = load_face_embedder(tmp_path / "ir.pth", cfg)
    assert not loaded.training and not any(p.requires_grad for p in loaded.parameters())
    x = torch.rand(2, 3, 112, 112) * 2 - 1
    with torch.no_grad():
        assert torch.equal(loaded(x), src(x))
    with pytest.raises(StateDictMismatch, match="output_layer.4.weight"):
        load_face_embedder(tmp_path / "ir.pth", FaceEmbedderConfig.tiny(se=False, affine_output=True))
    with pytest.raises(StateDictMismatch, match="fc1"):
        load_face_embedder(tmp_path / "ir.pth", FaceEmbedderConfig.tiny(se=True, affine_output=False))
