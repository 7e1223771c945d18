"""What the rest of vidtriplane calls: ``resolve`` a name to a file, ``fetch``, ``import_file``, ``verify``.

    from vidtriplane.weights import resolve
    path = resolve("triplanenet-v1")      # downloads on first use, unless offline

Offline mode (``offline=True`` or ``VIDTRIPLANE_OFFLINE=1``) never touches the network: a missing file
raises ``WeightsMissing`` whose message names the file, where to get it and the exact
``vidtriplane weights import`` command.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

from vidtriplane.errors import VidtriplaneError
from vidtriplane.weights import store
from vidtriplane.weights.download import DownloadError, download
from vidtriplane.weights.registry import WeightEntry, get_entry
from vidtriplane.weights.validate import Expectations, InvalidWeights, ValidationReport

log = logging.getLogger(__name__)

OFFLINE_ENV = "VIDTRIPLANE_OFFLINE"


class WeightsMissing(VidtriplaneError, FileNotFoundError):
    """A weight file that is not in the cache and may not be downloaded (offline mode)."""

    def __str__(self) -> str:  # FileNotFoundError would format (errno, strerror) otherwise
        return str(self.args[0])


class ImportSourceMissing(VidtriplaneError, FileNotFoundError):
    """The file given to ``weights import`` does not exist."""

    def __str__(self) -> str:
        return str(self.args[0])


class AlreadyStored(VidtriplaneError, FileExistsError):
    """``weights import`` of an entry the cache already holds (``--force`` replaces it)."""

    def __str__(self) -> str:
        return str(self.args[0])


def offline_from_env() -> bool:
    """Whether ``VIDTRIPLANE_OFFLINE`` asks for offline mode (1/true/yes/on)."""
    return os.environ.get(OFFLINE_ENV, "").strip().lower() in ("1", "true", "yes", "on")


def import_command(entry: WeightEntry, path: str | None = None) -> str:
    """The exact command that imports a hand-downloaded copy of ``entry``."""
    return f"vidtriplane weights import {entry.name} {path or '/path/to/' + entry.filename}"


def missing_message(entry: WeightEntry, *, why: str) -> str:
    """Multi-line explanation of a missing file: what, where it would live, where to get it, how to import."""
    lines = [
        f"weights {entry.name!r} ({entry.filename}, {entry.display_size}) are not in the cache "
        f"({store.stored_path(entry)}) and {why}.",
        "Download the file from:",
        *[f"  {url}" for url in entry.urls],
    ]
    if entry.homepage:
        lines.append(f"  (documented at {entry.homepage})")
    if entry.notes:
        lines.append(f"Note: {entry.notes}")
    lines += ["then run:", f"  {import_command(entry)}", f"Licence: {entry.licence}"]
    return "\n".join(lines)


def manual_hint(entry: WeightEntry) -> str:
    """How to get ``entry`` by hand after a failed download; ends with the import command."""
    mirror = f" or from the {entry.mirror}" if entry.mirror else ""
    return f"Download {entry.filename} by hand from {entry.urls[0]}{mirror}, then run:\n  {import_command(entry)}"


def offline_one_line(entry: WeightEntry, what: str) -> str:
    """One line for a missing file in offline mode: the import command and a second source if any."""
    mirror = f" or from the {entry.mirror}" if entry.mirror else ""
    return (f"{what} {entry.name!r} is not in the weight store ({store.stored_path(entry)}) and offline mode "
            f"forbids downloading it: get {entry.filename} from {entry.urls[0]}{mirror} and run "
            f"`vidtriplane weights import {entry.name} PATH`")


@dataclass(frozen=True)
class StoredWeights:
    """A file now in the cache."""

    entry: WeightEntry
    """Its registry entry."""
    path: Path
    """The usable file (safetensors for a converted .pkl)."""
    published_sha256: str | None
    """sha256 of the file as published/imported (None when it was already cached)."""
    report: ValidationReport | None
    """Result of the structure check (None when it was already cached)."""


def resolve(name: str, *, offline: bool | None = None, fetch_missing: bool = True,
            registry: Mapping[str, WeightEntry] | None = None, progress: bool = True) -> Path:
    """Path of the cached file for ``name``; downloads it when missing unless offline.

    ``offline=None`` reads ``VIDTRIPLANE_OFFLINE``. Raises ``WeightsMissing`` when the file is absent and
    may not be downloaded (offline, or ``fetch_missing=False``).
    """
    entry = get_entry(name, registry)
    path = store.stored_path(entry)
    if path.is_file():
        return path
    offline = offline_from_env() if offline is None else offline
    if offline:
        raise WeightsMissing(missing_message(entry, why="offline mode is on (--offline or VIDTRIPLANE_OFFLINE=1)"))
    if not fetch_missing:
        raise WeightsMissing(missing_message(entry, why="downloading was not allowed"))
    log.info("weights %r are not in the cache yet: downloading %s (%s, licence: %s) to %s",
             entry.name, entry.filename, entry.display_size, entry.licence, path)
    return fetch(name, registry=registry, progress=progress, offline=False).path


def fetch(name: str, *, force: bool = False, offline: bool | None = None,
          registry: Mapping[str, WeightEntry] | None = None, progress: bool = True, retries: int = 3,
          timeout: float = 60.0, expectations: Expectations | None = None) -> StoredWeights:
    """Download ``name`` into the cache (resuming a partial download), check it, store it atomically."""
    entry = get_entry(name, registry)
    path = store.stored_path(entry)
    if path.is_file() and not force:
        return StoredWeights(entry, path, None, None)
    offline = offline_from_env() if offline is None else offline
    if offline:
        raise WeightsMissing(missing_message(entry, why="offline mode forbids downloading it"))
    with store.entry_lock(entry):
        if path.is_file() and not force:  # another process fetched it while we waited
            return StoredWeights(entry, path, None, None)
        return _fetch_locked(entry, path, progress=progress, retries=retries, timeout=timeout,
                             expectations=expectations)


def _fetch_locked(entry: WeightEntry, path: Path, *, progress: bool, retries: int, timeout: float,
                  expectations: Expectations | None) -> StoredWeights:
    """Download to ``<file>.incoming`` (resuming its ``.part``), validate/convert, store; lock held."""
    incoming = store.incoming_path(entry)
    try:
        result = download(entry.urls, incoming, sha256=entry.sha256, md5=entry.md5, retries=retries,
                          timeout=timeout, progress=progress, label=entry.filename)
    except DownloadError as err:
        raise type(err)(f"{err}\n{manual_hint(entry)}") from None
    try:
        report = _store(entry, incoming, expectations=expectations, provenance={"url": result.url})
    finally:
        incoming.unlink(missing_ok=True)
    store.write_source_record(entry, url=result.url, published_sha256=result.sha256, published_md5=result.md5,
                              stored_sha256=store.sha256_file(path))
    return StoredWeights(entry, path, result.sha256, report)


def import_file(name: str, source: Path, *, force: bool = False,
                registry: Mapping[str, WeightEntry] | None = None,
                expectations: Expectations | None = None) -> StoredWeights:
    """Validate a local copy of ``name`` (converting a .pkl or the MTCNN files), then copy it into the cache
    atomically. MTCNN also takes a folder (see :mod:`vidtriplane.weights.mtcnn_files`)."""
    entry = get_entry(name, registry)
    source = Path(source).expanduser()
    if not (source.is_file() or (entry.kind == "mtcnn" and source.is_dir())):
        what = "a file or a folder" if entry.kind == "mtcnn" else "a file"
        raise ImportSourceMissing(f"{source} does not exist or is not {what}")
    path = store.stored_path(entry)
    if path.is_file() and not force:
        raise AlreadyStored(f"{entry.name} is already in the cache ({path}); add --force to replace it")
    published = source.is_file() and _is_published_form(entry, source)
    hashes = store.file_hashes(source, algorithms=("sha256", "md5")) if source.is_file() else {}
    mismatches: list[str] = []
    if published and entry.sha256 and not store.sha256_matches(entry.sha256, hashes["sha256"]):
        mismatches.append(f"sha256 {hashes['sha256']} differs from the published file's ({entry.sha256})")
    if published and entry.md5 and hashes["md5"] != entry.md5:
        mismatches.append(f"md5 {hashes['md5']} differs from the published file's ({entry.md5})")
    if mismatches and entry.kind == "onnx":  # no structure check to fall back on: the checksum decides
        raise InvalidWeights(f"{source} is not the published {entry.filename}: " + "; ".join(mismatches))
    warnings = [m + "; it passed the structure check, so it is accepted" for m in mismatches]
    with store.entry_lock(entry):
        report = _store(entry, source, expectations=expectations, provenance={"imported_from": str(source)},
                        copy=True)
        store.write_source_record(entry, imported_from=str(source.resolve()), published_sha256=hashes.get("sha256"),
                                  published_md5=hashes.get("md5"), stored_sha256=store.sha256_file(path))
    report = ValidationReport(report.kind, report.summary, report.warnings + tuple(warnings))
    return StoredWeights(entry, path, hashes.get("sha256"), report)


def _is_published_form(entry: WeightEntry, source: Path) -> bool:
    """Whether ``source`` is the kind of file the pinned checksums describe (MTCNN: the wheel, not a .pt)."""
    if entry.kind != "mtcnn":
        return True
    from vidtriplane.weights import mtcnn_files

    return mtcnn_files.wheel_members(source) is not None


def _store(entry: WeightEntry, source: Path, *, expectations: Expectations | None, provenance: dict,
           copy: bool = False) -> ValidationReport:
    """Check ``source`` against the entry's kind and place it (or its conversion) at the stored path."""
    from vidtriplane.weights import validate

    dest = store.stored_path(entry)
    dest.parent.mkdir(parents=True, exist_ok=True)
    if entry.kind == "eg3d-pkl":
        from vidtriplane.checkpoints import save_converted
        from vidtriplane.models.state import shapes_of
        from vidtriplane.weights.pickle_safe import read_nvidia_pickle

        net = read_nvidia_pickle(source)
        validate.check_eg3d_state(shapes_of(net.state_dict), expectations or validate.model_shapes)
        save_converted(net, dest, provenance=provenance)
        return ValidationReport(entry.kind, f"EG3D {net.config['class_name']} from NVIDIA pickle: "
                                f"{len(net.state_dict)} tensors, converted to safetensors")
    if entry.kind == "mtcnn":
        return _store_mtcnn(entry, source, dest, expectations)
    report = validate.validate_file(entry.kind, source, expectations=expectations)
    if copy:
        store.atomic_copy(source, dest)
    else:
        os.replace(source, dest)
    return report


