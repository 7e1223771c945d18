"""The MTCNN weights as users get them, read into one state_dict for the cache.

The published copy is the ``facenet-pytorch`` wheel on PyPI (MIT), which carries the three networks as
plain state_dicts in ``facenet_pytorch/data/pnet.pt``, ``rnet.pt`` and ``onet.pt``. Nothing from the
wheel is installed or executed: its zip members are read with ``torch.load(weights_only=True)``.

Accepted sources (``vidtriplane weights import mtcnn SOURCE``):

* the wheel (``facenet_pytorch-2.6.0-py3-none-any.whl``, or any zip holding ``.../data/pnet.pt`` etc.);
* one of the three unpacked ``.pt`` files (the other two are read from the same folder);
* a folder holding the three files (through the Python API; the CLI takes files);
* the converted ``mtcnn.pt`` of another cache (keys ``pnet.*``, ``rnet.*``, ``onet.*``).
"""
from __future__ import annotations

import hashlib
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vidtriplane.weights.validate import InvalidWeights, load_torch_file

NETS = ("pnet", "rnet", "onet")


@dataclass(frozen=True)
class MtcnnSource:
    """What a source held."""

    state_dict: dict[str, Any]
    """The three networks' tensors, keys prefixed ``pnet.``, ``rnet.``, ``onet.``."""
    kind: str
    """'wheel', 'files' (the .pt files) or 'converted' (an mtcnn.pt)."""
    member_sha256: dict[str, str] = field(default_factory=dict)
    """sha256 of each network's .pt file (empty for a converted file)."""


def wheel_members(path: Path) -> dict[str, str] | None:
    """{net: member name} when ``path`` is a zip holding ``.../data/{pnet,rnet,onet}.pt``, else None."""
    if not zipfile.is_zipfile(path):
        return None
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
    found = {net: next((n for n in names if n.endswith(f"data/{net}.pt")), None) for net in NETS}
    if all(v is None for v in found.values()):
        return None  # a zip, but not a wheel: e.g. a torch.save archive
    missing = [f"{net}.pt" for net, member in found.items() if member is None]
    if missing:
        raise InvalidWeights(f"{path} holds only some of the MTCNN networks (missing {', '.join(missing)})")
    return found  # type: ignore[return-value]


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _read_files(files: dict[str, Path]) -> tuple[dict[str, Any], dict[str, str]]:
    state: dict[str, Any] = {}
    for net, file in files.items():
        part = load_torch_file(file)
        if not isinstance(part, dict) or not part:
            raise InvalidWeights(f"{file} is not a state_dict of the MTCNN {net}")
        state.update({f"{net}.{k}": v for k, v in part.items()})
    return state, {net: _sha256(f) for net, f in files.items()}


def read_source(path: Path) -> MtcnnSource:
    """Read any accepted source (see the module docstring); raises ``InvalidWeights`` for anything else."""
    path = Path(path)
    if path.is_dir():
        files = {net: path / f"{net}.pt" for net in NETS}
        missing = [f.name for f in files.values() if not f.is_file()]
        if missing:
            raise InvalidWeights(f"{path} lacks {', '.join(missing)} (it needs pnet.pt, rnet.pt and onet.pt "
                                 "from the facenet-pytorch wheel's facenet_pytorch/data/)")
        state, hashes = _read_files(files)
        return MtcnnSource(state, "files", hashes)
    members = wheel_members(path)
    if members is not None:
        with tempfile.TemporaryDirectory() as tmp, zipfile.ZipFile(path) as archive:
            files = {}
            for net, member in members.items():
                files[net] = Path(tmp) / f"{net}.pt"
                files[net].write_bytes(archive.read(member))
            state, hashes = _read_files(files)
        return MtcnnSource(state, "wheel", hashes)
    if path.name in {f"{net}.pt" for net in NETS}:
        return read_source(path.parent)
    obj = load_torch_file(path)
    if isinstance(obj, dict) and any(str(k).startswith("pnet.") for k in obj):
        return MtcnnSource(dict(obj), "converted")
    raise InvalidWeights(f"{path} is neither the facenet-pytorch wheel, nor pnet.pt/rnet.pt/onet.pt, nor a "
                         "converted mtcnn.pt")


def save(state: dict[str, Any], dest: Path) -> None:
    """Write the combined state_dict with ``torch.save`` through a temp file + rename."""
    import torch

    from vidtriplane.weights.store import atomic_write

    atomic_write(dest, lambda tmp: torch.save(state, tmp))
