"""Read NVIDIA's EG3D ``.pkl`` files without executing any of the code they carry.

NVIDIA pickles its networks with ``torch_utils.persistence``: every persistent module is stored as a
call ``torch_utils.persistence._reconstruct_persistent_obj(meta)`` where ``meta`` is a dict holding the
full source code of the module's Python file (``module_src``), the class name and the object's
``__dict__`` (``state``: ``_parameters``, ``_buffers``, ``_modules``, ``_init_kwargs``, ...). Loading
it the normal way ``exec``s that source. Plain ``torch.nn`` children (``Sequential``, ``Softplus``) are
pickled as ordinary objects, and tensors go through ``torch.storage._load_from_bytes`` (a legacy
``torch.save`` of each storage).

``SafeUnpickler`` resolves only an explicit allow-list of globals, each mapped to an inert stand-in or
to a function of ours: the persistence reconstructor records ``meta`` without running ``module_src``,
``torch.nn`` classes and EG3D's few undecorated modules (``OSGDecoder``, ``ImportanceRenderer``,
``RaySampler``, ``MipRayMarcher2``) become recording stand-ins, storages are read by the project's one
loader (:func:`vidtriplane.weights.loader.load_torch`). Any other global (``os.system``, ``builtins.eval``,
``subprocess.Popen``, ...) raises ``UnsafePickle`` before anything is called. Every allowed global checks
its arguments before it allocates anything: a tensor's size, stride and offset must fit inside its
storage, numpy arrays are only ever created empty, bytes only from bytes. Every other failure while
reading is a ``PickleFormatError``. The recorded module tree is then walked into a flat ``state_dict`` with
the official key names, plus the constructor kwargs (``vidtriplane.checkpoints.save_converted`` stores
them as safetensors + JSON). Facts: ``eg3d:eg3d/torch_utils/persistence.py`` (the pickled form),
``eg3d:eg3d/training/training_loop.py`` (the snapshot dict), ``eg3d:eg3d/dnnlib/util.py`` (EasyDict).
"""
from __future__ import annotations

import _compat_pickle
import collections
import hashlib
import io
import math
import pickle
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import torch

from vidtriplane.weights.loader import EASYDICT_NAMES, CheckpointError, EasyDictStandIn, UnsafePickle, load_torch


class PickleFormatError(CheckpointError):
    """The pickle is safe but is not the NVIDIA network snapshot that was expected (or is damaged)."""


# --------------------------------------------------------------------------------------------------
# Inert stand-ins


@dataclass
class PersistentRecord:
    """What ``_reconstruct_persistent_obj(meta)`` would have rebuilt, kept as data only."""

    class_name: str
    """Name of the persistent class (e.g. 'TriPlaneGenerator')."""
    state: dict
    """The object's ``__dict__`` as pickled (``_parameters``, ``_buffers``, ``_modules``, ...)."""
    version: int | None
    """``torch_utils.persistence`` format version."""
    source_sha256: str
    """sha256 of the embedded module source (recorded for provenance; the source is never run)."""


class ForeignModule:
    """Stand-in for a plain ``torch.nn`` class in the pickle; records the state given to it."""

    qualified_name = "torch.nn.modules.?"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.state: dict = {}

    def __setstate__(self, state: Any) -> None:
        self.state = state if isinstance(state, dict) else {"_raw_state": state}

    def __repr__(self) -> str:
        return f"<ForeignModule {self.qualified_name}>"


_FOREIGN_CLASSES: dict[str, type[ForeignModule]] = {}


def _foreign_class(module: str, name: str) -> type[ForeignModule]:
    key = f"{module}.{name}"
    if key not in _FOREIGN_CLASSES:
        _FOREIGN_CLASSES[key] = type(name, (ForeignModule,), {"qualified_name": key})
    return _FOREIGN_CLASSES[key]


# --------------------------------------------------------------------------------------------------
# Allow-listed globals, each mapped to code of ours


def _record_persistent(meta: Any) -> PersistentRecord:
    if not isinstance(meta, dict) or "class_name" not in meta or "state" not in meta:
        raise PickleFormatError("a persistent object without the expected meta fields (class_name, state)")
    src = meta.get("module_src") or ""
    if meta.get("type", "class") != "class":
        raise PickleFormatError(f"unsupported persistent object type {meta.get('type')!r}")
    state = meta["state"]
    if not isinstance(state, dict):
        raise PickleFormatError(f"persistent object {meta['class_name']!r} has a non-dict state")
    return PersistentRecord(class_name=str(meta["class_name"]), state=dict(state), version=meta.get("version"),
                            source_sha256=hashlib.sha256(str(src).encode("utf-8")).hexdigest())


