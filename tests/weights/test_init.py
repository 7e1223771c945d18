"""The weights package re-exports lazily: one submodule does not pull in the others (or torch)."""
from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import REPO


def _modules_after(statement: str) -> set[str]:
    code = f"import sys; {statement}; print(' '.join(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True,
                         env={"PYTHONPATH": str(REPO), "PATH": ""})
    return set(out.stdout.split())


def test_a_submodule_imports_only_what_it_needs():
    loaded = _modules_after("import vidtriplane.weights.store")
    assert {m for m in loaded if m.startswith("vidtriplane")} == {
        "vidtriplane", "vidtriplane.errors", "vidtriplane.paths", "vidtriplane.weights",
        "vidtriplane.weights.registry", "vidtriplane.weights.store"}
    assert "torch" not in loaded


def test_names_resolve_on_first_use():
    from vidtriplane import weights
    from vidtriplane.weights import api, registry

    assert weights.resolve is api.resolve and weights.REGISTRY is registry.REGISTRY
    assert sorted(weights.__all__) == weights.__all__ and "resolve" in dir(weights)
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        weights.nope  # noqa: B018
    loaded = _modules_after("from vidtriplane.weights import get_entry")
    assert "vidtriplane.weights.api" not in loaded and "torch" not in loaded
