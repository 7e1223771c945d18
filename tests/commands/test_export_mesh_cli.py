"""``vidtriplane export-mesh`` on the tiny model: the written mesh is the geometry module's, frames, messages."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from tests.io.media import make_video
from tests.train.test_data import make_dataset
from vidtriplane.cli import main
from vidtriplane.pipeline.dataset import read_image
from vidtriplane.config.render import ModelConfig
from vidtriplane.geometry.mesh import density_grid, extract_mesh, triplane_density
from vidtriplane.pipeline.build import build_generated
from vidtriplane.stages.invert import network_input

TINY = ["--weights", "generated", "--model-size", "tiny", "--eg3d", "", "--device", "cpu", "--resolution", "24"]


def cli(*args: str):
    return CliRunner().invoke(main, ["export-mesh", *args])


def read_ply(path) -> tuple[np.ndarray, np.ndarray]:
    data = path.read_bytes()
    header, body = data.split(b"end_header\n", 1)
    lines = header.decode().splitlines()
    nv = int(next(l for l in lines if l.startswith("element vertex")).split()[-1])
    nf = int(next(l for l in lines if l.startswith("element face")).split()[-1])
    verts = np.frombuffer(body[:12 * nv], "<f4").reshape(nv, 3)
    faces = np.frombuffer(body[12 * nv:], dtype=[("n", "u1"), ("idx", "<i4", (3,))], count=nf)
    return verts, faces["idx"]


@pytest.fixture(scope="module")
def net():
    return build_generated(ModelConfig(weights="generated", size="tiny", eg3d=""))


def planes_of(net, crop: np.ndarray, label: np.ndarray) -> torch.Tensor:
    x = network_input(crop[None], 64, torch.device("cpu"))
    with torch.no_grad():
        return net.encode(x, torch.from_numpy(label[None].astype(np.float32))).planes


def test_an_aligned_crop_with_its_label(tmp_path, net):
    make_dataset(tmp_path / "data", n=2, size=128)
    image = tmp_path / "data" / "000001.png"
    label = np.asarray(json.loads((tmp_path / "data" / "dataset.json").read_text())["labels"][1][1])
    planes = planes_of(net, read_image(image), label)
    grid = density_grid(triplane_density(planes, net.decoder.decoder, box_warp=1.0), resolution=24)
    level = float(np.median(grid))  # a level inside the density range: a non-empty surface
    result = cli(str(image), "-o", str(tmp_path / "head.ply"), *TINY, "--level", str(level))
    assert result.exit_code == 0, result.output
    verts, faces = read_ply(tmp_path / "head.ply")
    expected = extract_mesh(planes, net.decoder.decoder, box_warp=1.0, resolution=24, level=level)
    assert len(faces) > 0 and np.array_equal(faces, expected.faces)
    assert np.allclose(verts, expected.vertices, atol=1e-6)


def test_video_frames_give_one_mesh_each(tmp_path):
    clip = tmp_path / "in.mp4"
    make_video(clip, n_frames=4, width=64, height=64)
    result = cli(str(clip), "--frames", "2,0", "--aligned", "-o", str(tmp_path / "m.obj"), *TINY, "--level", "-1")
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in tmp_path.glob("m_*.obj")) == ["m_000000.obj", "m_000002.obj"]
    assert (tmp_path / "m_000000.obj").read_text().startswith("# vidtriplane shape:")
    result = cli(str(clip), "--frames", "1,9", "--aligned", "-o", str(tmp_path / "n.ply"), *TINY)
    assert result.exit_code == 2 and "has no frame(s) [9]" in result.output
    result = cli(str(clip), "--frames", "a", "--aligned", "-o", str(tmp_path / "n.ply"), *TINY)
    assert result.exit_code == 2 and "e.g. 0,10,20" in result.output


def test_messages(tmp_path):
    make_dataset(tmp_path / "data", n=1, size=32)
    image = tmp_path / "data" / "000000.png"
    assert "must end in .ply or .obj" in cli(str(image), "-o", str(tmp_path / "x.stl"), *TINY).output
    (tmp_path / "data" / "dataset.json").write_text('{"labels": []}')
    assert "has no label for 000000.png" in cli(str(image), "-o", str(tmp_path / "x.ply"), *TINY).output
    (tmp_path / "data" / "dataset.json").unlink()
    result = cli(str(image), "-o", str(tmp_path / "x.ply"), *TINY)
    assert result.exit_code == 2 and "there is no dataset.json beside it" in result.output


def test_existing_meshes_are_kept_without_overwrite(tmp_path):
    clip = tmp_path / "in.mp4"
    make_video(clip, n_frames=2, width=64, height=64)
    (tmp_path / "m_000001.obj").write_text("mine")
    args = [str(clip), "--frames", "0,1", "--aligned", "-o", str(tmp_path / "m.obj"), *TINY, "--level", "-1"]
    result = cli(*args)
    assert result.exit_code == 2 and "m_000001.obj already exists; pass --overwrite to replace it" in result.output
    assert (tmp_path / "m_000001.obj").read_text() == "mine" and not (tmp_path / "m_000000.obj").exists()
    result = cli(*args, "--overwrite")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "m_000001.obj").read_text().startswith("# vidtriplane shape:")
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []  # no temporary files left


@pytest.mark.parametrize("level", ["nan", "inf"])
def test_a_non_finite_level_is_a_usage_error(tmp_path, level):
    make_dataset(tmp_path / "data", n=1, size=32)
    result = cli(str(tmp_path / "data" / "000000.png"), "-o", str(tmp_path / "x.ply"), *TINY, "--level", level)
    assert result.exit_code == 2 and f"{level} is not a finite number" in result.stderr
    assert len(result.stderr.splitlines()) == 1 and not (tmp_path / "x.ply").exists()


def test_video_frames_through_the_face_preprocessing(tmp_path):
    sample = Path(__file__).resolve().parents[2] / "samples" / "astronaut.mp4"
    result = cli(str(sample), "--frames", "0,3", "-o", str(tmp_path / "a.ply"), *TINY, "--level", "-1")
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in tmp_path.glob("a_*.ply")) == ["a_000000.ply", "a_000003.ply"]
