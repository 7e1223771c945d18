"""The preprocess task: a folder of videos gives one dataset folder per video, models loaded once, finished
datasets skipped; written under a temporary name and renamed."""
from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from tests.runners.media import face_clip
from vidtriplane.cli import main

pytest.importorskip("dlib")


def test_folder_of_videos_one_dataset_each_loaded_once_and_resumed(tmp_path, monkeypatch):
    from vidtriplane.stages import preprocess

    loads = []
    real = preprocess.load_models
    monkeypatch.setattr(preprocess, "load_models", lambda *a, **k: loads.append(k) or real(*a, **k))
    src = tmp_path / "talks"
    (src / "more").mkdir(parents=True)
    face_clip(src / "a.mp4", 4, size=(320, 240))
    face_clip(src / "more" / "b.mkv", 3, size=(320, 240))
    (src / "notes.txt").write_text("not a video")
    out = tmp_path / "data"
    args = ["preprocess", str(src), "-o", str(out), "--cache-dir", str(tmp_path / "cache"), "-q"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert not (out / "more").exists()  # without -r only the top folder
    result = CliRunner().invoke(main, [*args, "-r"])
    assert result.exit_code == 0, result.output
    assert sorted(p.relative_to(out).as_posix() for p in out.glob("**/dataset.json")) == [
        "a/dataset.json", "more/b/dataset.json"]
    for name, n in [("a", 4), ("more/b", 3)]:
        labels = json.loads((out / name / "dataset.json").read_text())["labels"]
        assert [f for f, _ in labels] == [f"{i:06d}.png" for i in range(n)] and all(len(v) == 25 for _, v in labels)
        assert json.loads((out / name / "preprocess.json").read_text())["frames"] == n
    assert len(loads) == 2  # once per run (the first run had a.mp4 only), not once per video
    assert not [p for p in out.rglob("*") if ".partial" in p.name]
    stamp = (out / "a" / "dataset.json").stat().st_mtime_ns
    result = CliRunner().invoke(main, [*args, "-r"])
    assert result.exit_code == 0 and len(loads) == 2  # everything finished: nothing loaded, nothing redone
    assert (out / "a" / "dataset.json").stat().st_mtime_ns == stamp


def test_a_broken_video_is_reported_and_the_others_finish(tmp_path):
    src = tmp_path / "talks"
    src.mkdir()
    face_clip(src / "good.mp4", 3, size=(320, 240))
    (src / "broken.mp4").write_bytes(b"garbage" * 40)
    out = tmp_path / "data"
    result = CliRunner().invoke(main, ["preprocess", str(src), "-o", str(out), "--no-cache", "-q"])
    assert result.exit_code == 1 and "broken.mp4" in result.stderr and "Traceback" not in result.stderr
    assert (out / "good" / "dataset.json").exists() and not (out / "broken").exists()
    report = json.loads((out / "vidtriplane-preprocess.report.json").read_text())
    assert [j["status"] for j in report["jobs"]] == ["failed", "done"] and "cannot read" in report["jobs"][0]["error"]


def test_a_folder_of_images_and_videos_is_refused(tmp_path):
    import cv2
    import numpy as np

    src = tmp_path / "mixed"
    src.mkdir()
    cv2.imwrite(str(src / "a.png"), np.zeros((8, 8, 3), np.uint8))
    face_clip(src / "b.mp4", 2, size=(320, 240))
    result = CliRunner().invoke(main, ["preprocess", str(src), "-o", str(tmp_path / "o")])
    assert result.exit_code == 2 and "both images and videos" in result.stderr
