"""Pose cache: round trip, keyed by input content and settings, stale or corrupt entries are misses."""
import json
import logging

import numpy as np
import pytest

from vidtriplane import cache


def _arrays(n=4, seed=0):
    """Geometry as the preprocess stage makes it: frame 1 has no face (NaN landmarks, held crop)."""
    rng = np.random.default_rng(seed)
    landmarks = rng.uniform(0, 300, (n, 68, 2)).astype(np.float32)
    landmarks[1] = np.nan
    face_found = np.ones(n, bool)
    face_found[1] = False
    return {
        "landmarks": landmarks,
        "face_found": face_found,
        "held": ~face_found,
        "confidence": np.where(face_found, 0.9, 0.0).astype(np.float32),
        "crop_matrix": rng.normal(size=(n, 2, 3)).astype(np.float32),
        "labels": rng.normal(size=(n, 25)).astype(np.float32),
        "fallback": np.zeros(n, bool),
    }


def _assert_same(got, want):
    assert sorted(got) == sorted(want)
    for k in want:
        assert got[k].dtype == want[k].dtype
        np.testing.assert_array_equal(got[k], want[k])  # NaN == NaN for assert_array_equal


def test_roundtrip_and_invalidation(tmp_path):
    store = cache.PoseCache(tmp_path)
    settings = {"smooth": {"enabled": True}, "hold_frames": 15}
    store.save("abc", settings, _arrays(), source="x.mp4")
    got = store.load("abc", dict(reversed(list(settings.items()))))  # key order does not matter
    assert got is not None
    _assert_same(got, _arrays())
    assert np.isnan(got["landmarks"][1]).all() and np.isfinite(got["landmarks"][[0, 2, 3]]).all()
    assert store.load("abd", settings) is None  # other content
    assert store.load("abc", {**settings, "hold_frames": 3}) is None  # other settings


def test_file_hashes_follow_content_not_names(tmp_path):
    a, b, c = tmp_path / "a.bin", tmp_path / "b.bin", tmp_path / "c.bin"
    a.write_bytes(b"frame data")
    b.write_bytes(b"frame data")
    c.write_bytes(b"frame datA")
    assert cache.hash_file(a) == cache.hash_file(b) != cache.hash_file(c)
    assert cache.hash_files([a, c]) != cache.hash_files([c, a])


def _bad_npz(**changes):
    """A corruption of the .npz: replace (value) or drop (None) fields of a valid entry."""
    def corrupt(npz, meta):
        arrays = {**_arrays(), **changes}
        np.savez(npz, **{k: v for k, v in arrays.items() if v is not None})
    return corrupt


def _labels_with(value):
    labels = _arrays()["labels"].copy()
    labels[2, 5] = value
    return labels


def _crop_with_inf():
    m = _arrays()["crop_matrix"].copy()
    m[0, 1, 2] = np.inf
    return m


