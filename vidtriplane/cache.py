"""Pose cache: per-frame preprocessing geometry stored once, reused by later runs on the same input.

An entry is ``<key>.npz`` (the per-frame arrays: landmarks, crop matrices, labels, confidences,
face-found / held / fallback flags; with the MTCNN backend five-point landmarks and dlib's 68 pose points)
plus ``<key>.json`` (input hash, settings, frame count, version).
The key hashes the input's *content* and the geometry settings, so renaming a file still hits, and
changing the video or any landmark / crop / pose / smoothing setting misses (a stale entry is never
read: the JSON is checked against both on load). Re-rendering another view of the same video therefore
skips face detection and pose estimation entirely.

An entry that cannot be read or does not pass :func:`check_geometry` (a truncated ``.npz``, a ``.json``
that is not an object, NaN labels, a wrong dtype or shape, a missing field) is a miss: ``load`` logs one
warning naming the file and returns None, the caller recomputes, and its ``save`` replaces the entry.

The cache directory is ``$VIDTRIPLANE_CACHE/poses``, else ``poses/`` in the weight cache's root
(``$VIDTRIPLANE_HOME``, else ``$XDG_CACHE_HOME/vidtriplane``, else ``~/.cache/vidtriplane``).
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping, Optional

import numpy as np

from vidtriplane.weights.store import atomic_write_text, cache_dir, sha256_file

log = logging.getLogger(__name__)

CACHE_VERSION = 1


@dataclass(frozen=True)
class FieldSpec:
    """What one stored per-frame array must look like: ``[n_frames, *trailing]`` of ``dtype``."""

    trailing: tuple[int, ...]
    """Shape after the frame axis."""
    dtype: str
    """``float32`` or ``bool``; float arrays of another width are converted, other kinds are rejected."""
    finite: bool
    """Every value must be finite (no NaN/inf); False allows NaN (but not inf), e.g. landmarks of no face."""
    also: tuple[tuple[int, ...], ...] = ()
    """Other accepted shapes after the frame axis."""


#: the per-frame geometry a pose cache entry holds (the fields of ``stages.preprocess.geometry``)
GEOMETRY: dict[str, FieldSpec] = {
    # 68 dlib points or MTCNN's 5; NaN where no face was found
    "landmarks": FieldSpec((68, 2), "float32", finite=False, also=((5, 2),)),
    "face_found": FieldSpec((), "bool", finite=True),
    "held": FieldSpec((), "bool", finite=True),
    "confidence": FieldSpec((), "float32", finite=True),
    "crop_matrix": FieldSpec((2, 3), "float32", finite=True),
    "labels": FieldSpec((25,), "float32", finite=True),
    "fallback": FieldSpec((), "bool", finite=True),
}
#: fields an entry holds only with some settings: dlib's 68 points for the pose of the MTCNN backend
OPTIONAL_GEOMETRY: dict[str, FieldSpec] = {
    "pose_landmarks": FieldSpec((68, 2), "float32", finite=False),
}


def check_geometry(arrays: Mapping[str, Any], n_frames: Optional[int] = None,
                   schema: Mapping[str, FieldSpec] = GEOMETRY,
                   optional: Mapping[str, FieldSpec] = OPTIONAL_GEOMETRY) -> dict[str, np.ndarray]:
    """The arrays in their canonical dtypes, or ValueError naming the first field that is wrong.

    Checks: every field of ``schema``, those of ``optional`` that are there, no others; ``[n_frames,
    *trailing]`` shapes (or one of ``also``; ``n_frames`` defaults to the first field's length, and must be
    at least 1); the dtype kind; finite values.
    """
    missing = sorted(set(schema) - set(arrays))
    extra = sorted(set(arrays) - set(schema) - set(optional))
    if missing or extra:
        raise ValueError(f"fields differ from the expected ones (missing {missing}, unexpected {extra})")
    specs = {**schema, **{k: v for k, v in optional.items() if k in arrays}}
    out: dict[str, np.ndarray] = {}
    for name, spec in specs.items():
        value = np.asarray(arrays[name])
        if n_frames is None:
            n_frames = len(value) if value.ndim else 0
        wants = [(n_frames, *trailing) for trailing in (spec.trailing, *spec.also)]
        if value.shape not in wants or n_frames < 1:
            shown = " or ".join(str(list(w)) for w in wants)
            raise ValueError(f"field {name!r} has shape {list(value.shape)}, expected {shown} (one row per frame)")
        if value.dtype.kind != np.dtype(spec.dtype).kind:
            raise ValueError(f"field {name!r} is {value.dtype}, expected {spec.dtype}")
        value = value.astype(spec.dtype, copy=False)
        if value.dtype.kind == "f":
            bad = ~np.isfinite(value) if spec.finite else np.isinf(value)
            if bad.any():
                raise ValueError(f"field {name!r} holds {int(bad.sum())} non-finite values")
        out[name] = value
    return out


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
        """The stored arrays for this input + settings, or None (no entry, or an unusable one: logged once)."""
        npz, meta_path = self.paths(cache_key(input_hash, settings))
        if not (npz.exists() or meta_path.exists()):
            return None
        try:
            return _read_entry(npz, meta_path, input_hash, settings)
        except Exception as exc:  # anything unreadable or invalid is a miss, never a failed run
            reason = str(exc).strip() or type(exc).__name__
            log.warning("pose cache entry %s is unusable (%s); ignoring it, it is replaced once this video's "
                        "poses are computed again", npz, reason)
            return None

    def save(
        self, input_hash: str, settings: Mapping[str, Any], arrays: Mapping[str, np.ndarray], **info: Any
    ) -> Path:
        """Store per-frame arrays (the fields of :data:`GEOMETRY` and any of :data:`OPTIONAL_GEOMETRY`, one row
        per frame); returns the .npz path."""
        try:
            arrays = check_geometry(arrays)
        except ValueError as exc:
            raise ValueError(f"cannot store pose cache arrays: {exc}") from None
        key = cache_key(input_hash, settings)
        npz, meta_path = self.paths(key)
        self.directory.mkdir(parents=True, exist_ok=True)
        # write to temporary names, then rename, so a crash never leaves a half entry behind
        fd, tmp = tempfile.mkstemp(dir=self.directory, suffix=".npz")
        os.close(fd)
        np.savez_compressed(tmp, **arrays)
        os.replace(tmp, npz)
        meta = {
            "version": CACHE_VERSION,
            "input_hash": input_hash,
            "settings_hash": settings_hash(settings),
            "settings": settings,
            "n_frames": len(next(iter(arrays.values()))),
            "fields": sorted(arrays),
            **info,
        }
        atomic_write_text(meta_path, json.dumps(meta, indent=1, default=str))
        return npz


def _read_entry(npz: Path, meta_path: Path, input_hash: str, settings: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """Read and check one entry; any problem raises (the caller turns it into a miss)."""
    meta = json.loads(meta_path.read_text())
    if not isinstance(meta, dict):
        raise ValueError(f"{meta_path.name} holds a {type(meta).__name__}, not an object")
    if meta.get("version") != CACHE_VERSION:
        raise ValueError(f"version {meta.get('version')!r}, expected {CACHE_VERSION}")
    if meta.get("input_hash") != input_hash or meta.get("settings_hash") != settings_hash(settings):
        raise ValueError("it was made for another input or other settings")
    n_frames = meta.get("n_frames")
    if not isinstance(n_frames, int) or isinstance(n_frames, bool) or n_frames < 1:
        raise ValueError(f"n_frames is {n_frames!r}, not a positive integer")
    with np.load(npz, allow_pickle=False) as data:
        arrays = {k: data[k] for k in data.files}
    return check_geometry(arrays, n_frames)


def concat_geometry(parts: list[Mapping[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Join per-batch geometry dicts into one per-video dict."""
    if not parts:
        return {}
    return {k: np.concatenate([p[k] for p in parts], axis=0) for k in parts[0]}


def slice_geometry(arrays: Mapping[str, np.ndarray], index: np.ndarray) -> dict[str, np.ndarray]:
    """The rows of cached geometry for the frame numbers ``index``."""
    return {k: v[index] for k, v in arrays.items()}
