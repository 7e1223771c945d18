"""The NVIDIA .pkl reader executes nothing: hostile pickles are rejected, persistent networks are read as data."""
from __future__ import annotations

import io
import os
import pickle
import subprocess

import pytest
import torch

from tests.weights.nvidia_pickle import Call, build_snapshot, storage_bytes, tensor_pickle
from vidtriplane import checkpoints
from vidtriplane.weights import pickle_safe
from vidtriplane.weights.pickle_safe import PickleFormatError, UnsafePickle, read_nvidia_pickle, safe_load


def _assert_rejected(data: bytes, marker, needle: str) -> None:
    with pytest.raises(UnsafePickle) as info:
        safe_load(data)
    assert needle in str(info.value)
    assert not marker.exists(), "the hostile pickle ran code"


def test_control_plain_pickle_would_run_the_command(tmp_path):
    """Sanity check of the hostile payload itself: an ordinary unpickler does create the marker."""
    marker = tmp_path / "ran"
    pickle.loads(pickle.dumps(Call(os.system, (f"touch {marker}",))))
    assert marker.exists()


def test_os_system_is_rejected(tmp_path):
    marker = tmp_path / "ran"
    _assert_rejected(pickle.dumps(Call(os.system, (f"touch {marker}",))), marker, "system")


def test_eval_and_subprocess_are_rejected(tmp_path):
    marker = tmp_path / "ran"
    code = f"__import__('pathlib').Path({str(marker)!r}).write_text('x')"
    _assert_rejected(pickle.dumps(Call(eval, (code,))), marker, "builtins.eval")
    _assert_rejected(pickle.dumps(Call(subprocess.Popen, (["touch", str(marker)],))), marker, "subprocess.Popen")


def test_hostile_object_hidden_inside_a_network_is_rejected(tmp_path):
    marker = tmp_path / "ran"
    data, _ = build_snapshot(tmp_path / "src_ran", extra={"deep": [Call(os.system, (f"touch {marker}",))]})
    path = tmp_path / "net.pkl"
    path.write_bytes(data)
    with pytest.raises(UnsafePickle, match="system"):
        read_nvidia_pickle(path)
    assert not marker.exists() and not (tmp_path / "src_ran").exists()


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_hostile_payload_inside_tensor_storage_bytes_is_rejected(tmp_path):
    marker = tmp_path / "ran"
    evil = pickle.dumps(Call(os.system, (f"touch {marker}",)))
    data = pickle.dumps(Call(torch.storage._load_from_bytes, (evil,)))
    with pytest.raises(UnsafePickle, match="storage"):
        safe_load(data)
    assert not marker.exists()


def test_tensor_rebuild_with_fake_storage_is_refused():
    data = pickle.dumps(Call(torch._utils._rebuild_tensor_v2, ("not a storage", 0, (1,), (1,), False, None)))
    with pytest.raises(PickleFormatError, match="storage"):
        safe_load(data)


@pytest.mark.filterwarnings("ignore:TypedStorage is deprecated")
def test_tensor_larger_than_its_storage_is_refused_before_allocation(monkeypatch):
    """A ~400-byte pickle of allowed globals only asking for a 2**40-element view of a 2-element storage."""
    data = tensor_pickle(0, (1 << 40,), (1,))
    assert len(data) < 450
    grown = []
    monkeypatch.setattr(torch._utils, "_rebuild_tensor", lambda *args: grown.append(args))
    with pytest.raises(PickleFormatError, match=r"size \[1099511627776\], stride \[1\] at offset 0 reaches past "
                                                r"its storage of 2 elements"):
        safe_load(data)
    assert grown == []  # torch's rebuild (which would grow the storage) was never reached


@pytest.mark.filterwarnings("ignore:TypedStorage is deprecated")
@pytest.mark.parametrize("offset, size, stride", [
    (2, (1,), (1,)),           # offset at the end
    (0, (2, 2), (2, 1)),       # 4 elements from 2
    (1, (2,), (1,)),           # one past the end
    (0, (2,), (-1,)),          # negative stride
    (-1, (1,), (1,)),          # negative offset
    (0, (2, 1), (1,)),         # size and stride of different lengths
    (0, (2.0,), (1,)),         # not ints
])
def test_malformed_tensor_layouts_are_format_errors(offset, size, stride):
    with pytest.raises(PickleFormatError):
        safe_load(tensor_pickle(offset, size, stride))


