"""Timestamp repair: strictly increasing, fewest frames moved, container clocks respected."""
from fractions import Fraction

from vidtriplane.io.timestamps import MonotonicPts, min_step


def test_repeats_and_backwards_steps_move_one_tick_past_the_previous():
    fix = MonotonicPts()
    assert [fix(p) for p in (0, 40, 40, 120, 80, 160, 160, 161)] == [0, 40, 41, 120, 121, 160, 161, 162]
    assert fix.repaired == 4 and fix.last == 162


def test_good_timestamps_are_untouched_including_gaps_and_negative_starts():
    fix = MonotonicPts()
    pts = [-1024, 0, 1, 500, 100000]
    assert [fix(p) for p in pts] == pts and fix.repaired == 0


def test_min_step_follows_the_container_clock():
    assert min_step(Fraction(1, 90000), Fraction(1, 1000)) == 90  # matroska counts milliseconds
    assert min_step(Fraction(1, 30000), Fraction(1, 1000)) == 30
    assert min_step(Fraction(1, 25), Fraction(1, 1000)) == 1
    assert min_step(Fraction(1, 1000), None) == 1
    fix = MonotonicPts(min_step=90)
    assert [fix(p) for p in (0, 3600, 3630, 7200)] == [0, 3600, 3690, 7200]
