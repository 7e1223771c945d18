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


MTCNN_WHEEL = "facenet_pytorch-2.6.0-py3-none-any.whl"


@pytest.fixture(scope="session")
def mtcnn_wheel(tmp_path_factory) -> Path:
    """The facenet-pytorch 2.6.0 wheel that carries the MTCNN weights ($VIDTRIPLANE_MTCNN_WHEEL, else
    ``pip download``); the test skips when neither works (offline)."""
    import subprocess
    import sys

    given = os.environ.get("VIDTRIPLANE_MTCNN_WHEEL")
    if given:
        return Path(given)
    folder = tmp_path_factory.mktemp("mtcnn-wheel")
    argv = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "facenet-pytorch==2.6.0", "-d", str(folder)]
    try:
        done = subprocess.run(argv, capture_output=True, timeout=180, check=False)
    except (OSError, subprocess.TimeoutExpired) as err:
        pytest.skip(f"cannot download the facenet-pytorch wheel for the MTCNN weights ({err})")
    wheel = folder / MTCNN_WHEEL
    if done.returncode != 0 or not wheel.is_file():
        pytest.skip("cannot download the facenet-pytorch wheel for the MTCNN weights (pip download failed)")
    return wheel


@pytest.fixture(scope="session")
def mtcnn_nets(mtcnn_wheel):
    """The real MTCNN networks (CPU, eval mode), read from the wheel without installing it."""
    from vidtriplane.models.mtcnn import MTCNN
    from vidtriplane.models.state import load_strict
    from vidtriplane.weights.mtcnn_files import read_source

    return load_strict(MTCNN(), read_source(mtcnn_wheel).state_dict, what="MTCNN").eval()
