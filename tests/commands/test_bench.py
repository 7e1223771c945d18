"""``vidtriplane bench`` model-only: the JSON schema and the table, on the tiny model (no OpenCV).
Other backends are checked against eager in tests/models (compiling them here would make this slow)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
KEYS = {"backend", "precision", "batch", "fps", "ms_per_frame", "peak_mem_bytes", "psnr_db_vs_eager_fp32"}


def test_bench_json_schema_on_the_tiny_model(tmp_path):
    out = tmp_path / "bench.json"
    code = (
        "import sys\n"
        "from vidtriplane.commands.bench import command\n"
        "try:\n"
        f"    command(['--model-size', 'tiny', '--model-only', '--device', 'cpu', '--backends', 'eager',\n"
        f"             '--precisions', 'fp32,bf16', '--batch-sizes', '1,2', '--samples', '6/6', '--warmup', '1',\n"
        f"             '--repeats', '2', '--json', {str(out)!r}])\n"
        "except SystemExit as e:\n"
        "    assert not e.code, e.code\n"
        "assert 'cv2' not in sys.modules, 'model-only bench imported OpenCV'\n"
    )
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    doc = json.loads(out.read_text())
    assert doc["device"].startswith("cpu")
    rows = doc["results"]
    assert [(r["backend"], r["precision"], r["batch"]) for r in rows] == [
        ("eager", p, n) for n in (1, 2) for p in ("fp32", "bf16")]
    for r in rows:
        assert KEYS <= set(r)
        assert r["fps"] > 0 and abs(r["ms_per_frame"] * r["fps"] - 1000) < 1e-6 * 1000
        assert r["ms_per_frame_median"] >= r["ms_per_frame"]
        assert r["peak_mem_bytes"] is None  # CPU
        if (r["backend"], r["precision"]) == ("eager", "fp32"):
            assert r["psnr_db_vs_eager_fp32"] is None  # the reference itself
        else:
            assert 30 < r["psnr_db_vs_eager_fp32"] < 200
    table = [line for line in proc.stdout.splitlines() if line.startswith("|")]
    assert len(table) == 2 + len(rows) and "| eager | bf16 | 2 | 6/6 |" in proc.stdout


def test_bench_end_to_end_rows_render_the_whole_pipeline(tmp_path):
    from click.testing import CliRunner

    from vidtriplane.cli import main

    out = tmp_path / "e2e.json"
    result = CliRunner().invoke(main, [
        "bench", "--model-size", "tiny", "--device", "cpu", "--backends", "eager", "--precisions", "fp32",
        "--batch-sizes", "2", "--samples", "6/6", "--warmup", "1", "--repeats", "1", "--frames", "3",
        "--set", "render.neural_rendering_resolution=16", "--set", "render.size=64", "--set", "composite.tile=64",
        "--json", str(out)])
    assert result.exit_code == 0, result.output
    rows = json.loads(out.read_text())["end_to_end"]
    assert [(r["batch"], r["samples"], r["frames"]) for r in rows] == [(2, "6/6", 3)]
    assert rows[0]["fps"] > 0 and abs(rows[0]["ms_per_frame"] * rows[0]["fps"] - 1000) < 1e-6


def test_bench_refuses_a_missing_cuda_device():
    from click.testing import CliRunner

    import torch

    from vidtriplane.cli import main

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    result = CliRunner().invoke(main, ["bench", "--model-size", "tiny", "--device", "cuda", "--model-only"])
    assert result.exit_code == 1 and "CUDA is not available" in result.stderr and "Traceback" not in result.stderr
