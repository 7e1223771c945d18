"""The 'mtcnn' weights: import of the facenet-pytorch wheel, its .pt files or a folder; fetch; errors."""
from __future__ import annotations

import zipfile
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from tests.weights.conftest import cache, send_file, server  # noqa: F401 - fixtures
from tests.weights.test_api import files_in, local_registry
from vidtriplane.checkpoints import load_mtcnn
from vidtriplane.cli import main
from vidtriplane.models import mtcnn
from vidtriplane.weights import REGISTRY, WeightsMissing, fetch, import_file, resolve, verify
from vidtriplane.weights import mtcnn_files, validate
from vidtriplane.weights.validate import InvalidWeights

WHEEL = REGISTRY["mtcnn"].filename


def random_nets(seed: int = 0) -> dict[str, dict[str, torch.Tensor]]:
    """Random state_dicts with the published key names and shapes."""
    gen = torch.Generator().manual_seed(seed)
    return {name: {k: torch.randn(v.shape, generator=gen) for k, v in getattr(mtcnn.MTCNN(), name).state_dict().items()}
            for name in mtcnn.NETS}


def write_pt(folder: Path, nets) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, sd in nets.items():
        torch.save(sd, folder / f"{name}.pt")
    return folder


def write_wheel(path: Path, nets, members=mtcnn.NETS) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w") as whl:
        whl.writestr("facenet_pytorch/__init__.py", "")
        for name in members:
            whl.write(write_pt(path.parent / "pt", nets) / f"{name}.pt", f"facenet_pytorch/data/{name}.pt")
    return path


def assert_stored(nets):
    net = load_mtcnn(resolve("mtcnn", offline=True))
    for name, sd in nets.items():
        for k, v in sd.items():
            assert torch.equal(getattr(net, name).state_dict()[k], v), (name, k)


def test_expected_shapes_and_coarse_fallback():
    shapes = validate.expected_shapes("mtcnn")
    assert len(shapes) == 50 and shapes["onet.dense6_3.weight"] == (10, 256)
    state = {f"{n}.{k}": v for n, sd in random_nets().items() for k, v in sd.items()}
    assert "50 tensors" in validate.validate_object("mtcnn", state).summary
    # the coarse check (when the models cannot be built) accepts the same file and catches a count error
    validate.validate_object("mtcnn", state, expectations=lambda part: None)
    del state["rnet.prelu4.weight"]
    with pytest.raises(InvalidWeights, match="mtcnn_rnet: 15 entries"):
        validate.validate_object("mtcnn", state, expectations=lambda part: None)


def test_coarse_table_agrees_with_the_model():
    # the coarse fallback states facts about facenet-pytorch's files; our networks have the same layout
    for part, (count, anchors) in validate._COARSE_MTCNN.items():
        shapes = validate.model_shapes(part)
        assert len(shapes) == count and all(shapes[k] == v for k, v in anchors.items()), part


def test_import_the_wheel(cache, tmp_path):
    nets = random_nets()
    result = import_file("mtcnn", write_wheel(tmp_path / WHEEL, nets))
    assert result.path == cache / "mtcnn" / "mtcnn.pt"
    assert "50 tensors (from wheel)" in result.report.summary
    # random tensors: the wheel's and each member's checksums differ from the published ones, but it fits
    assert sum("published file's" in w for w in result.report.warnings) == 4
    assert_stored(nets)
    assert [r.state for r in verify("mtcnn")] == ["ok"]


@pytest.mark.parametrize("how", ["one .pt file", "folder", "converted"])
def test_import_the_unpacked_files(cache, tmp_path, how):
    nets = random_nets(1)
    folder = write_pt(tmp_path / "data", nets)
    if how == "one .pt file":
        source = folder / "onet.pt"
    elif how == "folder":
        source = folder
    else:
        source = tmp_path / "mtcnn.pt"
        torch.save({f"{n}.{k}": v for n, sd in nets.items() for k, v in sd.items()}, source)
    result = import_file("mtcnn", source)
    assert result.report.summary.startswith("MTCNN P/R/O-net: 50 tensors")
    assert not any("differs from the published file's (ecb8" in w for w in result.report.warnings)
    assert_stored(nets)