def _load_storage_from_bytes(data: Any) -> torch.TypedStorage:
    """``torch.storage._load_from_bytes``: a legacy ``torch.save`` of one storage, through the one loader."""
    if not isinstance(data, (bytes, bytearray)):
        raise PickleFormatError("_load_from_bytes called with something other than bytes")
    try:
        storage = load_torch(bytes(data), kind="tensor storage inside the pickle")
    except UnsafePickle:
        raise
    except CheckpointError as err:
        raise PickleFormatError(str(err)) from None
    if not isinstance(storage, torch.TypedStorage):
        raise PickleFormatError(f"_load_from_bytes gave a {type(storage).__name__}, not a tensor storage")
    return storage


def _checked_layout(storage: Any, offset: Any, size: Any, stride: Any) -> tuple[int, tuple, tuple]:
    """Offset, size and stride of a tensor view, refused unless every element lies inside ``storage``.

    torch would grow a storage that is too small (allocating whatever the pickle asks for), so this is
    checked before any tensor exists."""
    if not isinstance(storage, torch.TypedStorage):
        raise PickleFormatError("tensor rebuilt from something that is not a storage")
    for seq in (size, stride):
        if not isinstance(seq, (tuple, list)) or not all(type(v) is int for v in seq):
            raise PickleFormatError("tensor size/stride is not a tuple of ints")
    if type(offset) is not int or len(size) != len(stride) or min((offset, *size, *stride)) < 0:
        raise PickleFormatError(f"tensor with offset {offset!r}, size {size!r}, stride {stride!r} is malformed")
    with warnings.catch_warnings():  # TypedStorage is what torch.load gives for a legacy storage; it warns
        warnings.simplefilter("ignore", UserWarning)
        available = storage.size()
    last = offset + sum((n - 1) * s for n, s in zip(size, stride)) if all(size) else offset - 1
    if last >= available or offset > available:
        raise PickleFormatError(f"tensor of size {list(size)}, stride {list(stride)} at offset {offset} reaches "
                                f"past its storage of {available} elements (a damaged or crafted file)")
    return offset, tuple(size), tuple(stride)


def _rebuild_tensor_v2(storage: Any, offset: Any, size: Any, stride: Any, requires_grad: bool = False,
                       backward_hooks: Any = None, metadata: Any = None) -> torch.Tensor:
    offset, size, stride = _checked_layout(storage, offset, size, stride)
    return torch._utils._rebuild_tensor(storage, offset, size, stride)


def _rebuild_tensor(storage: Any, offset: int, size: Any, stride: Any) -> torch.Tensor:
    return _rebuild_tensor_v2(storage, offset, size, stride)


def _rebuild_parameter(data: Any, requires_grad: bool = False, backward_hooks: Any = None,
                       state: Any = None) -> torch.Tensor:
    if not isinstance(data, torch.Tensor):
        raise PickleFormatError("parameter rebuilt from something that is not a tensor")
    return data.detach()


def _safe_reconstructor(cls: Any, base: Any, state: Any) -> Any:
    """``copyreg._reconstructor`` restricted to our stand-in classes."""
    if isinstance(cls, type) and issubclass(cls, (ForeignModule, EasyDictStandIn)):
        obj = cls()
        return obj
    raise UnsafePickle(f"copyreg._reconstructor called for {cls!r}")


