"""The one safe loader: what it reads, what it refuses, and that the reason comes from the file's structure."""
from __future__ import annotations

import io
import os
import pickle
import sys
import types
import zipfile

import pytest
import torch

from tests.weights.nvidia_pickle import Call, build_snapshot
from vidtriplane.weights.loader import CheckpointError, UnsafePickle, load_torch, pickled_globals, read_torch_file


def _legacy_bytes(obj) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf, _use_new_zipfile_serialization=False)
    return buf.getvalue()


@pytest.fixture
def reworded(monkeypatch):
    """torch.load whose UnpicklingError says nothing useful, as a later torch version might word it."""
    real = torch.load

    def load(*args, **kwargs):
        try:
            return real(*args, **kwargs)
        except pickle.UnpicklingError:
            raise pickle.UnpicklingError("something went wrong") from None

    monkeypatch.setattr(torch, "load", load)


@pytest.mark.parametrize("legacy", [False, True])
def test_zip_and_legacy_files_load_with_their_values(tmp_path, legacy):
    state = {"a": torch.arange(6.0).reshape(2, 3), "b": torch.tensor([7], dtype=torch.int64)}
    path = tmp_path / "w.pth"
    torch.save({"state_dict": state, "opts": {"n": 1}}, path, _use_new_zipfile_serialization=not legacy)
    obj = read_torch_file(path, kind="test")
    assert obj["opts"] == {"n": 1} and all(torch.equal(obj["state_dict"][k], v) for k, v in state.items())
    assert torch.equal(load_torch(path.read_bytes())["state_dict"]["a"], state["a"])  # bytes too


@pytest.mark.parametrize("legacy, torch_lists_them", [(False, True), (False, False), (True, False)])
def test_forbidden_global_is_named_whatever_torch_says(tmp_path, reworded, monkeypatch, legacy, torch_lists_them):
    if not torch_lists_them:  # torch < 2.5 has no get_unsafe_globals_in_checkpoint: our opcode scan names them
        monkeypatch.delattr(torch.serialization, "get_unsafe_globals_in_checkpoint", raising=False)
    marker = tmp_path / "ran"
    path = tmp_path / "hostile.pth"
    torch.save({"state_dict": {}, "opts": Call(os.system, (f"touch {marker}",))}, path,
               _use_new_zipfile_serialization=not legacy)
    with pytest.raises(UnsafePickle) as info:
        load_torch(path, kind="TriPlaneNet checkpoint")
    assert str(info.value).startswith(f"TriPlaneNet checkpoint file {path} holds pickled objects other than tensors "
                                      "and plain containers (posix.system); it was refused because loading it could "
                                      "run code, and nothing from it was executed.")
    assert isinstance(info.value, CheckpointError) and isinstance(info.value, ValueError)
    assert not marker.exists()


def test_html_error_page(tmp_path, reworded):
    path = tmp_path / "triplanenet_final.pth"
    path.write_bytes(b"\n  <!DOCTYPE html><html><head><title>Google Drive - Quota exceeded</title></head></html>")
    with pytest.raises(CheckpointError, match=r"triplanenet_final.pth is an HTML page, not a weight file: the "
                                              r"download site answered with a page") as info:
        load_torch(path)
    assert not isinstance(info.value, UnsafePickle)


def test_truncated_zip_archive(tmp_path, reworded):
    path = tmp_path / "full.pth"
    torch.save({"x": torch.ones(1000)}, path)
    cut = tmp_path / "cut.pth"
    cut.write_bytes(path.read_bytes()[:2000])
    with pytest.raises(CheckpointError, match=r"cut.pth is an incomplete zip archive \(2000 bytes, its end is "
                                              r"missing\): the download or copy was interrupted"):
        load_torch(cut)


def test_empty_file(tmp_path):
    path = tmp_path / "empty.pth"
    path.touch()
    with pytest.raises(CheckpointError, match=r"empty.pth is empty \(0 bytes\)"):
        load_torch(path)
    with pytest.raises(CheckpointError, match="does not exist"):
        load_torch(tmp_path / "absent.pth")