def _store_mtcnn(entry: WeightEntry, source: Path, dest: Path, expectations: Expectations | None) -> ValidationReport:
    """Read the wheel / .pt files / folder, check the three networks, store them as one state_dict."""
    from vidtriplane.weights import mtcnn_files, validate

    found = mtcnn_files.read_source(source)
    report = validate.validate_object("mtcnn", found.state_dict, expectations=expectations)
    pins = entry.extra.get("members", {})
    warnings = [f"{net}.pt has sha256 {digest}, the published file's is {pins[net]}; it passed the structure "
                "check, so it is accepted" for net, digest in found.member_sha256.items()
                if net in pins and digest != pins[net]]
    mtcnn_files.save(found.state_dict, dest)
    return ValidationReport(report.kind, f"{report.summary} (from {found.kind}), stored as {dest.name}",
                            report.warnings + tuple(warnings))


@dataclass(frozen=True)
class VerifyResult:
    """Outcome of ``verify`` for one entry."""

    entry: WeightEntry
    """The entry checked."""
    state: str
    """'ok', 'unpinned' (no reference hash to compare with), 'mismatch' or 'missing'."""
    sha256: str | None
    """sha256 of the stored file (None when missing)."""
    detail: str
    """One line for the user."""


def verify(name: str | None = None, *, registry: Mapping[str, WeightEntry] | None = None) -> list[VerifyResult]:
    """Hash the cached files and compare with the pinned sha256 (or the hash recorded on arrival)."""
    from vidtriplane.weights.registry import REGISTRY

    table = REGISTRY if registry is None else registry
    entries = [get_entry(name, table)] if name else list(table.values())
    results = []
    for entry in entries:
        path = store.stored_path(entry)
        if not path.is_file():
            results.append(VerifyResult(entry, "missing", None, f"not in the cache ({path})"))
            continue
        hashes = store.file_hashes(path, algorithms=("sha256", "md5"))
        actual = hashes["sha256"]
        record = store.read_source_record(entry)
        stored_is_published = not entry.converted
        if stored_is_published and (entry.sha256 or entry.md5):
            if entry.sha256:
                ok = store.sha256_matches(entry.sha256, actual)
                detail = "matches the pinned sha256" if ok else f"pinned sha256 is {entry.sha256}"
            else:
                ok = hashes["md5"] == entry.md5
                detail = "matches the pinned md5" if ok else f"md5 {hashes['md5']}, pinned {entry.md5}"
            if not ok and record.get("imported_from") and record.get("stored_sha256") == actual:
                detail += " (an imported copy that differs from the published file, unchanged since import)"
            results.append(VerifyResult(entry, "ok" if ok else "mismatch", actual, detail))
        elif record.get("stored_sha256"):
            ok = record["stored_sha256"] == actual
            detail = ("unchanged since it was stored (no published sha256 pinned)" if ok
                      else f"changed since it was stored (recorded sha256 {record['stored_sha256']})")
            results.append(VerifyResult(entry, "ok" if ok else "mismatch", actual, detail))
        else:
            results.append(VerifyResult(entry, "unpinned", actual, "no pinned or recorded sha256 to compare with"))
    return results
