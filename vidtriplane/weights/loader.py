"""The one way vidtriplane opens a torch weight file: ``torch.load(weights_only=True)`` on the CPU.

Everything that reads weights goes through :func:`load_torch` (``vidtriplane.checkpoints``,
``weights.validate``, and ``weights.pickle_safe`` for the tensor storages inside NVIDIA's pickles).
Nothing from the file is executed: torch's ``weights_only`` unpickler builds tensors and plain
containers only. NVIDIA's ``dnnlib.EasyDict`` (EG3D-derived files pickle their ``init_kwargs`` with
it) is accepted through :class:`EasyDictStandIn`, which builds a plain dict.

A file that cannot be used raises :class:`CheckpointError` with one message saying what the file is
and what to do. What the file is comes from its structure (its first bytes, whether it is a whole zip
archive, the globals its pickle names), never from the wording of torch's messages:

* empty; an HTML page (a download site's error or quota page); a zip archive without its end (an
  interrupted download or copy);
* NVIDIA's network pickle (``.pkl``, it names ``torch_utils.persistence``) where a ``.pth`` is expected;
* a pickle that names globals torch's allow-list refuses (:class:`UnsafePickle`, naming them);
* in the legacy (pre-zip) format, a storage that declares more bytes than the file holds after its
  pickles: torch would allocate the declared size before reading, so it is refused first.
"""
from __future__ import annotations

import contextlib
import io
import pickle
import pickletools
import zipfile
from pathlib import Path
from typing import Any, BinaryIO, Iterator

from vidtriplane.errors import VidtriplaneError

PathLike = str | Path
EASYDICT_NAMES = ("dnnlib.util.EasyDict", "dnnlib.EasyDict")
NVIDIA_PERSISTENCE = "torch_utils.persistence._reconstruct_persistent_obj"
HEAD_BYTES = 1 << 16
LEGACY_PICKLES = 5  # magic number, protocol, sys info, data, storage keys (torch.serialization legacy format)
# Globals torch's weights_only unpickler builds tensors and containers from (used to name the others).
_PLAIN_PREFIXES = ("torch.", "collections.OrderedDict", "_codecs.encode", "builtins.set", "builtins.frozenset",
                   "builtins.bytearray", "builtins.complex", "builtins.slice")
_PUSH_INT = frozenset({"INT", "BININT", "BININT1", "BININT2", "LONG", "LONG1", "LONG4"})


class CheckpointError(VidtriplaneError, ValueError):
    """A weight file that cannot be used; the message names the file, what is wrong and what to do."""


class UnsafePickle(CheckpointError):
    """The pickle names a global outside the allow-list (loading it could run code); nothing was executed."""


class EasyDictStandIn(dict):
    """Stand-in for NVIDIA's ``dnnlib.EasyDict`` (a dict with attribute access): unpickling one builds a
    plain ``dict`` (torch's weights_only unpickler fills plain dicts only), running no code."""

    def __new__(cls, *args: Any, **kwargs: Any) -> dict:  # type: ignore[misc]
        return {}