def _numpy_globals() -> dict[tuple[str, str], Any]:
    try:
        import numpy as np
    except ImportError:  # pragma: no cover - numpy is a dependency
        return {}
    table: dict[tuple[str, str], Any] = {("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype}
    for mod in ("numpy.core.multiarray", "numpy._core.multiarray"):
        table[(mod, "_reconstruct")] = _np_reconstruct
        table[(mod, "scalar")] = _np_scalar
    return table


def _np_reconstruct(subtype: Any, shape: Any, dtype: Any) -> Any:
    import numpy as np

    if subtype is not np.ndarray:
        raise UnsafePickle(f"numpy array of subtype {subtype!r}")
    # numpy pickles every array as an empty one whose data comes with BUILD; a larger shape would allocate
    if not isinstance(shape, tuple) or not all(type(n) is int for n in shape) or math.prod(shape) != 0:
        raise PickleFormatError(f"numpy array reconstructed with shape {shape!r} (numpy writes an empty one)")
    if not isinstance(dtype, (bytes, str, np.dtype)) or np.dtype(dtype).hasobject:
        raise UnsafePickle("numpy array of an object dtype")
    return np.ndarray.__new__(np.ndarray, shape, dtype)


def _np_scalar(dtype: Any, data: Any = None) -> Any:
    import numpy as np

    if not isinstance(dtype, np.dtype) or dtype.hasobject:
        raise UnsafePickle("numpy scalar with an object dtype")
    if not isinstance(data, (bytes, bytearray)):  # bytes(n) of an int would allocate n bytes
        raise PickleFormatError("numpy scalar without its bytes")
    return np.frombuffer(bytes(data), dtype=dtype, count=1)[0]


def _latin1_bytes(text: Any, encoding: str = "latin1") -> bytes:
    """``_codecs.encode`` as protocol-2 pickles use it for bytes objects (str + 'latin1' only)."""
    if not isinstance(text, str) or encoding.replace("-", "") != "latin1":
        raise UnsafePickle("_codecs.encode used for something other than a latin1 bytes literal")
    return text.encode("latin1")


def _bytearray(source: Any = b"", encoding: str = "latin1") -> bytearray:
    """``bytearray`` as pickles use it (from bytes or a latin1 string); never ``bytearray(n)``, which allocates."""
    if isinstance(source, (bytes, bytearray)):
        return bytearray(source)
    return bytearray(_latin1_bytes(source, encoding))


_ALLOWED: dict[tuple[str, str], Any] = {
    ("_codecs", "encode"): _latin1_bytes,
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("builtins", "bytearray"): _bytearray,
    ("copyreg", "_reconstructor"): _safe_reconstructor,
    ("torch", "Size"): torch.Size,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    ("torch.storage", "_load_from_bytes"): _load_storage_from_bytes,
    ("torch_utils.persistence", "_reconstruct_persistent_obj"): _record_persistent,
    **{tuple(name.rsplit(".", 1)): EasyDictStandIn for name in EASYDICT_NAMES},
    **_numpy_globals(),
}


# Plain (undecorated) torch modules of NVIDIA's EG3D code that its pickles reference by import path.
# They hold no parameters or buffers; each maps to an inert recording stand-in, never to the real class.
EG3D_PLAIN_MODULES: frozenset[tuple[str, str]] = frozenset({
    ("training.triplane", "OSGDecoder"),
    ("training.volumetric_rendering.renderer", "ImportanceRenderer"),
    ("training.volumetric_rendering.ray_sampler", "RaySampler"),
    ("training.volumetric_rendering.ray_marcher", "MipRayMarcher2"),
})


class SafeUnpickler(pickle.Unpickler):
    """An unpickler that resolves only allow-listed globals, mapped to inert stand-ins."""

    def find_class(self, module: str, name: str) -> Any:
        # Python 2 names (protocols 0-2 write e.g. __builtin__.set), mapped as fix_imports=True would.
        module, name = _compat_pickle.NAME_MAPPING.get((module, name), (module, name))
        module = _compat_pickle.IMPORT_MAPPING.get(module, module)
        target = _ALLOWED.get((module, name))
        if target is not None:
            return target
        if module == "torch" and isinstance(getattr(torch, name, None), torch.dtype):
            return getattr(torch, name)
        if (module.startswith("torch.nn.modules.") and name.isidentifier() and name[:1].isupper()) \
                or (module, name) in EG3D_PLAIN_MODULES:
            return _foreign_class(module, name)
        raise UnsafePickle(
            f"the pickle references {module}.{name}, which is not on the allow-list of tensor and container "
            "types; a pickle that calls it could run arbitrary code, so it was rejected and nothing was executed")

    def persistent_load(self, pid: Any) -> Any:
        raise PickleFormatError("the file uses persistent ids (a torch.save file?); it is not an NVIDIA .pkl")


def safe_load(data: bytes | io.BufferedIOBase) -> Any:
    """Unpickle with ``SafeUnpickler``; raises ``UnsafePickle`` or ``PickleFormatError``."""
    stream = io.BytesIO(data) if isinstance(data, (bytes, bytearray)) else data
    try:
        return SafeUnpickler(stream).load()
    except (UnsafePickle, PickleFormatError):
        raise
    except Exception as err:  # noqa: BLE001 - whatever the damaged data made fail, it is not a readable pickle
        raise PickleFormatError(f"not a readable pickle: {type(err).__name__}: {str(err)[:200]}") from None


# --------------------------------------------------------------------------------------------------
# Walking the recorded module tree


def _module_state(node: Any, where: str) -> dict:
    if isinstance(node, (PersistentRecord, ForeignModule)) and isinstance(node.state, dict):
        return node.state
    raise PickleFormatError(f"{where or 'the root'} is not a module (got {type(node).__name__})")


def _named(state: dict, field: str, where: str) -> Mapping[str, Any]:
    """``state[field]`` (``_parameters``, ``_buffers``, ``_modules``) as a mapping of names; {} when absent."""
    value = state.get(field) or {}
    if not isinstance(value, Mapping) or not all(isinstance(k, str) for k in value):
        raise PickleFormatError(f"{where or 'the root'}.{field} is a {type(value).__name__}, not a mapping of names")
    return value


def module_state_dict(node: Any, prefix: str = "") -> "collections.OrderedDict[str, torch.Tensor]":
    """Flat ``state_dict`` of a recorded module tree, in torch's order (params, buffers, children)."""
    out: collections.OrderedDict[str, torch.Tensor] = collections.OrderedDict()
    where = prefix.rstrip(".")
    state = _module_state(node, where)
    skip = set(state.get("_non_persistent_buffers_set") or ())
    tensors = [*_named(state, "_parameters", where).items(),
               *((k, v) for k, v in _named(state, "_buffers", where).items() if k not in skip)]
    for name, value in tensors:
        if value is None:
            continue
        if not isinstance(value, torch.Tensor):
            raise PickleFormatError(f"{prefix}{name} is a {type(value).__name__}, not a tensor")
        out[prefix + name] = value.detach()
    for name, child in _named(state, "_modules", where).items():
        if child is not None:
            out.update(module_state_dict(child, prefix + name + "."))
    return out


def to_jsonable(value: Any, where: str = "") -> Any:
    """Plain JSON data from pickled kwargs (EasyDict -> dict, tuple -> list, numpy scalar -> number)."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else repr(value)
    if isinstance(value, dict):
        return {str(k): to_jsonable(v, f"{where}.{k}") for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v, f"{where}[{i}]") for i, v in enumerate(value)]
    import numpy as np

    if isinstance(value, (np.generic, np.ndarray)):
        return to_jsonable(value.tolist(), where)
    raise PickleFormatError(f"constructor argument {where or 'value'} is not plain data ({type(value).__name__})")


@dataclass(frozen=True)
class ExtractedNetwork:
    """A network read out of an NVIDIA pickle: tensors + how to construct it."""

    state_dict: "collections.OrderedDict[str, torch.Tensor]"
    """Parameters and persistent buffers under the official key names."""
    config: dict
    """``class_name``, ``init_args``, ``init_kwargs`` and plain attributes, all JSON-able."""


def extract_network(record: Any, *, key: str = "G_ema") -> ExtractedNetwork:
    """Turn one recorded persistent network into a state_dict + JSON config."""
    if not isinstance(record, PersistentRecord):
        raise PickleFormatError(f"{key!r} is not an NVIDIA persistent network (got {type(record).__name__})")
    state = record.state
    init_args, init_kwargs = state.get("_init_args") or (), state.get("_init_kwargs") or {}
    if not isinstance(init_args, (list, tuple)) or not isinstance(init_kwargs, Mapping):
        raise PickleFormatError(f"{key!r} has constructor arguments that are not a list and a dict")
    attributes = {}
    for name, value in state.items():
        if name.startswith("_") or name == "training":
            continue
        try:
            attributes[name] = to_jsonable(value, name)
        except PickleFormatError:
            continue  # tensors or modules held as plain attributes are not configuration
    config = {
        "format": "vidtriplane-converted-nvidia-pkl",
        "network": key,
        "class_name": record.class_name,
        "persistence_version": record.version,
        "module_source_sha256": record.source_sha256,
        "init_args": to_jsonable(list(init_args), "init_args"),
        "init_kwargs": to_jsonable(dict(init_kwargs), "init_kwargs"),
        "attributes": attributes,
    }
    return ExtractedNetwork(state_dict=module_state_dict(record), config=config)


def read_nvidia_pickle(path: Path, *, key: str = "G_ema") -> ExtractedNetwork:
    """Read ``key`` (default ``G_ema``) out of an NVIDIA network snapshot ``.pkl`` without running code."""
    with open(path, "rb") as f:
        head = f.read(4)
        if head[:2] == b"PK":
            raise PickleFormatError(f"{path} is a zip archive (a torch.save .pth file), not an NVIDIA .pkl; "
                                    "the TriPlaneNet authors' .pth is imported as eg3d-ffhq512-128")
        f.seek(0)
        try:
            top = safe_load(f)
        except PickleFormatError as err:
            raise PickleFormatError(f"{path} is not an NVIDIA network snapshot .pkl: {err}. Check that it is the "
                                    "complete downloaded file") from None
    if not isinstance(top, dict) or key not in top:
        found = sorted(map(str, top)) if isinstance(top, dict) else type(top).__name__
        raise PickleFormatError(f"{path} does not hold a {key!r} network (found: {found})")
    try:
        return extract_network(top[key], key=key)
    except CheckpointError:
        raise
    except Exception as err:  # noqa: BLE001 - e.g. RecursionError on absurd nesting: the file is unusable
        raise PickleFormatError(f"{path}: {key!r} cannot be read out ({type(err).__name__}: {str(err)[:200]})") from None
