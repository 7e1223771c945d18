"""The MTCNN weights as users get them, read into one state_dict for the cache.

The published copy is the ``facenet-pytorch`` wheel on PyPI (MIT), which carries the three networks as
plain state_dicts in ``facenet_pytorch/data/pnet.pt``, ``rnet.pt`` and ``onet.pt``. Nothing from the
wheel is installed or executed: its zip members are read by the one loader
(:func:`vidtriplane.weights.loader.load_torch`, ``weights_only``).

Accepted sources (``vidtriplane weights import mtcnn SOURCE``, a file or a folder):

* the wheel (``facenet_pytorch-2.6.0-py3-none-any.whl``, or any zip holding ``.../data/pnet.pt`` etc.);
* one of the three unpacked ``.pt`` files (the other two are read from the same folder);
* a folder holding the three files;
* the converted ``mtcnn.pt`` of another cache (keys ``pnet.*``, ``rnet.*``, ``onet.*``).
"""
from __future__ import annotations

import hashlib
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vidtriplane.weights.loader import CheckpointError, load_torch
from vidtriplane.weights.validate import InvalidWeights

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


def _read_nets(contents: dict[str, bytes], where: str) -> tuple[dict[str, Any], dict[str, str]]:
    """{net: bytes of its .pt file} -> the prefixed state_dict and each file's sha256."""
    state: dict[str, Any] = {}
    for net, data in contents.items():
        part = load_torch(data, kind=f"MTCNN {net} ({where})")
        if not isinstance(part, dict) or not part:
            raise InvalidWeights(f"{net}.pt in {where} is not a state_dict of the MTCNN {net}")
        state.update({f"{net}.{k}": v for k, v in part.items()})
    return state, {net: hashlib.sha256(data).hexdigest() for net, data in contents.items()}


def read_source(path: Path) -> MtcnnSource:
    """Read any accepted source (see the module docstring); raises ``InvalidWeights`` for anything else."""
    path = Path(path)
    if path.is_dir():
        files = {net: path / f"{net}.pt" for net in NETS}
        missing = [f.name for f in files.values() if not f.is_file()]
        if missing:
            raise InvalidWeights(f"{path} lacks {', '.join(missing)} (it needs pnet.pt, rnet.pt and onet.pt "
                                 "from the facenet-pytorch wheel's facenet_pytorch/data/)")
        state, hashes = _read_nets({net: f.read_bytes() for net, f in files.items()}, str(path))
        return MtcnnSource(state, "files", hashes)
    members = wheel_members(path)
    if members is not None:
        with zipfile.ZipFile(path) as archive:
            state, hashes = _read_nets({net: archive.read(member) for net, member in members.items()}, str(path))
        return MtcnnSource(state, "wheel", hashes)
    if path.name in {f"{net}.pt" for net in NETS}:
        return read_source(path.parent)
    why = ""
    try:
        obj = load_torch(path, kind="MTCNN")
    except CheckpointError as exc:  # not a torch file we can read either: say why as well
        obj, why = None, f" (read as a torch file: {exc})"
    if isinstance(obj, dict) and any(str(k).startswith("pnet.") for k in obj):
        return MtcnnSource(dict(obj), "converted")
    raise InvalidWeights(f"{path} is neither the facenet-pytorch wheel (facenet_pytorch-2.6.0-py3-none-any.whl "
                         "from PyPI, holding facenet_pytorch/data/pnet.pt, rnet.pt, onet.pt), nor those .pt files or "
                         f"their folder, nor a converted mtcnn.pt{why}")


def save(state: dict[str, Any], dest: Path) -> None:
    """Write the combined state_dict with ``torch.save`` through a temp file + rename."""
    import torch

    from vidtriplane.weights.store import atomic_write

    atomic_write(dest, lambda tmp: torch.save(state, tmp))
