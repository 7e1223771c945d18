"""The weight cache on disk.

Layout::

    $VIDTRIPLANE_HOME/                    (else $XDG_CACHE_HOME/vidtriplane, else ~/.cache/vidtriplane)
      <name>/<stored file>                the published file (or, for a .pkl, its safetensors conversion)
      <name>/<stored stem>.json           the converted .pkl's config (eg3d-pkl only)
      <name>/source.json                  where the file came from and the hashes measured on arrival
      <name>/<published file>.incoming.part   an unfinished download (resumed by the next fetch)
      <name>/<published file>.incoming        a finished download being validated / converted
      <name>/.lock                        held while a process fetches or imports the entry

A file only ever appears under its final name through ``os.replace`` of a complete, verified temp file,
so an interrupted download or import never leaves a file that looks complete.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

from vidtriplane.paths import home_dir
from vidtriplane.weights.registry import WeightEntry, format_bytes

log = logging.getLogger(__name__)

SOURCE_RECORD = "source.json"
LOCK_FILE = ".lock"
HASH_CHUNK = 1 << 20


def cache_dir() -> Path:
    """Root of the weight cache (:func:`vidtriplane.paths.home_dir`)."""
    return home_dir()


def entry_dir(entry: WeightEntry) -> Path:
    """Folder that holds one entry's files."""
    return cache_dir() / entry.name


def stored_path(entry: WeightEntry) -> Path:
    """Where the usable file of ``entry`` lives once fetched or imported."""
    return entry_dir(entry) / entry.stored_filename


def incoming_path(entry: WeightEntry) -> Path:
    """Where a finished download waits while it is validated (and, for a .pkl, converted)."""
    return entry_dir(entry) / (entry.filename + ".incoming")


def partial_path(entry: WeightEntry) -> Path:
    """Where an unfinished download of ``entry`` is kept between attempts (resumed by the next fetch)."""
    return entry_dir(entry) / (entry.filename + ".incoming.part")


def file_hashes(path: Path, *, algorithms: tuple[str, ...] = ("sha256",)) -> dict[str, str]:
    """Hex digests of a file, read once in 1 MiB chunks."""
    hashers = {name: hashlib.new(name, usedforsecurity=False) for name in algorithms}
    with open(path, "rb") as f:
        while chunk := f.read(HASH_CHUNK):
            for h in hashers.values():
                h.update(chunk)
    return {name: h.hexdigest() for name, h in hashers.items()}


def sha256_file(path: Path) -> str:
    """sha256 hex digest of a file."""
    return file_hashes(path)["sha256"]


def sha256_matches(pinned: str, actual: str) -> bool:
    """Whether ``actual`` (full hex) agrees with a pinned full sha256 or a pinned prefix."""
    return actual.startswith(pinned.lower())


def temp_path_beside(dest: Path) -> Path:
    """A fresh, unique temp file name in ``dest``'s folder (same filesystem, so rename is atomic)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent)
    os.close(fd)
    return Path(name)


def atomic_write(dest: Path, write: Callable[[Path], None]) -> None:
    """Run ``write(temp_path)`` on a temp file beside ``dest``, then rename it to ``dest``; ``dest`` is
    either absent or complete."""
    tmp = temp_path_beside(dest)
    try:
        write(tmp)
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_copy(src: Path, dest: Path) -> None:
    """Copy ``src`` to ``dest`` through a temp file + rename."""
    atomic_write(dest, lambda tmp: shutil.copyfile(src, tmp))


def atomic_write_text(dest: Path, text: str) -> None:
    """Write a small text file atomically."""
    atomic_write(dest, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def write_source_record(entry: WeightEntry, **fields: Any) -> None:
    """Record where the cached file came from (URL or local path) and the hashes measured on arrival."""
    record = {"name": entry.name, "published_filename": entry.filename, "stored_filename": entry.stored_filename,
              "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **fields}
    atomic_write_text(entry_dir(entry) / SOURCE_RECORD, json.dumps(record, indent=2, sort_keys=True) + "\n")


def read_source_record(entry: WeightEntry) -> dict[str, Any]:
    """The record written by ``write_source_record``, or {} when absent or unreadable."""
    path = entry_dir(entry) / SOURCE_RECORD
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


@contextlib.contextmanager
def entry_lock(entry: WeightEntry) -> Iterator[None]:
    """Hold an exclusive lock on ``entry``'s folder, so parallel fetches do not write the same files.

    Uses ``flock`` (POSIX); where it is unavailable the lock is a no-op.
    """
    folder = entry_dir(entry)
    folder.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    with open(folder / LOCK_FILE, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.info("waiting for another process that is fetching %s ...", entry.name)
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@dataclass(frozen=True)
class CacheStatus:
    """What the cache holds for one entry."""

    state: str
    """'cached', 'imported', 'partial' (an unfinished download) or 'missing'."""
    path: Path
    """Where the usable file is or will be."""
    nbytes: int | None
    """Size of the stored file, or of the partial download; None when missing."""

    def describe(self, entry: WeightEntry) -> str:
        """Short text for tables: 'cached', 'partial 45%', 'missing'."""
        if self.state == "partial" and self.nbytes is not None:
            if entry.size:
                return f"partial {100 * self.nbytes // entry.size}%"
            return f"partial ({format_bytes(self.nbytes)})"
        return self.state


def status(entry: WeightEntry) -> CacheStatus:
    """Look at the cache for ``entry`` without hashing anything."""
    path = stored_path(entry)
    if path.is_file():
        imported = read_source_record(entry).get("imported_from") is not None
        return CacheStatus("imported" if imported else "cached", path, path.stat().st_size)
    part = partial_path(entry)
    if part.is_file():
        return CacheStatus("partial", path, part.stat().st_size)
    return CacheStatus("missing", path, None)
