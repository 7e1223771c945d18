"""``vidtriplane evaluate``: folders with known answers, name matching and its messages, a model on crops."""
from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from tests.train.test_data import make_dataset
from vidtriplane.eval.aligner import ID_ALIGNER_MISSING
from vidtriplane.cli import main


def cli(*args: str):
    return CliRunner().invoke(main, ["evaluate", *args])


@pytest.fixture(autouse=True)
def offline(tmp_path, monkeypatch):
    monkeypatch.setenv("VIDTRIPLANE_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("VIDTRIPLANE_OFFLINE", "1")


def write_images(folder, images: dict[str, np.ndarray]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name, img in images.items():
        Image.fromarray(img).save(folder / name)


@pytest.fixture
def faces():
    rng = np.random.default_rng(0)
    return {f"{i:02d}": rng.integers(20, 236, (256, 256, 3), dtype=np.uint8) for i in range(3)}


def test_identical_folders_score_perfectly(tmp_path, faces):
    write_images(tmp_path / "a", {f"{k}.png": v for k, v in faces.items()})
    write_images(tmp_path / "b", {f"{k}.png": v for k, v in faces.items()})
    result = cli("--pred", str(tmp_path / "a"), "--target", str(tmp_path / "b"), "-o", str(tmp_path / "out"))
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["count"] == 3 and metrics["mse"] == 0.0
    assert metrics["msssim"] == pytest.approx(1.0, abs=1e-6)
    assert metrics["lpips"] is None and "vidtriplane weights fetch alexnet" in metrics["missing"]["lpips"]
    assert metrics["id"] is None and metrics["missing"]["id"] == ID_ALIGNER_MISSING
    assert metrics["per_image"]["name"] == ["00", "01", "02"] and metrics["per_image"]["mse"] == [0.0] * 3
    assert "L2 (MSE)" in result.stdout and "MS-SSIM" in result.stdout


def test_a_known_noise_level_gives_its_mse(tmp_path, faces):
    """Every pixel off by +-12 levels: MSE on [-1, 1] = (2 * 12 / 255)^2, whatever the signs."""
    rng = np.random.default_rng(1)
    noisy = {k: (v.astype(int) + rng.choice([-12, 12], v.shape)).astype(np.uint8) for k, v in faces.items()}
    write_images(tmp_path / "pred", {f"{k}.png": v for k, v in noisy.items()})
    write_images(tmp_path / "target", {f"{k}.jpg" if k == "01" else f"{k}.png": v for k, v in faces.items()})
    # a JPEG target is lossy (random pixels compress badly): only its matching by name is checked
    result = cli("--pred", str(tmp_path / "pred"), "--target", str(tmp_path / "target"), "-o", str(tmp_path / "out"))
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    per = dict(zip(metrics["per_image"]["name"], metrics["per_image"]["mse"]))
    assert per["00"] == pytest.approx((24 / 255) ** 2, rel=1e-5) and per["02"] == pytest.approx((24 / 255) ** 2, rel=1e-5)
    assert set(per) == {"00", "01", "02"}  # 01.png matched 01.jpg
    assert 0.5 < metrics["msssim"] < 1.0


def test_unmatched_names_are_listed(tmp_path, faces):
    write_images(tmp_path / "a", {"00.png": faces["00"], "x.png": faces["01"]})
    write_images(tmp_path / "b", {"00.png": faces["00"], "y.png": faces["01"], "z.png": faces["02"]})
    result = cli("--pred", str(tmp_path / "a"), "--target", str(tmp_path / "b"), "-o", str(tmp_path / "out"))
    assert result.exit_code == 2
    assert "1 image(s) in --pred have no image of the same name in --target: x" in result.output
    assert "2 image(s) in --target have no image of the same name in --pred: y, z" in result.output
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("args, message", [
    (["--pred", "P"], "--pred and --target go together"),
    ([], "give DATA_DIR (aligned crops + dataset.json) with --weights, or --pred DIR --target DIR"),
    (["D", "--pred", "P", "--target", "T"], "not both"),
    (["--pred", "P", "--target", "T", "--weights", "generated"], "compare folders without one"),
])
def test_usage_messages(tmp_path, args, message):
    result = cli(*args, "-o", str(tmp_path / "out"))
    assert result.exit_code == 2 and message in result.output


def test_folders_that_are_missing_or_empty(tmp_path, faces):
    write_images(tmp_path / "a", {"00.png": faces["00"]})
    (tmp_path / "empty").mkdir()
    result = cli("--pred", str(tmp_path / "a"), "--target", str(tmp_path / "nope"), "-o", str(tmp_path / "o"))
    assert result.exit_code == 2 and "--target" in result.output and "is not a folder" in result.output
    result = cli("--pred", str(tmp_path / "a"), "--target", str(tmp_path / "empty"), "-o", str(tmp_path / "o"))
    assert result.exit_code == 2 and "holds no images" in result.output


def test_existing_metrics_are_kept_without_overwrite(tmp_path, faces):
    write_images(tmp_path / "a", {"00.png": faces["00"]})
    (tmp_path / "out" / "strips").mkdir(parents=True)
    (tmp_path / "out" / "strips" / "old.png").write_bytes(b"x")  # from an earlier --strips run
    (tmp_path / "out" / "metrics.json").write_text("{}")
    args = ["--pred", str(tmp_path / "a"), "--target", str(tmp_path / "a"), "-o", str(tmp_path / "out")]
    result = cli(*args)
    assert result.exit_code == 2 and "already holds metrics.json; pass --overwrite" in result.output
    assert (tmp_path / "out" / "metrics.json").read_text() == "{}"
    result = cli(*args, "--overwrite")
    assert result.exit_code == 0 and json.loads((tmp_path / "out" / "metrics.json").read_text())["count"] == 1
    assert not (tmp_path / "out" / "strips").exists()  # no strips of another run beside the new metrics


def test_an_unreadable_image_is_named(tmp_path, faces):
    write_images(tmp_path / "a", {"00.png": faces["00"]})
    write_images(tmp_path / "b", {"00.png": faces["00"]})
    (tmp_path / "a" / "01.png").write_bytes(b"not a png")
    write_images(tmp_path / "b", {"01.png": faces["01"]})
    result = cli("--pred", str(tmp_path / "a"), "--target", str(tmp_path / "b"), "-o", str(tmp_path / "out"))
    assert result.exit_code == 1
    assert result.stderr.splitlines()[-1:] == [f"vidtriplane: error: cannot read {tmp_path / 'a' / '01.png'} as an image "
                                          "(UnidentifiedImageError); replace it, or remove it together with the "
                                          "image of the same name in the other folder"]
    assert not (tmp_path / "out" / "metrics.json").exists()


def test_a_model_on_aligned_crops(tmp_path):
    make_dataset(tmp_path / "data", n=3, size=64)
    out = tmp_path / "out"
    result = cli(str(tmp_path / "data"), "--weights", "generated", "--model-size", "tiny", "--device", "cpu",
                 "-o", str(out), "--strips", "--yaw", "-0.4", "--yaw", "0.4", "--batch-size", "2",
                 "--set", "depth_samples=4", "--set", "importance_samples=4", "--set", "workers=0")
    assert result.exit_code == 0, result.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["count"] == 3 and metrics["mse"] > 0 and 0 < metrics["msssim"] < 1
    assert metrics["novel_view_id"] == {"per_yaw": {"-0.4": None, "0.4": None}, "mean": None}
    assert metrics["missing"]["novel_view_id"] == ID_ALIGNER_MISSING
    assert metrics["seconds_per_image"] > 0 and len(metrics["per_image"]["mse"]) == 3
    strips = sorted(p.name for p in (out / "strips").iterdir())
    assert strips == ["000000.png", "000001.png", "000002.png"]
    assert Image.open(out / "strips" / "000001.png").size == (4 * 64, 64)  # input | same | 2 novel views
    assert "novel-view ID, yaw (rad):   -0.4    0.4" in result.stdout


def test_bad_data_dir(tmp_path):
    (tmp_path / "data").mkdir()
    result = cli(str(tmp_path / "data"), "--weights", "generated", "--model-size", "tiny", "-o", str(tmp_path / "o"))
    assert result.exit_code == 2 and "DATA_DIR" in result.output and "has no dataset.json" in result.output
