"""resolve / fetch / import_file / verify against a local server and a temp cache."""
from __future__ import annotations

import dataclasses
import hashlib
import io
import logging
import multiprocessing
import socket
from pathlib import Path

import pytest
import torch

from tests.weights.conftest import send_file
from tests.weights.nvidia_pickle import build_snapshot
from vidtriplane.checkpoints import read_converted
from vidtriplane.models.state import shapes_of
from vidtriplane.weights import REGISTRY, WeightsMissing, fetch, import_file, resolve, store, verify
from vidtriplane.weights.download import DownloadError
from vidtriplane.weights.loader import UnsafePickle
from vidtriplane.weights.validate import LPIPS_ALEX_SHAPES, InvalidWeights


def lpips_bytes(seed: int = 0) -> bytes:
    gen = torch.Generator().manual_seed(seed)
    buf = io.BytesIO()
    torch.save({k: torch.rand(s, generator=gen) for k, s in LPIPS_ALEX_SHAPES.items()}, buf)
    return buf.getvalue()


def local_registry(server, **changes) -> dict:
    """The real registry with every URL pointed at the local server (/<name>)."""
    table = {name: dataclasses.replace(e, urls=(server.url(f"/{name}"),), sha256=None, md5=None)
             for name, e in REGISTRY.items()}
    for name, fields in changes.items():
        table[name] = dataclasses.replace(table[name], **fields)
    return table


def files_in(folder: Path) -> list[str]:
    """Names in a cache folder, without the lock file."""
    return sorted(p.name for p in folder.iterdir() if p.name != store.LOCK_FILE)


def test_cache_dir_precedence(tmp_path, monkeypatch):
    monkeypatch.setenv("VIDTRIPLANE_HOME", str(tmp_path / "a"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "x"))
    assert store.cache_dir() == tmp_path / "a"
    monkeypatch.delenv("VIDTRIPLANE_HOME")
    assert store.cache_dir() == tmp_path / "x" / "vidtriplane"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "h"))
    assert store.cache_dir() == tmp_path / "h" / ".cache" / "vidtriplane"


@pytest.mark.parametrize("how", ["argument", "environment"])
def test_offline_error_names_file_url_and_import_command(cache, monkeypatch, how):
    if how == "environment":
        monkeypatch.setenv("VIDTRIPLANE_OFFLINE", "1")
    with pytest.raises(WeightsMissing) as info:
        resolve("triplanenet-v1", offline=True if how == "argument" else None)
    text = str(info.value)
    assert "triplanenet_final.pth" in text
    assert "https://drive.google.com/uc?export=download&id=17pzNC00BOFCu0oCqbCybfAiaZF7iwNUU" in text
    assert "vidtriplane weights import triplanenet-v1 /path/to/triplanenet_final.pth" in text
    assert str(cache / "triplanenet-v1" / "triplanenet_final.pth") in text
    assert not cache.exists() or not any(cache.rglob("*.pth"))


def test_resolve_downloads_once_with_a_message(cache, server, caplog):
    data = lpips_bytes()
    server.routes["/lpips-alex-v0.1"] = lambda h, q: send_file(h, data)
    table = local_registry(server)
    with caplog.at_level(logging.INFO, logger="vidtriplane"):
        path = resolve("lpips-alex-v0.1", registry=table, progress=False)
    assert path == cache / "lpips-alex-v0.1" / "alex.pth" and path.read_bytes() == data
    assert "not in the cache yet: downloading alex.pth" in caplog.text
    assert f"sha256 of alex.pth: {hashlib.sha256(data).hexdigest()}" in caplog.text  # unpinned: logged
    assert {r.name for r in caplog.records} == {"vidtriplane.weights.api", "vidtriplane.weights.download"}
    assert resolve("lpips-alex-v0.1", registry=table, offline=True) == path  # cached: no network needed
    assert server.requests == [("/lpips-alex-v0.1", None)]  # one plain request, no retry or range
    assert files_in(path.parent) == ["alex.pth", "source.json"]
    with pytest.raises(WeightsMissing, match="downloading was not allowed"):
        resolve("u2netp", registry=table, fetch_missing=False)


