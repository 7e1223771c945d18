"""Kalman filter / RTS smoother: noise removed, gaps, restarts, the noise estimate, turns followed."""
import numpy as np
import pytest

from vidtriplane.stages.steadiness import head_track

FPS = 30.0
from vidtriplane.stages import kalman, steadiness


def _line(n=120, seed=0, noise=1.0):
    rng = np.random.default_rng(seed)
    truth = np.stack([np.linspace(0, 30, n), np.full(n, 5.0)], axis=1)
    return truth, truth + rng.normal(0, noise, truth.shape)


def test_rts_removes_noise_on_a_constant_velocity_track():
    truth, x = _line()
    out = kalman.smooth_offline(x, np.ones(len(x), bool), FPS, 1.0, 3.0)
    assert out.shape == x.shape
    err_raw = np.sqrt(((x - truth) ** 2).mean())
    err = np.sqrt(((out - truth) ** 2).mean())
    assert err < 0.35 * err_raw  # a straight line is what the model expects: most of the noise goes
    causal, _ = kalman.filter_causal(x, np.ones(len(x), bool), kalman.KalmanState(), FPS, 1.0, 3.0)
    assert err < np.sqrt(((causal - truth) ** 2).mean())  # looking ahead helps


def test_causal_filter_is_batch_split_invariant_and_causal():
    _, x = _line(60, seed=1)
    valid = np.ones(60, bool)
    valid[20] = False
    whole, _ = kalman.filter_causal(x, valid, kalman.KalmanState(), FPS, 1.0, 10.0)
    first, state = kalman.filter_causal(x[:27], valid[:27], kalman.KalmanState(), FPS, 1.0, 10.0)
    second, _ = kalman.filter_causal(x[27:], valid[27:], state, FPS, 1.0, 10.0)
    np.testing.assert_allclose(np.concatenate([first, second]), whole)
    assert np.isnan(whole[20]).all() and np.isfinite(whole[21]).all()
    changed = x.copy()
    changed[40:] += 50.0
    out, _ = kalman.filter_causal(changed, valid, kalman.KalmanState(), FPS, 1.0, 10.0)
    np.testing.assert_allclose(out[:40], whole[:40])


def test_short_gaps_are_bridged_and_long_gaps_restart():
    x = np.concatenate([np.zeros(20), np.full(20, 100.0)])[:, None]
    valid = np.ones(40, bool)
    valid[18:22] = False  # the face is gone for 4 frames and comes back far away
    bridged = kalman.smooth_offline(x, valid, FPS, 1.0, 5.0, reset_after=10)
    restarted = kalman.smooth_offline(x, valid, FPS, 1.0, 5.0, reset_after=2)
    assert np.isnan(bridged[18:22]).all() and np.isnan(restarted[18:22]).all()
    assert 1.0 < bridged[22, 0] < 99.0  # one track: it slides towards the new place
    assert restarted[22, 0] == pytest.approx(100.0, abs=1.5)  # a new track starts where the face is
    assert restarted[17, 0] == pytest.approx(0.0, abs=1.5)  # and the old one does not see the new place


def test_robust_noise_estimate():
    truth, x = head_track(600, noise=0.7, sway=30.0, turn_frames=2)
    est = kalman.robust_noise(x[:, None], np.ones(600, bool), 1e-3)[0]
    assert est == pytest.approx(0.7, rel=0.15)  # sway and a fast turn hardly move it
    few = kalman.robust_noise(x[:5, None], np.ones(5, bool), 1e-3, prior=2.0)
    assert few[0] == 2.0  # too few frames: the prior


@pytest.mark.parametrize("turn_frames", [0, 3, 8])
def test_adaptive_smoother_holds_still_and_follows_turns(turn_frames):
    """Files: jitter <= 1/5 of the raw estimate, lag <= 1 frame on a fast turn (0 frames = a step)."""
    for seed in range(3):
        truth, x = head_track(seed=seed, turn_frames=turn_frames)
        out = kalman.smooth_adaptive(x[:, None], np.ones(len(x), bool), FPS, 1.0, 30.0, 3.0, 100.0)[:, 0]
        ratio = steadiness.step_error(out[:, None], truth[:, None]) / steadiness.step_error(x[:, None], truth[:, None])
        assert ratio[0] <= 0.2, (seed, ratio)
        lag = steadiness.turn_lag(out, truth, 148, 149 + max(turn_frames, 1))
        assert lag <= 1.0, (seed, lag)
        plain = kalman.smooth_offline(x[:, None], np.ones(len(x), bool), FPS, 1.0, 30.0)[:, 0]
        assert steadiness.turn_lag(plain, truth, 148, 149 + max(turn_frames, 1)) > lag  # what the adaptation buys
