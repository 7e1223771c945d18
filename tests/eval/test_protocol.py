"""The evaluation protocol: novel cameras, the ID path with a pluggable aligner, metrics.json and the table."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from tests.models.random_nets import random_face_embedder, random_lpips
from tests.train.test_data import make_dataset
from vidtriplane.config.evaluate import NOVEL_VIEW_YAWS, EvalConfig
from vidtriplane.config.render import ModelConfig
from vidtriplane.eval import protocol
from vidtriplane.eval.aligner import id_aligner
from vidtriplane.eval.face_align import faces_to_tensor
from vidtriplane.eval.metrics import MetricNets, id_similarity
from vidtriplane.geometry.camera import lookat_label, yaw_pitch
from vidtriplane.pipeline.build import build_generated
from vidtriplane.train.data import scan_dataset


def test_the_paper_yaws_and_settings():
    assert NOVEL_VIEW_YAWS == (-0.8, -0.6, -0.4, -0.2, 0.2, 0.4, 0.6, 0.8)
    assert EvalConfig().depth_samples == 96 and EvalConfig().importance_samples == 96 and EvalConfig().size == 256


def test_the_id_aligner_comes_from_the_mtcnn_weights_in_the_store(tmp_path, monkeypatch, mtcnn_wheel):
    from tests.stages.face_media import astronaut
    from vidtriplane.weights import import_file

    monkeypatch.setenv("VIDTRIPLANE_HOME", str(tmp_path))
    monkeypatch.setenv("VIDTRIPLANE_OFFLINE", "1")
    assert id_aligner() is None  # no weights: the ID metric is reported as missing
    import_file("mtcnn", mtcnn_wheel)
    align = id_aligner("cpu")
    faces, found = align(np.stack([astronaut(), np.zeros_like(astronaut())]))
    assert found.tolist() == [True, False] and tuple(faces.shape) == (2, 3, 112, 112)


def test_novel_cameras_are_absolute_yaws_with_the_input_intrinsics():
    c = lookat_label(0.3, 0.1)[None].float()
    c[0, 16] = 5.0  # another focal length
    novel = protocol.novel_camera(c, -0.4)
    yaw, pitch = yaw_pitch(novel)
    assert float(yaw) == pytest.approx(-0.4, abs=1e-5) and float(pitch) == pytest.approx(0.0, abs=1e-5)
    assert torch.equal(novel[0, 16:], c[0, 16:])


def center_aligner(images: np.ndarray):
    """A stand-in detector that 'finds' a face in every image and takes its centre square."""
    h, w = images.shape[1:3]
    crops = np.stack([np.asarray(torch.nn.functional.interpolate(
        torch.from_numpy(im).permute(2, 0, 1)[None].float(), size=(112, 112), mode="bilinear")[0]
        .permute(1, 2, 0).round().clamp(0, 255).to(torch.uint8)) for im in images])
    return faces_to_tensor(crops), np.ones(len(images), bool)


def test_id_runs_for_same_and_novel_views_with_an_aligner(tmp_path):
    make_dataset(tmp_path, n=3, size=64)
    net = build_generated(ModelConfig(weights="generated", size="tiny", eg3d=""))
    embedder = random_face_embedder()
    nets = MetricNets(lpips=random_lpips(), id_embedder=embedder, align=center_aligner)
    cfg = EvalConfig(yaws=(-0.4, 0.4), depth_samples=4, importance_samples=4, batch_size=2, workers=0)
    result = protocol.evaluate_model(net, scan_dataset(tmp_path), cfg, nets, torch.device("cpu"), label="tiny",
                                     progress=False)
    r = result.report
    assert r.count == 3 and r.id_count == 3 and -1 <= r.id <= 1 and r.lpips > 0 and not r.missing
    assert sorted(result.novel_id) == [-0.4, 0.4] and all(len(v) == 3 for v in result.novel_id.values())
    metrics = protocol.to_json(result)
    mean = np.mean([np.mean(result.novel_id[-0.4]), np.mean(result.novel_id[0.4])])
    assert metrics["novel_view_id"]["mean"] == pytest.approx(mean)
    # the same-view ID is the cosine of the two aligned faces' embeddings
    x = torch.stack([torch.zeros(3, 256, 256), torch.ones(3, 256, 256) * 0.5])
    sims = id_similarity(embedder, center_aligner, x, x)
    assert torch.allclose(sims, torch.ones(2), atol=1e-5)


def test_json_turns_nan_into_null_and_the_table_says_what_is_missing():
    from vidtriplane.eval.metrics import MetricReport

    report = MetricReport(count=2, mse=0.016, lpips=None, msssim=0.89, id=math.nan,
                          per_image={"mse": (0.01, 0.022), "msssim": (0.9, 0.88), "id": (math.nan, math.nan)},
                          missing={"lpips": "alex.pth"})
    ev = protocol.Evaluation(label="runs/v1/checkpoints/best.pt", report=report, names=["a", "b"], yaws=(-0.8, 0.8),
                             seconds_per_image=[0.07, 0.07])
    metrics = protocol.to_json(ev)
    assert metrics["id"] is None and metrics["per_image"]["id"] == [None, None]
    assert metrics["novel_view_id"] == {"per_yaw": {"-0.8": None, "0.8": None}, "mean": None}
    text = protocol.table(metrics)
    lines = text.splitlines()
    assert lines[0].split() == ["L2", "(MSE)", "LPIPS", "ID", "MS-SSIM", "time", "per", "image"]
    assert lines[1].split() == ["best.pt", "0.0160", "n/a", "n/a", "0.8900", "0.070", "s"]
    assert "lpips: not computed (alex.pth)" in text and "0.5 * cos + 0.5" in text


def test_duplicate_stems_are_refused(tmp_path):
    (tmp_path / "a").mkdir()
    for name in ("x.png", "x.jpg"):
        (tmp_path / "a" / name).write_bytes(b"")
    with pytest.raises(protocol.EvalInputError, match="two images named 'x'"):
        protocol.pair_folders(tmp_path / "a", tmp_path / "a")
