"""Smoothing: One-Euro (causal, batch-split invariant, gaps), the causal and offline smoothers' jitter and lag
on synthetic tracks with known truth, and the automatic mode choice."""
import numpy as np
import pytest

from vidtriplane.stages.steadiness import head_track

FPS = 30.0
from vidtriplane.stages import smooth, steadiness

CFG = smooth.SmoothConfig(min_cutoff=1.0, beta=0.3)


def _noisy(n=120, seed=0):
    rng = np.random.default_rng(seed)
    return np.stack([np.full(n, 5.0), np.linspace(0, 1, n)], 1) + rng.normal(0, 0.05, (n, 2))


def test_reduces_jitter():
    x = _noisy()
    y, _ = smooth.one_euro(x, np.ones(len(x), bool), smooth.SmoothState(), 30.0, CFG)
    jitter = lambda a: np.abs(np.diff(a[:, 0])).mean()
    assert jitter(y) < jitter(x) / 3


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
    np.testing.assert_allclose(smooth.signal_to_crop(smooth.crop_to_signal(p, 480), 480), p)


UNIT = smooth.Noise(floor=1e-3, prior=1.0)


def _ratio(out, truth, raw):
    return float(steadiness.step_error(out[:, None], truth[:, None])[0] /
                 steadiness.step_error(raw[:, None], truth[:, None])[0])


def test_causal_smoother_on_a_live_track():
    """Pipes: jitter <= 1/3 of the raw estimate on a swaying head; a fast turn followed within 2 frames."""
    for seed in range(3):
        truth, raw = head_track(seed=seed, turn=0.0)
        out, _ = smooth.causal(raw[:, None], np.ones(len(raw), bool), smooth.SmoothState(), FPS, smooth.SmoothConfig(), UNIT)
        assert _ratio(out[:, 0], truth, raw) <= 1 / 3
        truth, raw = head_track(seed=seed, turn_frames=3)
        out, _ = smooth.causal(raw[:, None], np.ones(len(raw), bool), smooth.SmoothState(), FPS, smooth.SmoothConfig(), UNIT)
        assert steadiness.turn_lag(out[:, 0], truth, 148, 152) <= 2.0


def test_causal_smoother_is_batch_split_invariant_and_estimates_the_noise():
    truth, raw = head_track(seed=4)
    x, valid, cfg = raw[:, None] * 0.01, np.ones(len(raw), bool), smooth.SmoothConfig()
    noise = smooth.Noise(floor=1e-5, prior=0.05)
    whole, state = smooth.causal(x, valid, smooth.SmoothState(), FPS, cfg, noise)
    first, mid = smooth.causal(x[:101], valid[:101], smooth.SmoothState(), FPS, cfg, noise)
    second, _ = smooth.causal(x[101:], valid[101:], mid, FPS, cfg, noise)
    np.testing.assert_allclose(np.concatenate([first, second]), whole)
    # the scale of the signal does not matter: the filter works in units of its estimated noise
    unit, _ = smooth.causal(raw[:, None], valid, smooth.SmoothState(), FPS, cfg, smooth.Noise(1e-3, 5.0))
    np.testing.assert_allclose(whole[120:], unit[120:] * 0.01, rtol=1e-6, atol=1e-9)


def test_noise_speed_is_the_std_of_the_speed_estimate_on_still_noise():
    for rate in (25.0, 60.0):
        cfg = smooth.SmoothConfig(beta=0.0)
        speeds = [smooth.one_euro(np.random.default_rng(seed).normal(0, 1, (300, 1)), np.ones(300, bool),
                                  smooth.SmoothState(), rate, cfg)[1].speed[0] for seed in range(300)]
        assert np.std(speeds) == pytest.approx(smooth.noise_speed(rate, cfg), rel=0.12)


def test_speed_deadzone_keeps_noise_from_opening_the_filter_but_not_a_turn():
    """A still head: the dead zone leaves the cut-off at rest (less jitter than the plain One-Euro filter);
    a fast turn is still followed: the same lag within half a frame."""
    plain, zoned = smooth.SmoothConfig(speed_deadzone=0.0), smooth.SmoothConfig(speed_deadzone=5.0)
    rng = np.random.default_rng(7)
    still = rng.normal(0, 1, (300, 1))
    ones = np.ones(300, bool)
    jit = {name: steadiness.jitter(smooth.causal(still, ones, smooth.SmoothState(), FPS, cfg, UNIT)[0][30:], ones[30:])[0]
           for name, cfg in (("plain", plain), ("zoned", zoned))}
    assert jit["zoned"] < 0.8 * jit["plain"]
    truth, raw = head_track(seed=1, turn_frames=1, turn=40.0)
    lags = [steadiness.turn_lag(smooth.causal(raw[:, None], ones, smooth.SmoothState(), FPS, cfg, UNIT)[0][:, 0],
                                truth, 148, 150) for cfg in (plain, zoned)]
    assert lags[1] <= lags[0] + 0.5 and lags[1] <= 2.0


def test_offline_smoother_on_a_file_track():
    """Files: jitter <= 1/5 of the raw estimate, lag <= 1 frame on a step-like turn, and no help from a NaN gap."""
    for seed in range(3):
        truth, raw = head_track(seed=seed, turn_frames=2)
        valid = np.ones(len(raw), bool)
        valid[60:63] = False
        out = smooth.offline(raw[:, None], valid, FPS, smooth.SmoothConfig(), UNIT)[:, 0]
        assert np.isnan(out[60:63]).all() and np.isfinite(out[valid]).all()
        keep = np.isfinite(out)
        assert _ratio(np.where(keep, out, truth), truth, np.where(keep, raw, truth)) <= 0.2
        assert steadiness.turn_lag(out, truth, 148, 151) <= 1.0


@pytest.mark.parametrize("mode, source, expected", [
    ("auto", "talk.mp4", "offline"), ("auto", "-", "causal"), ("offline", "clip.mkv", "offline"),
    ("causal", "talk.mp4", "causal"), ("off", "talk.mp4", "off"),
])
def test_mode_choice(mode, source, expected):
    assert smooth.resolve_mode(smooth.SmoothConfig(mode=mode), source) == expected


def test_offline_mode_on_stdin_is_a_usage_error():
    from vidtriplane.errors import UsageError

    with pytest.raises(UsageError, match="stdin is read once"):
        smooth.resolve_mode(smooth.SmoothConfig(mode="offline"), "-")


def test_config_checks():
    with pytest.raises(ValueError, match="mode"):
        smooth.SmoothConfig(mode="fast")
    with pytest.raises(ValueError, match="process_noise"):
        smooth.SmoothConfig(process_noise=0)
    with pytest.raises(ValueError, match="speed_deadzone"):
        smooth.SmoothConfig(speed_deadzone=-1.0)
