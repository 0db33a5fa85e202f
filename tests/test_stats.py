"""adafv.eval.stats: the intervals and paired tests of the accuracy tables, against values computed by hand."""

from __future__ import annotations

import math

import pytest

from adafv.eval.stats import mcnemar, wilson


def test_wilson_interval_matches_the_formula_worked_by_hand():
    # 8 of 10: centre (0.8 + 1.9208/10) / 1.38415 = 0.71675, half 0.22648 (Newcombe 1998's worked example)
    low, high = wilson(8, 10)
    assert low == pytest.approx(0.4902, abs=1e-4) and high == pytest.approx(0.9433, abs=1e-4)
    low, high = wilson(0, 20)
    assert low == 0.0 and high == pytest.approx(0.1611, abs=1e-4)  # never below 0, never a zero-width interval
    assert wilson(0, 0) == (0.0, 1.0)
    with pytest.raises(ValueError):
        wilson(3, 2)


def test_wilson_half_width_at_1800_questions_is_about_2_points():
    low, high = wilson(900, 1800)  # the standard-error target: <= 1.2 points, 95% half-width ~2.3
    assert (high - low) / 2 == pytest.approx(1.96 * math.sqrt(0.25 / 1800), abs=2e-4)


def test_mcnemar_counts_only_disagreements_exactly():
    a = [True] * 9 + [False] + [True] * 50 + [False] * 40
    b = [False] * 9 + [True] + [True] * 50 + [False] * 40
    t = mcnemar(a, b)
    assert (t["a_only"], t["b_only"]) == (9, 1)
    assert t["p"] == pytest.approx(2 * (1 + 10) / 1024)  # two-sided binomial tail, 0.02148
    assert t["difference"] == pytest.approx(8.0)  # (9 - 1) of 100 questions, in points
    assert mcnemar(b, a)["p"] == t["p"] and mcnemar(b, a)["difference"] == -8.0
    assert mcnemar([True, False], [True, False])["p"] == 1.0  # no disagreement: no evidence either way
    with pytest.raises(ValueError):
        mcnemar([True], [True, False])
