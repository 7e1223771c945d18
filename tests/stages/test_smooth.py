"""One-Euro smoothing: less jitter, causal, batch-split invariant, gaps skipped and reset."""
import numpy as np

from vidtriplane.stages import smooth

CFG = smooth.SmoothConfig(min_cutoff=1.0, beta=0.3)


def _noisy(n=120, seed=0):
    rng = np.random.default_rng(seed)
    return np.stack([np.full(n, 5.0), np.linspace(0, 1, n)], 1) + rng.normal(0, 0.05, (n, 2))


def test_reduces_jitter():
    x = _noisy()
    y, _ = smooth.one_euro(x, np.ones(len(x), bool), smooth.SmoothState(), 30.0, CFG)
    jitter = lambda a: np.abs(np.diff(a[:, 0])).mean()
    assert jitter(y) < jitter(x) / 3
    off, _ = smooth.one_euro(x, np.ones(len(x), bool), smooth.SmoothState(), 30.0, smooth.SmoothConfig(enabled=False))
    np.testing.assert_array_equal(off, x)


def test_causal_and_batch_split_invariant():
    x = _noisy(60)
    valid = np.ones(60, bool)
    whole, _ = smooth.one_euro(x, valid, smooth.SmoothState(), 25.0, CFG)
    first, state = smooth.one_euro(x[:23], valid[:23], smooth.SmoothState(), 25.0, CFG)
    second, _ = smooth.one_euro(x[23:], valid[23:], state, 25.0, CFG)
    np.testing.assert_allclose(np.concatenate([first, second]), whole)
    changed = x.copy()
    changed[40:] += 10.0
    out, _ = smooth.one_euro(changed, valid, smooth.SmoothState(), 25.0, CFG)
    np.testing.assert_allclose(out[:40], whole[:40])  # the future does not change the past


def test_follows_a_step():
    x = np.concatenate([np.zeros((30, 1)), np.ones((60, 1))])
    y, _ = smooth.one_euro(x, np.ones(90, bool), smooth.SmoothState(), 30.0, CFG)
    assert 0 < y[31, 0] < 1 and y[-1, 0] > 0.99


def test_lookahead_reduces_jitter_further():
    x = _noisy(90, seed=3)
    valid = np.ones(90, bool)
    causal, _ = smooth.one_euro(x, valid, smooth.SmoothState(), 30.0, CFG)
    ahead, _ = smooth.one_euro(x, valid, smooth.SmoothState(), 30.0, smooth.SmoothConfig(lookahead=3))
    jitter = lambda a: np.abs(np.diff(a[10:, 0])).mean()
    assert jitter(ahead) < 0.7 * jitter(causal)


def test_invalid_frames_are_skipped_and_long_gaps_reset():
    x = np.array([[0.0], [0.0], [np.nan], [0.0], [9.0], [9.0], [9.0], [9.0], [9.0], [9.0], [5.0]])
    valid = np.array([1, 1, 0, 1, 1, 0, 0, 0, 0, 0, 1], bool)
    y, state = smooth.one_euro(x, valid, smooth.SmoothState(), 30.0, smooth.SmoothConfig(reset_after_gap=5))
    assert np.isnan(y[2, 0]) and np.isnan(y[5:10]).all()
    assert 0 < y[4, 0] < 9  # smoothed towards the new value
    assert y[10, 0] == 5.0  # after a gap of 5 frames the filter restarts
    assert state.gap == 0


def test_crop_signal_roundtrip():
    p = np.array([[100.0, 80.0, 240.0], [-5.0, 3.0, 10.0]])
    np.testing.assert_allclose(smooth.signal_to_crop(smooth.crop_to_signal(p)), p)
