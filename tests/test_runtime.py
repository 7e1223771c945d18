"""Process-wide settings in one place."""
from __future__ import annotations

import os

import torch

from vidtriplane import runtime


def test_configure_cpu(monkeypatch, tmp_path):
    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR", raising=False)
    monkeypatch.setenv("VIDTRIPLANE_HOME", str(tmp_path))
    threads = torch.get_num_threads()
    try:
        applied = runtime.configure("cpu", threads=1)
        assert applied["threads"] == 1 and torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(threads)
    assert applied["keep_memory"] is True  # glibc (Linux CI)
    assert applied["compile_cache"] == str(tmp_path / "inductor")
    assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == str(tmp_path / "inductor")
    assert "tf32" not in applied


def test_an_existing_compile_cache_is_kept(monkeypatch, tmp_path):
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "mine"))
    assert runtime.configure("cpu", keep_memory=False)["compile_cache"] == str(tmp_path / "mine")