def test_interrupted_fetch_shows_partial_then_resumes(cache, server):
    data = lpips_bytes()
    server.routes["/lpips-alex-v0.1"] = lambda h, q: send_file(h, data, drop_after=2000)
    table = local_registry(server)
    entry = table["lpips-alex-v0.1"]
    with pytest.raises(Exception, match="resume"):
        fetch("lpips-alex-v0.1", registry=table, progress=False, retries=0)
    assert store.status(entry).describe(entry) == f"partial {100 * 2000 // entry.size}%"
    unsized = dataclasses.replace(entry, size=None)
    assert store.status(unsized).describe(unsized) == "partial (2.0 kB)"
    assert not store.stored_path(entry).exists()
    server.routes["/lpips-alex-v0.1"] = lambda h, q: send_file(h, data)
    fetch("lpips-alex-v0.1", registry=table, progress=False, retries=0)
    assert store.stored_path(entry).read_bytes() == data and store.status(entry).state == "cached"
    assert server.ranges("/lpips-alex-v0.1")[-1] == "bytes=2000-"


def test_fetch_rejects_a_file_with_the_wrong_structure(cache, server):
    buf = io.BytesIO()
    torch.save({"lin0.model.1.weight": torch.zeros(1, 3, 1, 1)}, buf)
    server.routes["/lpips-alex-v0.1"] = lambda h, q: send_file(h, buf.getvalue())
    with pytest.raises(InvalidWeights, match=r"lin0.model.1.weight \(checkpoint \[1, 3, 1, 1\] vs model \[1, 64, 1, 1\]\)"):
        fetch("lpips-alex-v0.1", registry=local_registry(server), progress=False)
    assert files_in(cache / "lpips-alex-v0.1") == []  # nothing that looks complete


def test_fetch_checksum_mismatch_stores_nothing(cache, server):
    server.routes["/lpips-alex-v0.1"] = lambda h, q: send_file(h, lpips_bytes())
    table = local_registry(server, **{"lpips-alex-v0.1": {"sha256": "ab" * 32}})
    with pytest.raises(Exception, match="checksum mismatch"):
        fetch("lpips-alex-v0.1", registry=table, progress=False)
    assert files_in(cache / "lpips-alex-v0.1") == []


def test_fetch_nvidia_pickle_is_converted(cache, server, tmp_path, monkeypatch):
    data, g_ema = build_snapshot(tmp_path / "ran")
    server.routes["/eg3d-ffhq512-128-pkl"] = lambda h, q: send_file(h, data)
    expected = shapes_of(g_ema.state_dict())
    result = fetch("eg3d-ffhq512-128-pkl", registry=local_registry(server), progress=False,
                   expectations=lambda part: expected if part == "eg3d_G" else None)
    folder = cache / "eg3d-ffhq512-128-pkl"
    assert files_in(folder) == ["ffhq512-128.json", "ffhq512-128.safetensors", "source.json"]
    assert result.path == folder / "ffhq512-128.safetensors"
    net = read_converted(result.path)
    assert net.config["provenance"]["url"].endswith("/eg3d-ffhq512-128-pkl")
    assert all(torch.equal(net.state_dict[k], v) for k, v in g_ema.state_dict().items())
    assert not (tmp_path / "ran").exists()


def test_fetch_nvidia_pickle_that_does_not_match_the_generator(cache, server, tmp_path):
    data, _ = build_snapshot(tmp_path / "ran")
    server.routes["/eg3d-ffhq512-128-pkl"] = lambda h, q: send_file(h, data)
    with pytest.raises(InvalidWeights, match="entries"):  # coarse check: 176 official entries expected
        fetch("eg3d-ffhq512-128-pkl", registry=local_registry(server), progress=False,
              expectations=lambda part: None)
    assert files_in(cache / "eg3d-ffhq512-128-pkl") == []


