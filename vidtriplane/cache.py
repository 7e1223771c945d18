"""Pose cache: per-frame preprocessing geometry stored once, reused by later runs on the same input.

An entry is ``<key>.npz`` (the per-frame arrays: landmarks, crop matrices, labels, confidences,
face-found / held / fallback flags) plus ``<key>.json`` (input hash, settings, frame count, version).
The key hashes the input's *content* and the geometry settings, so renaming a file still hits, and
changing the video or any landmark / crop / pose / smoothing setting misses (a stale entry is never
read: the JSON is checked against both on load). Re-rendering another view of the same video therefore
skips face detection and pose estimation entirely.

The cache directory is ``$VIDTRIPLANE_CACHE/poses``, else ``poses/`` in the weight cache's root
(``$VIDTRIPLANE_HOME``, else ``$XDG_CACHE_HOME/vidtriplane``, else ``~/.cache/vidtriplane``).
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterable, Mapping, Optional

import numpy as np

from vidtriplane.weights.store import atomic_write_text, cache_dir, sha256_file

CACHE_VERSION = 1


def default_cache_dir() -> Path:
    """Where pose cache entries live unless a directory is given."""
    root = os.environ.get("VIDTRIPLANE_CACHE")
    if root:
        return Path(root) / "poses"
    return cache_dir() / "poses"


def hash_bytes(data: bytes) -> str:
    """sha256 hex digest of bytes."""
    return hashlib.sha256(data).hexdigest()


def hash_file(path: str | Path) -> str:
    """sha256 hex digest of a file's content (streamed)."""
    return sha256_file(Path(path))


def hash_files(paths: Iterable[str | Path]) -> str:
    """One digest for an ordered list of files (an image folder): names and contents."""
    h = hashlib.sha256()
    for p in paths:
        h.update(Path(p).name.encode() + b"\0" + hash_file(p).encode())
    return h.hexdigest()


def settings_hash(settings: Mapping[str, Any]) -> str:
    """Digest of a JSON-able settings mapping (key order does not matter)."""
    return hash_bytes(json.dumps(settings, sort_keys=True, default=str).encode())


def cache_key(input_hash: str, settings: Mapping[str, Any]) -> str:
    """The entry name for an input content hash + geometry settings."""
    return hash_bytes(f"v{CACHE_VERSION}:{input_hash}:{settings_hash(settings)}".encode())[:32]


class PoseCache:
    """A directory of pose cache entries."""

    def __init__(self, directory: str | Path | None = None) -> None:
        self.directory = Path(directory) if directory is not None else default_cache_dir()

    def paths(self, key: str) -> tuple[Path, Path]:
        """(.npz, .json) paths of an entry."""
        return self.directory / f"{key}.npz", self.directory / f"{key}.json"

    def load(self, input_hash: str, settings: Mapping[str, Any]) -> Optional[dict[str, np.ndarray]]:
        """The stored arrays for this input + settings, or None (missing, stale or unreadable entry)."""
        npz, meta_path = self.paths(cache_key(input_hash, settings))
        if not (npz.is_file() and meta_path.is_file()):
            return None
        try:
            meta = json.loads(meta_path.read_text())
            if (
                meta.get("version") != CACHE_VERSION
                or meta.get("input_hash") != input_hash
                or meta.get("settings_hash") != settings_hash(settings)
            ):
                return None
            with np.load(npz, allow_pickle=False) as data:
                arrays = {k: data[k] for k in data.files}
        except (OSError, ValueError, json.JSONDecodeError):
            return None
        if any(len(v) != meta.get("n_frames") for v in arrays.values()):
            return None
        return arrays

    def save(
        self, input_hash: str, settings: Mapping[str, Any], arrays: Mapping[str, np.ndarray], **info: Any
    ) -> Path:
        """Store per-frame arrays (all with the same first dimension); returns the .npz path."""
        lengths = {len(v) for v in arrays.values()}
        if len(lengths) != 1:
            raise ValueError(f"pose cache arrays must all have one length per frame, got {sorted(lengths)}")
        key = cache_key(input_hash, settings)
        npz, meta_path = self.paths(key)
        self.directory.mkdir(parents=True, exist_ok=True)
        # write to temporary names, then rename, so a crash never leaves a half entry behind
        fd, tmp = tempfile.mkstemp(dir=self.directory, suffix=".npz")
        os.close(fd)
        np.savez_compressed(tmp, **{k: np.asarray(v) for k, v in arrays.items()})
        os.replace(tmp, npz)
        meta = {
            "version": CACHE_VERSION,
            "input_hash": input_hash,
            "settings_hash": settings_hash(settings),
            "settings": settings,
            "n_frames": lengths.pop(),
            "fields": sorted(arrays),
            **info,
        }
        atomic_write_text(meta_path, json.dumps(meta, indent=1, default=str))
        return npz


def concat_geometry(parts: list[Mapping[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Join per-batch geometry dicts into one per-video dict."""
    if not parts:
        return {}
    return {k: np.concatenate([p[k] for p in parts], axis=0) for k in parts[0]}


def slice_geometry(arrays: Mapping[str, np.ndarray], index: np.ndarray) -> dict[str, np.ndarray]:
    """The rows of cached geometry for the frame numbers ``index``."""
    return {k: v[index] for k, v in arrays.items()}