@pytest.mark.filterwarnings("ignore:TypedStorage is deprecated")
def test_tensor_views_that_fit_are_rebuilt():
    storage = storage_bytes(6)
    assert safe_load(tensor_pickle(1, (2, 2), (2, 1), storage))["G_ema"].shape == (2, 2)
    assert safe_load(tensor_pickle(6, (0,), (1,), storage))["G_ema"].numel() == 0
    assert safe_load(tensor_pickle(0, (3,), (0,), storage))["G_ema"].tolist() == [0.0, 0.0, 0.0]


@pytest.mark.filterwarnings("ignore:TypedStorage is deprecated")
def test_storage_declaring_more_than_its_bytes_is_refused():
    data = storage_bytes(2)
    assert data.count(b"K\x02N") == 1  # numel in the storage's persistent id
    huge = data.replace(b"K\x02N", b"\x8a\x06\x00\x00\x00\x00\x00\x01N")
    with pytest.raises(PickleFormatError, match="declares tensor storages of at least 1099511627776 bytes"):
        safe_load(pickle.dumps(Call(torch.storage._load_from_bytes, (huge,)), protocol=4))


def test_allocating_constructors_are_refused():
    import numpy as np

    try:
        from numpy._core import multiarray
    except ImportError:  # numpy < 2
        from numpy.core import multiarray
    with pytest.raises(UnsafePickle, match="latin1"):  # bytearray(n) would allocate n zero bytes
        safe_load(pickle.dumps(Call(bytearray, (1 << 40,)), protocol=2))
    assert safe_load(pickle.dumps(bytearray(b"ab"), protocol=2)) == bytearray(b"ab")
    scalar = Call(multiarray.scalar, (np.dtype("f8"), 1 << 40))  # bytes(n) would allocate
    with pytest.raises(PickleFormatError, match="numpy scalar without its bytes"):
        safe_load(pickle.dumps(scalar, protocol=2))
    empty = Call(multiarray._reconstruct, (np.ndarray, (1 << 40,), b"b"))
    with pytest.raises(PickleFormatError, match="numpy array reconstructed with shape"):
        safe_load(pickle.dumps(empty, protocol=2))
    assert safe_load(pickle.dumps(np.arange(3.0), protocol=2)).tolist() == [0.0, 1.0, 2.0]


def test_module_tree_with_non_tensor_parameters_is_a_format_error():
    meta = {"type": "class", "version": 6, "module_src": "", "class_name": "TriPlaneGenerator",
            "state": {"_parameters": {"w": "not a tensor"}, "_buffers": {}, "_modules": {}}}
    record = pickle_safe._record_persistent(meta)
    with pytest.raises(PickleFormatError, match="w is a str, not a tensor"):
        pickle_safe.extract_network(record)
    meta["state"]["_parameters"] = ["w"]
    with pytest.raises(PickleFormatError, match="_parameters is a list, not a mapping of names"):
        pickle_safe.extract_network(pickle_safe._record_persistent(meta))


def test_torch_save_file_is_not_taken_for_a_pkl(tmp_path):
    path = tmp_path / "x.pth"
    torch.save({"a": torch.zeros(2)}, path)
    with pytest.raises(PickleFormatError, match="zip"):
        read_nvidia_pickle(path)


def test_a_file_that_is_no_pickle_is_named(tmp_path):
    path = tmp_path / "notes.pkl"
    path.write_text("forty-two")
    with pytest.raises(PickleFormatError, match=r"notes\.pkl is not an NVIDIA network snapshot \.pkl: not a "
                                                r"readable pickle: UnpicklingError"):
        read_nvidia_pickle(path)


@pytest.mark.parametrize("protocol", [2, 4])
def test_reads_nvidia_network_without_running_its_source(tmp_path, protocol):
    marker = tmp_path / "src_ran"
    data, g_ema = build_snapshot(marker, protocol=protocol)
    path = tmp_path / "ffhq512-128.pkl"
    path.write_bytes(data)

    net = read_nvidia_pickle(path)

    assert not marker.exists()
    expected = g_ema.state_dict()
    assert list(net.state_dict) == list(expected)  # official names, torch's order, no non-persistent buffer
    assert "backbone.synthesis.scratch" not in net.state_dict
    for key, value in expected.items():
        assert torch.equal(net.state_dict[key], value), key
        assert type(net.state_dict[key]) is torch.Tensor
    cfg = net.config
    assert cfg["class_name"] == "TriPlaneGenerator"
    kwargs = cfg["init_kwargs"]
    assert kwargs["mapping_kwargs"] == {"num_layers": 2} and kwargs["z_dim"] == 512 and kwargs["conv_clamp"] is None
    assert kwargs["rendering_kwargs"]["box_warp"] == 1.0 and kwargs["shape"] == [1, 2]
    assert cfg["attributes"]["neural_rendering_resolution"] == 128
    assert "plane_axes" not in cfg["attributes"]


