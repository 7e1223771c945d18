"""Helpers for the TriPlaneNet parity tests (golden data in ../shared/parity, see its README).

The fill rule is imported from the shared folder with importlib (never copied). Every comparison
records ``max|ours - golden| / atol`` in ``REPORT`` so the worst ratio per output can be printed.
"""
from __future__ import annotations

import functools
import importlib.util
import json
from types import ModuleType

import torch

from tests.conftest import shared_path

SALT = "public-v1"
REPORT: dict[str, float] = {}


@functools.cache
def fill_rule() -> ModuleType:
    """The shared ``fill_rule.py`` module (skips the test when ../shared is absent)."""
    path = shared_path("parity", "fill_rule.py")
    spec = importlib.util.spec_from_file_location("vidtriplane_shared_fill_rule", path)
    module = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    spec.loader.exec_module(module)
    return module


@functools.cache
def golden() -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(shared_path("parity", "golden.safetensors")))


@functools.cache
def manifest() -> dict:
    return json.loads(shared_path("parity", "manifest.json").read_text())["arrays"]


def filled_state_dict(module: torch.nn.Module, prefix: str = "") -> dict[str, torch.Tensor]:
    """The deterministic fill for ``module``'s keys (named with ``prefix`` as in the official checkpoint),
    checked bit for bit against the shared fingerprints; keys returned without the prefix."""
    fr = fill_rule()
    spec = {prefix + k: (tuple(v.shape), v.dtype) for k, v in module.state_dict().items()}
    sd = fr.fill_state_dict(spec, SALT)
    mismatches = fr.fingerprint_mismatches(sd, str(shared_path("parity", "fill_fingerprint.json")))
    assert not mismatches, f"this torch does not reproduce the fill: {mismatches[:5]}"
    return {k[len(prefix):]: v for k, v in sd.items()}


def golden_latent_avg() -> torch.Tensor:
    return fill_rule().fill("latent_avg", (14, 512), torch.float32, SALT)


def check(name: str, ours: torch.Tensor, full: torch.Tensor | None = None) -> float:
    """Assert ``ours`` (already sliced like the stored array) is within the manifest atol of the golden
    array; when ``full`` is given also compare its mean/std with the manifest's full-tensor stats."""
    entry = manifest()[name]
    ref = golden()[name].float()
    assert tuple(ours.shape) == tuple(ref.shape), (name, tuple(ours.shape), tuple(ref.shape))
    atol = float(entry["atol"])
    err = (ours.detach().float().cpu() - ref).abs().max().item()
    REPORT[name] = max(REPORT.get(name, 0.0), err / atol)
    assert err <= atol, f"{name}: max abs diff {err:.3g} > atol {atol:.3g}"
    if full is not None:
        stats = entry["full_stats"]
        full = full.detach().double().cpu()
        assert abs(full.mean().item() - stats["mean"]) <= atol, (name, "mean", full.mean().item(), stats["mean"])
        assert abs(full.std().item() - stats["std"]) <= atol, (name, "std", full.std().item(), stats["std"])
    return err / atol
