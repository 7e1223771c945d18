"""Jitter and lag measures: known noise, known delays."""
import numpy as np
import pytest

from vidtriplane.stages.steadiness import head_track
from vidtriplane.stages import steadiness


def test_jitter_of_white_noise_and_of_smooth_motion():
    rng = np.random.default_rng(0)
    noise = rng.normal(0, 2.0, (20000, 1))
    # the second difference of N(0, s^2) noise is N(0, 6 s^2): mean absolute value sqrt(6) s sqrt(2 / pi)
    assert steadiness.jitter(noise, np.ones(20000, bool))[0] == pytest.approx(2.0 * np.sqrt(12 / np.pi), rel=0.02)
    ramp = np.linspace(0, 100, 200)[:, None]
    assert steadiness.jitter(ramp, np.ones(200, bool))[0] == pytest.approx(0.0, abs=1e-9)
    valid = np.ones(200, bool)
    valid[1::2] = False
    assert np.isnan(steadiness.jitter(noise[:200], valid)).all()  # no run of three frames with a face


def test_turn_lag_is_the_delay_of_a_shifted_copy():
    truth, _ = head_track(noise=0.0, turn_frames=6)
    for shift in (0, 1, 3):
        late = np.concatenate([np.full(shift, truth[0]), truth[:len(truth) - shift]])
        assert steadiness.turn_lag(late, truth, 148, 155) == pytest.approx(shift, abs=1e-6)
    early = np.concatenate([truth[2:], np.full(2, truth[-1])])
    assert steadiness.turn_lag(early, truth, 148, 155) == pytest.approx(-2.0, abs=1e-6)
    assert steadiness.turn_lag(np.zeros_like(truth), truth, 148, 155) == np.inf  # never turns


def test_summary_names_every_axis():
    rng = np.random.default_rng(1)
    raw = rng.normal(0, 1, (50, 5))
    out = steadiness.summary(raw, raw * 0.25, np.ones(50, bool), "offline")
    assert out["mode"] == "offline" and out["frames_with_face"] == 50
    assert set(out["raw"]) == set(steadiness.AXES) and all(v == pytest.approx(0.25, abs=1e-3) for v in out["ratio"].values())
    assert steadiness.tracker_counts({"detect": 1, "flow": 7}) == {"detections": 1, "redetections": 0, "tracked": 0, "flow": 7}