def test_import_verify_and_tamper(cache, tmp_path):
    src = tmp_path / "alex.pth"
    src.write_bytes(lpips_bytes())
    table = {"lpips-alex-v0.1": dataclasses.replace(REGISTRY["lpips-alex-v0.1"], sha256=None)}  # unpinned
    result = import_file("lpips-alex-v0.1", src, registry=table)
    assert result.path.read_bytes() == src.read_bytes() and not result.report.warnings
    assert store.status(table["lpips-alex-v0.1"]).state == "imported"
    [ok] = verify("lpips-alex-v0.1", registry=table)
    assert ok.state == "ok" and ok.sha256 == hashlib.sha256(src.read_bytes()).hexdigest()

    with pytest.raises(FileExistsError, match="--force"):
        import_file("lpips-alex-v0.1", src, registry=table)

    with open(result.path, "r+b") as f:  # corrupt the cached copy
        f.seek(100)
        f.write(b"\xff\xff\xff\xff")
    [bad] = verify("lpips-alex-v0.1", registry=table)
    assert bad.state == "mismatch" and "changed since it was stored" in bad.detail


def test_import_rejects_wrong_kind_before_copying(cache, tmp_path):
    src = tmp_path / "alex.pth"
    src.write_bytes(lpips_bytes())
    with pytest.raises(InvalidWeights, match="alexnet"):
        import_file("alexnet", src)
    assert not (cache / "alexnet" / "alexnet-owt-7be5be79.pth").exists()


def test_import_hostile_pkl_is_rejected(cache, tmp_path):
    import os
    import pickle

    marker = tmp_path / "ran"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    src = tmp_path / "ffhq512-128.pkl"
    src.write_bytes(pickle.dumps({"G_ema": Evil()}))
    with pytest.raises(UnsafePickle, match="posix.system"):
        import_file("eg3d-ffhq512-128-pkl", src)
    assert not marker.exists()
    assert not (cache / "eg3d-ffhq512-128-pkl" / "ffhq512-128.safetensors").exists()


def test_import_with_pinned_hash_mismatch_warns(cache, tmp_path, monkeypatch):
    src = tmp_path / "alex.pth"
    src.write_bytes(lpips_bytes())
    table = {"lpips-alex-v0.1": dataclasses.replace(REGISTRY["lpips-alex-v0.1"], sha256="0" * 64)}
    result = import_file("lpips-alex-v0.1", src, registry=table)
    assert any("differs from the published file" in w for w in result.report.warnings)
    [r] = verify("lpips-alex-v0.1", registry=table)
    assert r.state == "mismatch" and "unchanged since import" in r.detail


def test_verify_pinned_ok(cache, tmp_path):
    src = tmp_path / "alex.pth"
    src.write_bytes(lpips_bytes())
    digest = hashlib.sha256(src.read_bytes()).hexdigest()
    table = {"lpips-alex-v0.1": dataclasses.replace(REGISTRY["lpips-alex-v0.1"], sha256=digest[:12])}
    table["u2netp"] = REGISTRY["u2netp"]
    import_file("lpips-alex-v0.1", src, registry=table)
    (cache / "lpips-alex-v0.1" / "source.json").unlink()
    lpips, u2netp = verify(registry=table)
    assert (lpips.entry, lpips.state, lpips.sha256) == (table["lpips-alex-v0.1"], "ok", digest)
    assert lpips.detail == "matches the pinned sha256"
    assert (cache / "lpips-alex-v0.1" / "alex.pth").read_bytes() == src.read_bytes()
    assert (u2netp.entry.name, u2netp.state, u2netp.sha256) == ("u2netp", "missing", None)
    assert u2netp.detail == f"not in the cache ({cache / 'u2netp' / 'u2netp.onnx'})"


def _hold_lock_until_told(entry, conn) -> None:
    """Another process: take the entry's lock, say so, write the file when told, then release the lock."""
    with store.entry_lock(entry):
        conn.send("locked")
        assert conn.recv() == "go"
        store.atomic_write_text(store.stored_path(entry), "fetched by the other one")
    conn.close()


