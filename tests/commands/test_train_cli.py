"""``vidtriplane train`` through the CLI: a tiny run, resume, refusals, bad data, and rendering its checkpoint."""
from __future__ import annotations

import json

import pytest
import yaml
from click.testing import CliRunner

from tests.io.media import make_video, probe
from tests.train.tiny import set_flags
from vidtriplane.cli import main
from vidtriplane.train.checkpoint import load

SHORT = set_flags("train.max_steps=3", "train.add_triplanenet=1", "train.val_every=3", "train.val_batches=1",
                  "train.image_every=2", "train.save_every=3")


def cli(*args: str):
    return CliRunner().invoke(main, list(args))


@pytest.fixture(autouse=True)
def offline(tmp_path, monkeypatch):
    """No weight file can be fetched: whatever runs here needs none."""
    monkeypatch.setenv("VIDTRIPLANE_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("VIDTRIPLANE_OFFLINE", "1")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    run = tmp_path_factory.mktemp("runs") / "tiny"
    result = cli("train", "-o", str(run), "--config", "train-tiny", "-q", *SHORT)
    assert result.exit_code == 0, result.output
    return run


def test_a_tiny_run_writes_its_folder(run_dir):
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [0, 1, 2] and rows[0]["loss_triplane"] is None
    assert rows[2]["loss"] == pytest.approx(rows[2]["loss_psp"] + rows[2]["loss_triplane"])
    assert sorted(p.name for p in (run_dir / "images").iterdir()) == ["step_0000000.png", "step_0000002.png"]
    assert yaml.safe_load((run_dir / "config.yaml").read_text())["train"]["max_steps"] == 3
    assert load(run_dir / "checkpoints" / "best.pt")["step"] == 3
    assert len((run_dir / "val.jsonl").read_text().splitlines()) == 1


def test_render_loads_the_trained_tiny_checkpoint(run_dir, tmp_path):
    clip = tmp_path / "in.mp4"
    make_video(clip, n_frames=3, width=64, height=64)
    out = tmp_path / "out.mp4"
    result = cli("render", str(clip), "-o", str(out), "--pipeline", "aligned", "--config", "generated-tiny",
                 "--weights", str(run_dir / "checkpoints" / "best.pt"), "--device", "cpu", "-q",
                 "--set", "render.depth_samples=4", "--set", "render.importance_samples=4",
                 "--set", "output.preset=ultrafast")
    assert result.exit_code == 0, result.output
    info = probe(out)
    assert info["n"] == 3 and info["size"] == (3 * 128, 128)  # input | same view | novel view
    assert yaml.safe_load((tmp_path / "out.config.yaml").read_text())["model"]["weights"].endswith("best.pt")


def test_resume_continues_and_refuses_another_model(run_dir, tmp_path):
    import shutil

    run = tmp_path / "copy"
    shutil.copytree(run_dir, run)
    result = cli("train", "--resume", str(run), "-q", "--set", "train.max_steps=5")
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [0, 1, 2, 3, 4]
    assert load(run / "checkpoints" / "last.pt")["step"] == 5
    refused = cli("train", "--resume", str(run), "--set", "model.version=2")
    assert refused.exit_code == 2 and "cannot change the model (variant pixelshuffle -> upsample, version 1 -> 2)" in refused.output
    assert "Traceback" not in refused.output
    refused = cli("train", "--resume", str(run), "--config", "train-tiny")
    assert refused.exit_code == 2 and "--set KEY=VALUE instead of --config" in refused.output


def test_a_new_config_into_an_old_run_folder_is_refused(run_dir):
    result = cli("train", "-o", str(run_dir), "--config", "train-tiny", *SHORT, "--set", "optim.lr_psp=0.5")
    assert result.exit_code == 2
    assert "already holds a run with another config (optim.lr_psp)" in result.output
    assert f"--resume {run_dir}" in result.output
    same = cli("train", "-o", str(run_dir), "--config", "train-tiny", *SHORT)  # the same command: resume, at the end
    assert same.exit_code == 0, same.output


def test_usage_errors():
    assert "give -o RUN_DIR for a new run" in cli("train", "--config", "train-tiny").output
    result = cli("train", "-o", "x", "--config", "render")
    assert result.exit_code == 2 and "is a render config, but this command expects a train config" in result.output


def test_bad_data_is_one_message_before_training(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    result = cli("train", "-o", str(tmp_path / "run"), "--config", "train-tiny", *SHORT,
                 "--set", "data.synthetic_ratio=0.5", "--set", f"data.dataset={data}")
    assert result.exit_code == 2
    assert f"{data} has no dataset.json" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "run" / "metrics.jsonl").exists()
    result = cli("train", "-o", str(tmp_path / "run"), "--config", "train-tiny", *SHORT, "--set", "data.synthetic_ratio=0.5")
    assert result.exit_code == 2 and "data.dataset is empty" in result.output


def test_dry_run_prints_the_resolved_config(tmp_path):
    result = cli("train", "-o", str(tmp_path / "run"), "--config", "train-v1", "--dry-run", "--batch-size", "8")
    assert result.exit_code == 0
    cfg = yaml.safe_load(result.stdout)
    assert cfg["train"]["batch_size"] == 8 and cfg["train"]["stop_psp"] == 500000 and cfg["model"]["init"] == "ir-se50"
    assert not (tmp_path / "run").exists()
    # training has no automatic batch size (render's --batch-size 0): refused as a usage error
    result = cli("train", "-o", str(tmp_path / "run"), "--config", "train-v1", "--dry-run", "--batch-size", "0")
    assert result.exit_code == 2 and "0 is not in the range 1<=x<=4096" in result.output
