"""LPIPS (AlexNet, v0.1): the definition computed independently, key names, strict loading of real files."""
from __future__ import annotations

import glob
import hashlib
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from vidtriplane.checkpoints import load_lpips
from vidtriplane.models.lpips import LPIPS, lpips_mean
from vidtriplane.models.state import StateDictMismatch
from vidtriplane.weights.registry import REGISTRY
from vidtriplane.weights.validate import ALEXNET_SHAPES, LPIPS_ALEX_SHAPES

LPIPS_WHEEL = "lpips==0.1.4"
ALEX_MEMBER = "lpips/weights/v0.1/alex.pth"


def _random_files(tmp_path: Path, seed: int = 0) -> tuple[Path, Path, dict, dict]:
    """An AlexNet file (features + a small stand-in classifier) and a linear-heads file, random."""
    g = torch.Generator().manual_seed(seed)
    alex = {k: torch.randn(s, generator=g) * 0.1 for k, s in ALEXNET_SHAPES.items() if k.startswith("features.")}
    alex["classifier.1.weight"] = torch.randn(4, 4, generator=g)  # ignored by the loader whatever its shape
    lins = {k: torch.rand(s, generator=g) for k, s in LPIPS_ALEX_SHAPES.items()}
    a, b = tmp_path / "alexnet.pth", tmp_path / "alex.pth"
    torch.save(alex, a)
    torch.save(lins, b)
    return a, b, alex, lins