def test_nvidia_pickle_given_as_pth(tmp_path, reworded, monkeypatch):
    path = tmp_path / "ffhq512-128.pth"
    path.write_bytes(build_snapshot(tmp_path / "ran")[0])
    monkeypatch.setattr(torch, "load", lambda *a, **k: pytest.fail("refused from the structure, before torch.load"))
    with pytest.raises(CheckpointError, match=r"is an NVIDIA network pickle \(.pkl\), not a torch .pth file; add it "
                                              r"with `vidtriplane weights import eg3d-ffhq512-128-pkl PATH`"):
        load_torch(path, kind="EG3D")
    assert not (tmp_path / "ran").exists()


def test_text_and_damaged_pickles_are_unreadable_not_unsafe(tmp_path, reworded):
    text = tmp_path / "notes.pth"
    text.write_bytes(b"definitely not a torch file\nc os\nsystem\n" * 20)
    with pytest.raises(CheckpointError, match=r"not a readable torch file \(neither a zip archive nor a pickle: "
                                              r"it starts with b'definitely n'\)") as info:
        load_torch(text)
    assert not isinstance(info.value, UnsafePickle)
    damaged = tmp_path / "damaged.pth"
    damaged.write_bytes(_legacy_bytes({"x": torch.ones(3)})[:60])
    with pytest.raises(CheckpointError, match="not a readable torch file") as info:
        load_torch(damaged)
    assert not isinstance(info.value, UnsafePickle)


def test_legacy_storage_larger_than_the_file_is_refused_before_allocation(monkeypatch):
    data = _legacy_bytes(torch.zeros(2).untyped_storage())
    assert data.count(b"K\x08N") == 1  # the storage's declared size (8 bytes) in its persistent id
    huge = data.replace(b"K\x08N", b"\x8a\x06\x00\x00\x00\x00\x00\x01N")  # 2**40 bytes
    monkeypatch.setattr(torch, "load", lambda *a, **k: pytest.fail("refused from the structure, before torch.load"))
    with pytest.raises(CheckpointError, match=r"declares tensor storages of at least 1099511627776 bytes but holds "
                                              r"only 16 bytes of tensor data"):
        load_torch(huge, kind="tensor storage")


def test_easydict_builds_a_plain_dict(monkeypatch):
    module, util = types.ModuleType("dnnlib"), types.ModuleType("dnnlib.util")

    class EasyDict(dict):
        __module__ = "dnnlib.util"
        __qualname__ = "EasyDict"

    util.EasyDict, module.util = EasyDict, util
    monkeypatch.setitem(sys.modules, "dnnlib", module)
    monkeypatch.setitem(sys.modules, "dnnlib.util", util)
    data = io.BytesIO()
    torch.save({"init_kwargs": EasyDict(z_dim=512, rendering_kwargs=EasyDict(box_warp=1))}, data)
    monkeypatch.undo()
    loaded = load_torch(data.getvalue())["init_kwargs"]
    assert loaded == {"z_dim": 512, "rendering_kwargs": {"box_warp": 1}}
    assert type(loaded) is dict and type(loaded["rendering_kwargs"]) is dict


def test_pickled_globals_reads_names_without_running_anything(tmp_path):
    marker = tmp_path / "ran"
    data = pickle.dumps([Call(os.system, (f"touch {marker}",)), Call(eval, ("1",))], protocol=4)
    assert list(pickled_globals(io.BytesIO(data))) == ["posix.system", "builtins.eval"]
    data2 = pickle.dumps([Call(os.system, ("x",))], protocol=2)
    assert list(pickled_globals(io.BytesIO(data2))) == ["posix.system"]
    assert list(pickled_globals(io.BytesIO(b"c os\nsystem\n."))) == []  # protocol 0 is not read
    assert not marker.exists()


def test_zip_without_a_torch_payload(tmp_path):
    path = tmp_path / "other.pth"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("readme.txt", "hello")
    with pytest.raises(CheckpointError, match="other.pth is not a readable torch file"):
        load_torch(path)