def _truncate(npz, meta):
    npz.write_bytes(npz.read_bytes()[: npz.stat().st_size // 2])


def _meta_edit(**fields):
    def corrupt(npz, meta):
        meta.write_text(json.dumps({**json.loads(meta.read_text()), **fields}))
    return corrupt


CORRUPTIONS = {
    "truncated-npz": _truncate,
    "garbage-npz": lambda npz, meta: npz.write_bytes(b"garbage"),
    "empty-npz": lambda npz, meta: npz.write_bytes(b""),
    "npz-is-a-folder": lambda npz, meta: (npz.unlink(), npz.mkdir()),
    "npz-missing": lambda npz, meta: npz.unlink(),
    "json-missing": lambda npz, meta: meta.unlink(),
    "json-invalid": lambda npz, meta: meta.write_text("{not json"),
    "json-list": lambda npz, meta: meta.write_text("[1, 2, 3]"),
    "json-string": lambda npz, meta: meta.write_text('"entry"'),
    "json-null": lambda npz, meta: meta.write_text("null"),
    "json-binary": lambda npz, meta: meta.write_bytes(b"\xff\xfe\x00garbage"),
    "n_frames-string": _meta_edit(n_frames="4"),
    "n_frames-wrong": _meta_edit(n_frames=5),
    "n_frames-missing": lambda npz, meta: meta.write_text(json.dumps(
        {k: v for k, v in json.loads(meta.read_text()).items() if k != "n_frames"})),
    "version-other": _meta_edit(version=99),
    "nan-labels": _bad_npz(labels=_labels_with(np.nan)),
    "inf-landmarks": _bad_npz(landmarks=np.full((4, 68, 2), np.inf, np.float32)),
    "inf-crop": _bad_npz(crop_matrix=_crop_with_inf()),
    "int-labels": _bad_npz(labels=np.zeros((4, 25), np.int64)),
    "float-flags": _bad_npz(face_found=np.ones(4, np.float32)),
    "labels-24": _bad_npz(labels=np.zeros((4, 24), np.float32)),
    "crop-3x3": _bad_npz(crop_matrix=np.zeros((4, 3, 3), np.float32)),
    "short-held": _bad_npz(held=np.zeros(3, bool)),
    "scalar-confidence": _bad_npz(confidence=np.float32(1.0)),
    "missing-labels": _bad_npz(labels=None),
    "extra-field": _bad_npz(extra=np.zeros(4)),
    "object-array": _bad_npz(labels=np.array([None] * 4, dtype=object)),
}


@pytest.mark.parametrize("corrupt", list(CORRUPTIONS.values()), ids=list(CORRUPTIONS))
def test_unusable_entry_is_a_logged_miss_and_replaced_by_the_next_save(tmp_path, caplog, corrupt):
    store = cache.PoseCache(tmp_path)
    npz = store.save("h", {"s": 1}, _arrays())
    meta = npz.with_suffix(".json")
    corrupt(npz, meta)
    with caplog.at_level(logging.WARNING, logger="vidtriplane.cache"):
        assert store.load("h", {"s": 1}) is None
    warnings = [r for r in caplog.records if r.name == "vidtriplane.cache"]
    assert len(warnings) == 1 and warnings[0].levelno == logging.WARNING
    assert str(npz) in warnings[0].getMessage()
    # the run recomputes and saves: the entry is whole again
    if npz.is_dir():
        npz.rmdir()  # (a folder in the way is the only thing save cannot replace)
    fresh = _arrays(seed=1)
    store.save("h", {"s": 1}, fresh)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="vidtriplane.cache"):
        _assert_same(store.load("h", {"s": 1}), fresh)
    assert not caplog.records


def test_no_entry_is_a_silent_miss(tmp_path, caplog):
    with caplog.at_level(logging.DEBUG, logger="vidtriplane.cache"):
        assert cache.PoseCache(tmp_path / "none").load("h", {}) is None
    assert not caplog.records


def test_float64_is_stored_as_float32(tmp_path):
    arrays = {**_arrays(), "labels": _arrays()["labels"].astype(np.float64)}
    store = cache.PoseCache(tmp_path)
    store.save("h", {}, arrays)
    got = store.load("h", {})
    assert got["labels"].dtype == np.float32
    np.testing.assert_array_equal(got["labels"], _arrays()["labels"])


@pytest.mark.parametrize("changes,match", [
    ({"held": np.zeros(3, bool)}, r"'held' has shape \[3\], expected \[4\]"),
    ({"labels": _labels_with(np.nan)}, "'labels' holds 1 non-finite"),
    ({"fallback": None}, r"missing \['fallback'\]"),
    ({"face_found": np.ones(4, np.int8)}, "'face_found' is int8, expected bool"),
])
def test_save_refuses_what_load_would_reject(tmp_path, changes, match):
    arrays = {k: v for k, v in {**_arrays(), **changes}.items() if v is not None}
    with pytest.raises(ValueError, match=match):
        cache.PoseCache(tmp_path).save("h", {}, arrays)
    assert not list(tmp_path.iterdir())  # nothing written


def test_schema_matches_the_preprocess_stage():
    preprocess = pytest.importorskip("vidtriplane.stages.preprocess")
    assert set(cache.GEOMETRY) == set(preprocess.GEOMETRY_FIELDS)
    assert set(cache.OPTIONAL_GEOMETRY) == set(preprocess.OPTIONAL_GEOMETRY_FIELDS)


def _mtcnn_arrays(n=4):
    """What the MTCNN backend stores: five points for the crop, dlib's 68 for the pose (NaN without a face)."""
    arrays = _arrays(n)
    five = arrays["landmarks"][:, :5].copy()
    return {**arrays, "landmarks": five, "pose_landmarks": _arrays(n, seed=2)["landmarks"]}


def test_mtcnn_entry_roundtrip(tmp_path):
    store = cache.PoseCache(tmp_path)
    store.save("h", {}, _mtcnn_arrays())
    got = store.load("h", {})
    _assert_same(got, _mtcnn_arrays())
    assert got["landmarks"].shape == (4, 5, 2) and got["pose_landmarks"].shape == (4, 68, 2)
    five_only = {k: v for k, v in _mtcnn_arrays().items() if k != "pose_landmarks"}  # pose_points: five
    store.save("f", {}, five_only)
    _assert_same(store.load("f", {}), five_only)


@pytest.mark.parametrize("changes,match", [
    ({"pose_landmarks": np.zeros((4, 5, 2), np.float32)},
     r"'pose_landmarks' has shape \[4, 5, 2\], expected \[4, 68, 2\]"),
    ({"pose_landmarks": np.full((4, 68, 2), np.inf, np.float32)}, "'pose_landmarks' holds 544 non-finite"),
    ({"landmarks": np.zeros((4, 6, 2), np.float32)}, r"expected \[4, 68, 2\] or \[4, 5, 2\]"),
    ({"pose_landmarks": np.zeros((3, 68, 2), np.float32)}, r"'pose_landmarks' has shape \[3, 68, 2\]"),
])
def test_optional_fields_are_checked_when_present(tmp_path, changes, match):
    with pytest.raises(ValueError, match=match):
        cache.PoseCache(tmp_path).save("h", {}, {**_mtcnn_arrays(), **changes})
    assert not list(tmp_path.iterdir())


def test_default_dir_from_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("VIDTRIPLANE_CACHE", str(tmp_path))
    assert cache.default_cache_dir() == tmp_path / "poses"


def test_slice_and_concat():
    parts = [_arrays(2), _arrays(3, seed=1)]
    whole = cache.concat_geometry(parts)
    assert len(whole["labels"]) == 5
    np.testing.assert_array_equal(whole["labels"][2:], parts[1]["labels"])
    np.testing.assert_array_equal(cache.slice_geometry(whole, np.array([2, 3]))["labels"], parts[1]["labels"][:2])