def load_torch(source: PathLike | bytes, *, kind: str = "weight") -> Any:
    """``torch.load(weights_only=True)`` of a file (or the bytes of one) on the CPU; zip files are mmapped.

    ``kind`` names the file in messages (e.g. "TriPlaneNet checkpoint"). Raises :class:`CheckpointError`
    (:class:`UnsafePickle` for forbidden globals) with a message that says what to do.
    """
    import torch

    what = f"{kind} file {source}" if isinstance(source, (str, Path)) else f"{kind} data"
    if isinstance(source, (str, Path)) and not Path(source).is_file():
        raise CheckpointError(f"{what} does not exist")
    with _open(source) as stream:
        size = stream.seek(0, io.SEEK_END)
        stream.seek(0)
        head = stream.read(HEAD_BYTES)
        stream.seek(0)
        is_zip = zipfile.is_zipfile(stream)
        stream.seek(0)
        _refuse_by_structure(what, head, size, is_zip)
        if not is_zip:
            _check_legacy_layout(what, stream, size)
            stream.seek(0)
        try:
            with _allowing_easydict():
                if is_zip and isinstance(source, (str, Path)):
                    return torch.load(source, map_location="cpu", weights_only=True, mmap=True)
                return torch.load(stream, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError:
            stream.seek(0)
            refused = _refused_globals(source if is_zip and isinstance(source, (str, Path)) else stream, is_zip)
            if refused:
                raise UnsafePickle(
                    f"{what} holds pickled objects other than tensors and plain containers "
                    f"({', '.join(sorted(refused)[:5])}); it was refused because loading it could run code, "
                    "and nothing from it was executed. Use the published file (`vidtriplane weights fetch` or "
                    "`vidtriplane weights import` check it) or re-save it as a plain dict of tensors.") from None
            if is_zip or head.startswith(b"\x80"):
                raise _unreadable(what, "its pickled data is damaged") from None
            raise _unreadable(what, f"neither a zip archive nor a pickle: it starts with {head[:12]!r}") from None
        except Exception as err:  # noqa: BLE001 - torch reports damaged files with many types; all mean "unreadable"
            raise _unreadable(what, f"{type(err).__name__}: {_first_line(err)}") from None


def read_torch_file(path: PathLike, *, kind: str) -> dict[str, Any]:
    """:func:`load_torch` of a file whose top level must be a dict (every checkpoint format we read)."""
    obj = load_torch(path, kind=kind)
    if not isinstance(obj, dict):
        raise CheckpointError(f"{kind} file {path} holds a {type(obj).__name__}, expected a dict")
    return dict(obj)


def pickled_globals(stream: BinaryIO, *, pickles: int = 1) -> Iterator[str]:
    """The globals (``module.name``) named by the next ``pickles`` pickles of ``stream``, read from
    their opcodes without running anything; stops quietly at data that is not pickle opcodes."""
    for _ in range(pickles):
        for name, _ints in _scan(stream):
            if name is not None:
                yield name


# --------------------------------------------------------------------------------------------------
# Telling what a file is from its structure


def _open(source: PathLike | bytes) -> BinaryIO:
    return io.BytesIO(bytes(source)) if isinstance(source, (bytes, bytearray)) else open(source, "rb")


def _refuse_by_structure(what: str, head: bytes, size: int, is_zip: bool) -> None:
    """The checks that need no unpickling: empty, HTML, zip without its end."""
    if size == 0:
        raise CheckpointError(f"{what} is empty (0 bytes): the download or copy did not complete; "
                              "fetch or import it again")
    text = head[:1024].lstrip().lower()
    if text.startswith((b"<!doctype html", b"<html", b"<?xml", b"<head", b"<body")) or b"<html" in text:
        raise CheckpointError(f"{what} is an HTML page, not a weight file: the download site answered with a page "
                              "(an error, sign-in or quota notice) instead of the file. Download the file again "
                              "(in a browser if needed) and add it with `vidtriplane weights import NAME PATH`")
    if head.startswith(b"PK\x03\x04") and not is_zip:
        raise CheckpointError(f"{what} is an incomplete zip archive ({size} bytes, its end is missing): the download "
                              "or copy was interrupted; fetch or import it again")


def _check_legacy_layout(what: str, stream: BinaryIO, size: int) -> None:
    """Legacy format: refuse NVIDIA pickles, and storages that declare more bytes than follow the pickles."""
    declared = 0
    for _ in range(LEGACY_PICKLES):
        for name, storage_numel in _scan(stream):
            if name == NVIDIA_PERSISTENCE:
                raise CheckpointError(
                    f"{what} is an NVIDIA network pickle (.pkl), not a torch .pth file; add it with "
                    "`vidtriplane weights import eg3d-ffhq512-128-pkl PATH`, which converts it without running "
                    "the code it carries")
            declared += storage_numel
    remaining = size - stream.tell()
    if declared > remaining:  # every element takes at least one byte
        raise CheckpointError(f"{what} declares tensor storages of at least {declared} bytes but holds only "
                              f"{max(remaining, 0)} bytes of tensor data; it is damaged or crafted and was refused "
                              "before anything was allocated")


def _scan(stream: BinaryIO) -> Iterator[tuple[str | None, int]]:
    """Walk one pickle's opcodes: yield (global name, 0) for each global and (None, numel) for each
    persistent id of a storage (legacy format: ``('storage', type, key, location, numel, view)``).

    A model of the pickle machine's stack in which only strings, ints and tuples keep their values
    (enough for STACK_GLOBAL's names and the persistent ids); nothing is constructed or called. Only
    binary pickles (protocol 2 and up, as torch and NVIDIA write them) are read: text would parse as
    protocol-0 opcodes and give made-up names.
    """
    memo: dict[int, Any] = {}
    stack: list[Any] = []
    marks: list[int] = []
    try:
        for i, (op, arg, _pos) in enumerate(pickletools.genops(stream)):
            name, before, after = op.name, op.stack_before, op.stack_after
            if i == 0 and name != "PROTO":  # protocol 0/1, or text: names would be noise
                return
            if name == "MARK":
                marks.append(len(stack))
                continue
            if name in ("MEMOIZE", "PUT", "BINPUT", "LONG_BINPUT"):
                memo[len(memo) if name == "MEMOIZE" else int(arg)] = stack[-1] if stack else None
                continue
            items: list[Any] = []
            if pickletools.markobject in before:
                start = marks.pop() if marks else 0
                items, stack = stack[start:], stack[:start]
            n = len([x for x in before if x not in (pickletools.markobject, pickletools.stackslice)])
            popped, stack = (stack[len(stack) - n:], stack[:len(stack) - n]) if n else ([], stack)
            if name in ("GLOBAL", "INST"):
                yield str(arg).replace(" ", "."), 0
            elif name == "STACK_GLOBAL" and all(isinstance(x, str) for x in popped) and len(popped) == 2:
                yield f"{popped[0]}.{popped[1]}", 0
            elif name in ("BINPERSID", "PERSID"):
                pid = popped[0] if name == "BINPERSID" and popped else arg
                if isinstance(pid, tuple) and pid[:1] == ("storage",) and len(pid) >= 5 and isinstance(pid[4], int):
                    yield None, max(pid[4], 0)
            elif name == "STOP":
                return
            if name in ("GET", "BINGET", "LONG_BINGET"):
                stack.append(memo.get(int(arg)))
            elif name == "TUPLE":
                stack.append(tuple(items))
            elif name in ("TUPLE1", "TUPLE2", "TUPLE3", "EMPTY_TUPLE"):
                stack.append(tuple(popped))
            elif len(after) == 1 and not before and (isinstance(arg, str) or name in _PUSH_INT):
                stack.append(arg)
            else:
                stack.extend([None] * len(after))
    except (ValueError, EOFError):  # not (or no longer) pickle opcodes
        return


def _allowing_easydict() -> Any:
    """``torch.serialization.safe_globals`` for the EasyDict names (torch >= 2.5; a no-op before)."""
    import torch

    safe_globals = getattr(torch.serialization, "safe_globals", None)
    if safe_globals is None:
        return contextlib.nullcontext()
    return safe_globals([(EasyDictStandIn, name) for name in EASYDICT_NAMES])


def _refused_globals(source: Any, is_zip: bool) -> list[str]:
    """Globals that torch's weights_only loader refused, read from the file's structure."""
    import torch

    try:
        if is_zip and hasattr(torch.serialization, "get_unsafe_globals_in_checkpoint"):  # torch >= 2.5
            with _allowing_easydict():
                return list(torch.serialization.get_unsafe_globals_in_checkpoint(source))
        if is_zip:
            with zipfile.ZipFile(source) as archive:
                names = [n for n in archive.namelist() if n.endswith("/data.pkl")]
                streams = [io.BytesIO(archive.read(n)) for n in names[:1]]
        else:
            streams = [source]
        found = {g for s in streams for g in pickled_globals(s, pickles=1 if is_zip else LEGACY_PICKLES)}
        return sorted(g for g in found if not g.startswith(_PLAIN_PREFIXES) and g not in EASYDICT_NAMES)
    except Exception:  # noqa: BLE001 - a structure we cannot even scan names nothing
        return []


def _unreadable(what: str, detail: str) -> CheckpointError:
    return CheckpointError(f"{what} is not a readable torch file ({detail}); it is damaged, truncated or "
                           "another format: fetch or import it again")


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0][:200] if text else "no detail"