def _direct_lpips(x: torch.Tensor, y: torch.Tensor, alex: dict, lins: dict) -> torch.Tensor:
    """The spec's definition, written out with plain torch ops (per image)."""
    shift = torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1)
    scale = torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1)

    def relus(t):
        t = (t - shift) / scale
        r1 = F.relu(F.conv2d(t, alex["features.0.weight"], alex["features.0.bias"], stride=4, padding=2))
        r2 = F.relu(F.conv2d(F.max_pool2d(r1, 3, 2), alex["features.3.weight"], alex["features.3.bias"], padding=2))
        r3 = F.relu(F.conv2d(F.max_pool2d(r2, 3, 2), alex["features.6.weight"], alex["features.6.bias"], padding=1))
        r4 = F.relu(F.conv2d(r3, alex["features.8.weight"], alex["features.8.bias"], padding=1))
        r5 = F.relu(F.conv2d(r4, alex["features.10.weight"], alex["features.10.bias"], padding=1))
        return [r1, r2, r3, r4, r5]

    out = torch.zeros(x.shape[0], dtype=torch.float64)
    for i, (fx, fy) in enumerate(zip(relus(x), relus(y))):
        nx = fx / (fx.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
        ny = fy / (fy.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
        w = lins[f"lin{i}.model.1.weight"].view(1, -1, 1, 1)
        out += ((nx - ny) ** 2 * w).sum(1).mean(dim=(1, 2)).double()
    return out


def test_lpips_equals_the_direct_definition(tmp_path):
    a, b, alex, lins = _random_files(tmp_path)
    model = load_lpips(a, b)
    g = torch.Generator().manual_seed(1)
    x = torch.rand(3, 3, 64, 80, generator=g) * 2 - 1
    y = (x + 0.3 * torch.randn(x.shape, generator=g)).clamp(-1, 1)
    with torch.no_grad():
        d = model(x, y)
    expected = _direct_lpips(x, y, alex, lins)
    assert d.shape == (3,)
    assert torch.allclose(d.double(), expected, rtol=1e-5, atol=1e-7), (d, expected)
    assert float(lpips_mean(model, x, y)) == pytest.approx(float(expected.mean()), rel=1e-5)
    # per-image: each distance is independent of the other images in the batch
    assert float(model(x[1:2], y[1:2])) == pytest.approx(float(expected[1]), rel=1e-5)


def test_lpips_is_zero_for_identical_images_and_grows_with_noise(tmp_path):
    a, b, _, _ = _random_files(tmp_path)
    model = load_lpips(a, b)
    g = torch.Generator().manual_seed(2)
    x = torch.rand(2, 3, 64, 64, generator=g) * 2 - 1
    noise = torch.randn(x.shape, generator=g)
    with torch.no_grad():
        assert torch.equal(model(x, x), torch.zeros(2))
        small, large = model(x, x + 0.05 * noise), model(x, x + 0.5 * noise)
    assert (small > 0).all() and (large > small).all()


def test_state_dict_keys_are_the_published_ones():
    with torch.device("meta"):
        sd = LPIPS().state_dict()
    expected = {"net." + k: v for k, v in ALEXNET_SHAPES.items() if k.startswith("features.")}
    expected.update(LPIPS_ALEX_SHAPES)
    assert {k: tuple(v.shape) for k, v in sd.items()} == expected


def test_loader_gradients_and_errors(tmp_path):
    a, b, _, lins = _random_files(tmp_path)
    model = load_lpips(a, b)
    assert not model.training and not any(p.requires_grad for p in model.parameters())
    x = torch.zeros(1, 3, 64, 64, requires_grad=True)
    lpips_mean(model, x, torch.rand(1, 3, 64, 64)).backward()
    assert x.grad is not None and x.grad.abs().sum() > 0  # the loss still differentiates w.r.t. the image
    bad = dict(lins, **{"lin2.model.1.weight": torch.zeros(1, 100, 1, 1)})
    torch.save(bad, tmp_path / "bad.pth")
    with pytest.raises(StateDictMismatch, match="lin2.model.1.weight"):
        load_lpips(a, tmp_path / "bad.pth")
    with pytest.raises(StateDictMismatch, match="missing key"):
        load_lpips(b, b)  # linear heads given as the AlexNet file
    with pytest.raises(ValueError, match=r"\[B, 3, H, W\]"):
        model(torch.zeros(1, 3, 64, 64), torch.zeros(1, 3, 64, 65))


def _lpips_wheel(tmp_path_factory) -> Path:
    """The lpips 0.1.4 wheel: $VIDTRIPLANE_LPIPS_WHEEL, /tmp/lp, or a fresh `pip download` (else skip)."""
    given = os.environ.get("VIDTRIPLANE_LPIPS_WHEEL")
    found = [given] if given else glob.glob("/tmp/lp/lpips-0.1.4-*.whl")
    if found and Path(found[0]).is_file():
        return Path(found[0])
    dest = tmp_path_factory.mktemp("lpips_wheel")
    try:
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q", LPIPS_WHEEL, "-d", str(dest)],
                       check=True, capture_output=True, timeout=120)
    except (subprocess.SubprocessError, OSError) as err:
        pytest.skip(f"cannot download the {LPIPS_WHEEL} wheel ({type(err).__name__})")
    wheels = list(dest.glob("lpips-*.whl"))
    if not wheels:
        pytest.skip(f"pip download of {LPIPS_WHEEL} produced no wheel")
    return wheels[0]


def test_real_alex_pth_loads_strictly(tmp_path, tmp_path_factory):
    with zipfile.ZipFile(_lpips_wheel(tmp_path_factory)) as wheel:
        data = wheel.read(ALEX_MEMBER)
    assert hashlib.sha256(data).hexdigest() == REGISTRY["lpips-alex-v0.1"].sha256
    real = tmp_path / "alex.pth"
    real.write_bytes(data)
    a, _, _, _ = _random_files(tmp_path)
    model = load_lpips(a, real)
    published = torch.load(real, map_location="cpu", weights_only=True)
    assert sorted(published) == sorted(LPIPS_ALEX_SHAPES)
    for i, head in enumerate(model.heads):
        assert torch.equal(head.model[1].weight, published[f"lin{i}.model.1.weight"])
    assert all((h.model[1].weight >= 0).all() for h in model.heads)  # LPIPS v0.1 heads are non-negative
