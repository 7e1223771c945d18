"""Build NVIDIA-style network pickles in tests, the way ``torch_utils.persistence`` writes them.

Fake ``torch_utils.persistence`` and ``dnnlib.util`` modules are put in ``sys.modules`` only while
pickling (pickle stores globals by module + name). Persistent modules pickle as
``_reconstruct_persistent_obj(meta)`` with ``meta = {type, version, module_src, class_name, state}``;
``module_src`` here is code that would create ``marker`` if anything ever executed it.
"""
from __future__ import annotations

import collections
import io
import pickle
import sys
import types
from pathlib import Path

import numpy as np
import torch
from torch import nn


class EasyDict(dict):
    """Like dnnlib.EasyDict: a dict with attribute access."""

    def __getattr__(self, name):
        return self[name]

    def __setattr__(self, name, value):
        self[name] = value


def _reconstruct_persistent_obj(meta):  # never called by the code under test
    raise AssertionError("the real reconstructor must never run")


class _Persistent:
    """Mixin reproducing persistence.persistent_class's __reduce__ (data only)."""

    module_src = ""

    def __reduce__(self):
        meta = dict(type="class", version=6, module_src=self.module_src, class_name=type(self).__name__,
                    state=dict(self.__dict__))
        return (_reconstruct_persistent_obj, (meta,))


class FullyConnectedLayer(_Persistent, nn.Module):
    def __init__(self, fin: int, fout: int) -> None:
        super().__init__()
        self._init_args = ()
        self._init_kwargs = {"in_features": fin, "out_features": fout}
        self.weight = nn.Parameter(torch.randn(fout, fin))
        self.bias = nn.Parameter(torch.randn(fout))
        self.activation = "linear"


class MappingNetwork(_Persistent, nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc0 = FullyConnectedLayer(6, 4)
        self.register_buffer("w_avg", torch.randn(4))


class SynthesisBlock(_Persistent, nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.const = nn.Parameter(torch.randn(4, 2, 2))
        self.register_buffer("resample_filter", torch.ones(4, 4) / 16)
        self.register_buffer("scratch", torch.zeros(3), persistent=False)  # must not be exported
        self.noise_strength = nn.Parameter(torch.tensor(0.25))
        self.plane_axes = torch.eye(3)  # a plain tensor attribute, not state


class OSGDecoder(nn.Module):  # undecorated in EG3D: pickled by import path (training.triplane)
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(FullyConnectedLayer(4, 8), nn.Softplus(), FullyConnectedLayer(8, 5))


class MipRayMarcher2(nn.Module):  # undecorated, no state
    pass


class ImportanceRenderer(nn.Module):  # undecorated; plane axes are a plain attribute
    def __init__(self) -> None:
        super().__init__()
        self.ray_marcher = MipRayMarcher2()
        self.plane_axes = torch.eye(3).expand(3, 3, 3).clone()


class RaySampler(nn.Module):  # undecorated, no state
    pass


# where pickle must find each plain class: fake import paths of NVIDIA's source tree
_PLAIN = {OSGDecoder: "training.triplane", MipRayMarcher2: "training.volumetric_rendering.ray_marcher",
          ImportanceRenderer: "training.volumetric_rendering.renderer",
          RaySampler: "training.volumetric_rendering.ray_sampler"}


class TriPlaneGenerator(_Persistent, nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self._init_args = ()
        self._init_kwargs = EasyDict(
            z_dim=512, c_dim=25, mapping_kwargs=EasyDict(num_layers=2),
            rendering_kwargs={"ray_start": 2.25, "avg_camera_pivot": [0, 0, 0.2], "box_warp": np.float64(1.0),
                              "superresolution_module": "training.superresolution.SuperresolutionHybrid8XDC"},
            sr_kwargs=EasyDict(channel_base=32768), conv_clamp=None, shape=(1, 2))
        self.renderer = ImportanceRenderer()
        self.ray_sampler = RaySampler()
        self.backbone = nn.Module()
        self.backbone.synthesis = SynthesisBlock()
        self.backbone.mapping = MappingNetwork()
        self.decoder = OSGDecoder()
        self.neural_rendering_resolution = 128
        self.rendering_kwargs = dict(self._init_kwargs["rendering_kwargs"])


def build_snapshot(marker: Path, *, protocol: int = 4, extra: object = None) -> tuple[bytes, TriPlaneGenerator]:
    """Pickle an NVIDIA-style snapshot {G, D, G_ema, augment_pipe, training_set_kwargs}; returns (bytes, G_ema)."""
    src = f"import pathlib\npathlib.Path({str(marker)!r}).write_text('the embedded source ran')\n"
    for cls in (FullyConnectedLayer, MappingNetwork, SynthesisBlock, TriPlaneGenerator):
        cls.module_src = src
    torch.manual_seed(0)
    g_ema = TriPlaneGenerator()
    snapshot = {"training_set_kwargs": EasyDict(path="ffhq.zip", resolution=512), "G": TriPlaneGenerator(),
                "D": None, "G_ema": g_ema, "augment_pipe": None}
    if extra is not None:
        snapshot["extra"] = extra
    placed = {_reconstruct_persistent_obj: "torch_utils.persistence", EasyDict: "dnnlib.util", **_PLAIN}
    fakes: dict[str, types.ModuleType] = {}
    for obj, module_name in placed.items():
        parts = module_name.split(".")
        for i in range(1, len(parts) + 1):
            fakes.setdefault(".".join(parts[:i]), types.ModuleType(".".join(parts[:i])))
        setattr(fakes[module_name], obj.__name__, obj)
    saved_modules = {name: sys.modules.get(name) for name in fakes}
    saved_names = {obj: obj.__module__ for obj in placed}
    try:
        sys.modules.update(fakes)
        for obj, module_name in placed.items():
            obj.__module__ = module_name
        data = pickle.dumps(snapshot, protocol=protocol)
    finally:
        for obj, module_name in saved_names.items():
            obj.__module__ = module_name
        for name, module in saved_modules.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module
    return data, g_ema


class Call:
    """Pickles as a call of ``func(*args)``: how a crafted pickle names any global it likes."""

    def __init__(self, func, args):
        self.func, self.args = func, args

    def __reduce__(self):
        return (self.func, self.args)


def storage_bytes(n: int = 2) -> bytes:
    """A legacy ``torch.save`` of an n-element float storage, as NVIDIA pickles embed each storage."""
    buf = io.BytesIO()
    torch.save(torch.zeros(n).storage(), buf, _use_new_zipfile_serialization=False)
    return buf.getvalue()


def tensor_pickle(offset, size, stride, storage: bytes | None = None) -> bytes:
    """``{'G_ema': tensor}`` whose tensor is a view (offset, size, stride) of ``storage``, built only from
    globals the safe reader allows (a ~400-byte file when the size is huge)."""
    stored = Call(torch.storage._load_from_bytes, (storage or storage_bytes(),))
    tensor = Call(torch._utils._rebuild_tensor_v2, (stored, offset, size, stride, False, collections.OrderedDict()))
    return pickle.dumps({"G_ema": tensor}, protocol=4)
