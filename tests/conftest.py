"""Shared test fixtures.

``../shared`` (beside the checkout) holds the parity data and fixtures; set ``VIDTRIPLANE_SHARED`` to
point elsewhere. Tests that need it skip with a clear reason when it is absent, so a standalone clone
still passes.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("VIDTRIPLANE_SHARED", REPO.parent / "shared"))


def shared_path(*parts: str) -> Path:
    """Path inside ../shared, or skip the calling test when it is not there."""
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"{path} is absent (the ../shared folder beside the checkout); set VIDTRIPLANE_SHARED")
    return path


def pytest_collection_modifyitems(config, items):
    import torch

    if torch.cuda.is_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs CUDA (no GPU here)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)