class _SendOnRecord(logging.Handler):
    """Sends ``go`` down a pipe when a log record containing ``needle`` is emitted."""

    def __init__(self, conn, needle: str) -> None:
        super().__init__()
        self.conn, self.needle, self.seen = conn, needle, []

    def emit(self, record: logging.LogRecord) -> None:
        if self.needle in record.getMessage():
            self.seen.append(record.getMessage())
            self.conn.send("go")


def test_parallel_fetch_waits_for_the_other_process(cache, server):
    """While another process holds the entry's lock, a fetch waits (and says so), then uses its file.

    Ordering by pipe only: the other process writes its file after this one has announced that it waits."""
    server.routes["/lpips-alex-v0.1"] = lambda h, q: send_file(h, lpips_bytes())
    table = local_registry(server)
    entry = table["lpips-alex-v0.1"]
    ours, theirs = multiprocessing.Pipe()
    other = multiprocessing.get_context("fork").Process(target=_hold_lock_until_told, args=(entry, theirs))
    other.start()
    handler = _SendOnRecord(ours, "waiting for another process")
    logger = logging.getLogger("vidtriplane.weights.store")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        assert ours.poll(60) and ours.recv() == "locked"
        result = fetch("lpips-alex-v0.1", registry=table, progress=False)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(logging.NOTSET)
        other.join(60)
    assert other.exitcode == 0
    assert handler.seen == ["waiting for another process that is fetching lpips-alex-v0.1 ..."]
    assert result.path.read_text() == "fetched by the other one" and result.report is None
    assert server.requests == []


def test_unreachable_hosts_fail_fast_and_end_with_the_import_command(cache, monkeypatch):
    """No name resolution / connection refused: one attempt per URL, each URL listed once, then the way out."""
    from vidtriplane.weights import download as download_module

    refusing = socket.socket()  # bound but not listening: connecting is refused
    refusing.bind(("127.0.0.1", 0))
    real_getaddrinfo = socket.getaddrinfo

    def no_dns(host, *args, **kwargs):
        if host == "weights.invalid":
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return real_getaddrinfo(host, *args, **kwargs)

    sleeps = []
    monkeypatch.setattr(socket, "getaddrinfo", no_dns)
    monkeypatch.setattr(download_module.time, "sleep", sleeps.append)
    urls = ("http://weights.invalid/alex.pth", f"http://127.0.0.1:{refusing.getsockname()[1]}/alex.pth")
    table = {"lpips-alex-v0.1": dataclasses.replace(REGISTRY["lpips-alex-v0.1"], urls=urls)}
    try:
        with pytest.raises(DownloadError) as info:
            fetch("lpips-alex-v0.1", registry=table, progress=False, retries=5)
    finally:
        refusing.close()
    lines = str(info.value).splitlines()
    assert sleeps == []  # not retried
    assert lines[0] == "could not download alex.pth:"
    assert [line.strip().split(": ")[0] for line in lines[1:3]] == list(urls)
    assert "Name or service not known" in lines[1] and "Connection refused" in lines[2]
    assert [line for line in lines if line.startswith("  http")] == lines[1:3]  # each URL listed once
    assert "PyPI wheel lpips==0.1.4" in lines[-2]
    assert lines[-1] == "  vidtriplane weights import lpips-alex-v0.1 /path/to/alex.pth"
    assert files_in(cache / "lpips-alex-v0.1") == []


def test_server_errors_are_retried_and_listed_once(cache, server, monkeypatch):
    from vidtriplane.weights import download as download_module

    sleeps = []
    monkeypatch.setattr(download_module.time, "sleep", sleeps.append)
    server.routes["/lpips-alex-v0.1"] = lambda h, q: h.send_error(503)
    with pytest.raises(DownloadError) as info:
        fetch("lpips-alex-v0.1", registry=local_registry(server), progress=False, retries=2)
    assert len(server.requests) == 3 and len(sleeps) == 2
    text = str(info.value)
    assert text.count("HTTP 503") == 1 and text.endswith("vidtriplane weights import lpips-alex-v0.1 /path/to/alex.pth")