def test_converted_round_trip(tmp_path):
    data, g_ema = build_snapshot(tmp_path / "src_ran")
    path = tmp_path / "net.pkl"
    path.write_bytes(data)
    net = read_nvidia_pickle(path)
    dest = tmp_path / "out" / "net.safetensors"
    dest.parent.mkdir()
    checkpoints.save_converted(net, dest, provenance={"url": "x"})
    back = checkpoints.read_converted(dest)
    assert back.config["init_kwargs"] == net.config["init_kwargs"] and back.config["provenance"] == {"url": "x"}
    assert sorted(p.name for p in dest.parent.iterdir()) == ["net.json", "net.safetensors"]
    as_pth = checkpoints.converted_as_eg3d_pth(dest)
    assert torch.equal(as_pth["latent_avg"], g_ema.backbone.mapping.w_avg)
    assert as_pth["init_kwargs"]["mapping_kwargs"] == {"num_layers": 2} and len(as_pth["G_ema"]) == len(back.state_dict)
    fresh = build_snapshot(tmp_path / "again")[1]  # the same module tree (same seed) as a live network
    torch.nn.init.zeros_(fresh.backbone.synthesis.const)
    fresh.load_state_dict(back.state_dict, strict=True)
    for key, value in g_ema.state_dict().items():
        assert torch.equal(fresh.state_dict()[key], value)


def test_interrupted_conversion_leaves_no_safetensors(tmp_path):
    data, _ = build_snapshot(tmp_path / "src_ran")
    path = tmp_path / "net.pkl"
    path.write_bytes(data)
    net = read_nvidia_pickle(path)
    dest = tmp_path / "net.safetensors"

    def killed(src, dst):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        checkpoints.save_converted(net, dest, replace=killed)
    assert not dest.exists()
    assert [p.name for p in tmp_path.iterdir() if p.suffix in (".tmp", ".safetensors")] == []


def test_pickle_without_g_ema_is_a_format_error(tmp_path):
    path = tmp_path / "x.pkl"
    path.write_bytes(pickle.dumps({"G": None}))
    with pytest.raises(PickleFormatError, match="G_ema"):
        read_nvidia_pickle(path)


def test_garbage_is_a_format_error():
    with pytest.raises(PickleFormatError):
        safe_load(io.BytesIO(b"\x80\x04not a pickle"))


@pytest.mark.slow
def test_full_size_eg3d_generator_pickled_the_nvidia_way(tmp_path, monkeypatch):
    """Our full EG3D generator, pickled as persistent objects (every module a reconstructor call), reads
    back with exactly the generator's 176 keys and values and passes the structure check."""
    import dataclasses
    import sys
    import types

    from tests.weights import nvidia_pickle
    from vidtriplane.models.eg3d import EG3DConfig, EG3DGenerator
    from vidtriplane.weights import validate

    torch.manual_seed(0)
    generator = EG3DGenerator(EG3DConfig())
    reconstruct = nvidia_pickle._reconstruct_persistent_obj
    fake = types.ModuleType("torch_utils.persistence")
    fake._reconstruct_persistent_obj = reconstruct

    class NvidiaStylePickler(pickle.Pickler):
        def reducer_override(self, obj):
            if isinstance(obj, torch.nn.Module) and type(obj).__module__.startswith("vidtriplane."):
                state = {k: repr(v) if dataclasses.is_dataclass(v) else v for k, v in obj.__dict__.items()}
                meta = dict(type="class", version=6, module_src="raise SystemExit", class_name=type(obj).__name__,
                            state=state)
                return (reconstruct, (meta,))
            return NotImplemented

    buf = io.BytesIO()
    monkeypatch.setitem(sys.modules, "torch_utils", types.ModuleType("torch_utils"))
    monkeypatch.setitem(sys.modules, "torch_utils.persistence", fake)
    monkeypatch.setattr(reconstruct, "__module__", "torch_utils.persistence")
    NvidiaStylePickler(buf, protocol=4).dump({"G_ema": generator})
    monkeypatch.undo()
    path = tmp_path / "ffhq512-128.pkl"
    path.write_bytes(buf.getvalue())

    net = read_nvidia_pickle(path)
    expected = generator.state_dict()
    assert list(net.state_dict) == list(expected) and len(expected) == 176
    assert all(torch.equal(net.state_dict[k], v) for k, v in expected.items())
    validate.check_eg3d_state(validate.shapes_of(net.state_dict), validate.model_shapes)