def test_broken_sources_are_refused(cache, tmp_path):
    nets = random_nets()
    nets["onet"]["dense6_3.weight"] = torch.zeros(8, 256)
    with pytest.raises(InvalidWeights, match=r"dense6_3.weight \(checkpoint \[8, 256\] vs model \[10, 256\]\)"):
        import_file("mtcnn", write_wheel(tmp_path / WHEEL, nets))
    with pytest.raises(InvalidWeights, match="missing rnet.pt"):
        import_file("mtcnn", write_wheel(tmp_path / "w" / WHEEL, random_nets(), members=("pnet", "onet")))
    lonely = tmp_path / "lonely"
    write_pt(lonely, {"pnet": random_nets()["pnet"]})
    with pytest.raises(InvalidWeights, match="lacks rnet.pt, onet.pt"):
        import_file("mtcnn", lonely / "pnet.pt")
    other = tmp_path / "other.pt"
    torch.save({"weight": torch.zeros(3)}, other)
    with pytest.raises(InvalidWeights, match="neither the facenet-pytorch wheel"):
        import_file("mtcnn", other)
    fake = tmp_path / "fake.whl"  # a zip that is neither the wheel nor a torch archive
    with zipfile.ZipFile(fake, "w") as archive:
        archive.writestr("README", "hello")
    with pytest.raises(InvalidWeights, match=r"fake\.whl is neither the facenet-pytorch wheel \(facenet_pytorch-2\.6\.0"):
        import_file("mtcnn", fake)
    assert not (cache / "mtcnn" / "mtcnn.pt").exists()


def test_fetch_downloads_and_converts_the_wheel(cache, server, tmp_path):
    nets = random_nets(2)
    data = write_wheel(tmp_path / WHEEL, nets).read_bytes()
    server.routes["/mtcnn"] = lambda h, q: send_file(h, data)
    result = fetch("mtcnn", registry=local_registry(server), progress=False)
    assert result.path == cache / "mtcnn" / "mtcnn.pt" and files_in(cache / "mtcnn") == ["mtcnn.pt", "source.json"]
    assert_stored(nets)


def test_offline_message_names_the_wheel_and_the_import_command(cache):
    with pytest.raises(WeightsMissing) as info:
        resolve("mtcnn", offline=True)
    text = str(info.value)
    assert f"vidtriplane weights import mtcnn /path/to/{WHEEL}" in text
    assert "pip download --no-deps facenet-pytorch==2.6.0" in text and "MIT" in text
    assert "files.pythonhosted.org" in text


def test_cli_import(cache, tmp_path):
    nets = random_nets(3)
    wheel = write_wheel(tmp_path / WHEEL, nets)
    result = CliRunner().invoke(main, ["weights", "import", "mtcnn", str(wheel)], catch_exceptions=False)
    assert result.exit_code == 0 and "stored as mtcnn.pt" in result.output
    assert_stored(nets)
    again = CliRunner().invoke(main, ["weights", "import", "mtcnn", str(wheel)], catch_exceptions=False)
    assert again.exit_code == 1 and "--force" in again.output
    # a folder with the three unpacked files
    other = random_nets(4)
    folder = write_pt(tmp_path / "data", other)
    result = CliRunner().invoke(main, ["weights", "import", "--force", "mtcnn", str(folder)], catch_exceptions=False)
    assert result.exit_code == 0 and "50 tensors (from files), stored as mtcnn.pt" in result.output
    assert_stored(other)
    # other entries still take files only
    result = CliRunner().invoke(main, ["weights", "import", "lpips-alex-v0.1", str(folder)])
    assert result.exit_code == 1 and f"{folder} does not exist or is not a file" in result.output
    assert "Traceback" not in result.output


def test_the_real_wheel(cache, mtcnn_wheel):
    result = import_file("mtcnn", mtcnn_wheel)
    assert result.report.warnings == ()  # the wheel and all three members match the pinned sha256
    assert result.published_sha256 == REGISTRY["mtcnn"].sha256
    found = mtcnn_files.read_source(mtcnn_wheel)
    assert found.member_sha256 == REGISTRY["mtcnn"].extra["members"]
    load_mtcnn(result.path)
