"""Where matting finds rembg's ONNX model: the weight store first, rembg's own folder next, a download last.

    path = locate("u2netp")            # a file, or None for a model the registry does not know
    with rembg_home(path.parent):      # rembg then finds that file under its own name
        session = rembg.new_session("u2netp")

Order for a model in the registry (``u2netp``):

1. the weight store (``vidtriplane weights fetch/import u2netp``);
2. rembg's own folder: ``$U2NET_HOME`` (default ``~/.u2net``) flat or as ``models/<name>/<name>.onnx``,
   and ``$REMBG_HOME`` (default ``~/.rembg``) as ``models/<name>/<name>.onnx``;
3. online only: a download into the weight store (checksum pinned, failing fast when offline);
   offline: :class:`~vidtriplane.weights.api.WeightsMissing`, one line with the import command.

rembg reads ``$U2NET_HOME`` when a session is created and, from 2.0.86 on, accepts a custom model path
only inside that folder. So rather than a custom path, the session is created for the model's own name
with ``$U2NET_HOME`` pointing at the folder that holds ``<name>.onnx`` (:func:`rembg_home`); every rembg
version looks for ``$U2NET_HOME/<name>.onnx`` first and downloads nothing when it is there.
"""
from __future__ import annotations

import contextlib
import os
import threading
from pathlib import Path
from typing import Iterator

from vidtriplane.weights import store
from vidtriplane.weights.registry import REGISTRY

HOME_ENV = "U2NET_HOME"
_ENV_LOCK = threading.Lock()


def rembg_candidates(name: str) -> list[Path]:
    """The places rembg itself keeps ``<name>.onnx`` (old flat layout and the per-model folders)."""
    u2net = Path(os.environ.get(HOME_ENV) or Path(os.environ.get("XDG_DATA_HOME", "~")) / ".u2net").expanduser()
    default_rembg = Path(os.environ["XDG_DATA_HOME"]) / "rembg" if os.environ.get("XDG_DATA_HOME") else Path("~/.rembg")
    rembg = Path(os.environ.get("REMBG_HOME") or default_rembg).expanduser()
    fname = f"{name}.onnx"
    return [u2net / fname, u2net / "models" / name / fname, rembg / "models" / name / fname]


def locate(name: str, *, offline: bool | None = None) -> Path | None:
    """The ONNX file of rembg model ``name`` (see the module docstring for the order).

    None for a model the registry does not know: rembg then finds (or downloads) it itself. Raises
    ``WeightsMissing`` offline and ``DownloadError`` (ending with the import command) when a download fails.
    """
    from vidtriplane.weights import api

    entry = REGISTRY.get(name)
    if entry is None or entry.kind != "onnx":
        return None
    stored = store.stored_path(entry)
    if stored.is_file():
        return stored
    for path in rembg_candidates(name):
        if path.is_file():
            return path
    if api.offline_from_env() if offline is None else offline:
        raise api.WeightsMissing(api.offline_one_line(entry, "matting model"))
    return api.fetch(name, offline=False).path


@contextlib.contextmanager
def rembg_home(folder: Path | None) -> Iterator[None]:
    """Set ``$U2NET_HOME`` to ``folder`` while a rembg session is created (``None``: leave it as it is)."""
    if folder is None:
        yield
        return
    with _ENV_LOCK:
        before = os.environ.get(HOME_ENV)
        os.environ[HOME_ENV] = str(folder)
        try:
            yield
        finally:
            if before is None:
                os.environ.pop(HOME_ENV, None)
            else:
                os.environ[HOME_ENV] = before
