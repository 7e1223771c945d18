"""Pose cache: round trip, keyed by input content and settings, stale entries never read."""
import numpy as np
import pytest

from vidtriplane import cache


def _arrays(n=4):
    return {"labels": np.arange(n * 25, dtype=np.float32).reshape(n, 25), "face_found": np.ones(n, bool)}


def test_roundtrip_and_invalidation(tmp_path):
    store = cache.PoseCache(tmp_path)
    settings = {"smooth": {"enabled": True}, "hold_frames": 15}
    store.save("abc", settings, _arrays(), source="x.mp4")
    got = store.load("abc", dict(reversed(list(settings.items()))))  # key order does not matter
    assert got is not None
    np.testing.assert_array_equal(got["labels"], _arrays()["labels"])
    assert store.load("abd", settings) is None  # other content
    assert store.load("abc", {**settings, "hold_frames": 3}) is None  # other settings


def test_file_hashes_follow_content_not_names(tmp_path):
    a, b, c = tmp_path / "a.bin", tmp_path / "b.bin", tmp_path / "c.bin"
    a.write_bytes(b"frame data")
    b.write_bytes(b"frame data")
    c.write_bytes(b"frame datA")
    assert cache.hash_file(a) == cache.hash_file(b) != cache.hash_file(c)
    assert cache.hash_files([a, c]) != cache.hash_files([c, a])


def test_corrupt_or_inconsistent_entries_are_ignored(tmp_path):
    store = cache.PoseCache(tmp_path)
    npz = store.save("h", {}, _arrays())
    meta = npz.with_suffix(".json")
    meta.write_text("{not json")
    assert store.load("h", {}) is None
    store.save("h", {}, _arrays())
    npz.write_bytes(b"garbage")
    assert store.load("h", {}) is None
    with pytest.raises(ValueError, match="one length"):
        store.save("h", {}, {"a": np.zeros(3), "b": np.zeros(4)})


def test_default_dir_from_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("VIDTRIPLANE_CACHE", str(tmp_path))
    assert cache.default_cache_dir() == tmp_path / "poses"


def test_slice_and_concat():
    parts = [_arrays(2), _arrays(3)]
    whole = cache.concat_geometry(parts)
    assert len(whole["labels"]) == 5
    np.testing.assert_array_equal(cache.slice_geometry(whole, np.array([2, 3]))["labels"], parts[1]["labels"][:2])
