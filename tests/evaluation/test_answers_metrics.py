"""Answer extraction, Pass@k / Maj@k and bootstrap intervals, checked by hand and by brute force."""

import itertools
import math

import numpy as np
import pytest

from sglang_esamp.evaluation.answers import answers_match, extract_answer
from sglang_esamp.evaluation.metrics import bootstrap_ci, ks_up_to, maj_at_k, majority, nan_mean, pass_at_k


@pytest.mark.parametrize(
    "text, expected",
    [
        ("3 + 4 = 7, so the answer is 7.", "7"),
        ("First 12, then 15. The answer is: $1,200.", "1200"),
        ("So \\boxed{\\frac{1}{2}} and 3", "\\frac{1}{2}"),
        ("the answer is talking about 12 apples and 30 pears", "30"),
        ("Answer: 2.50", "2.5"),
        ("x = -4", "-4"),
        ("no numbers here", None),
    ],
)
def test_extract_answer(text, expected):
    assert extract_answer(text) == expected


def test_answers_match_numbers_and_strings():
    assert answers_match("60", "60.0") and answers_match("0.3333333", "0.33333330001")
    assert not answers_match("61", "60") and not answers_match(None, "1")
    assert answers_match("\\frac{1}{2}", "\\left\\frac{1}{2}\\right")


def test_pass_at_k_matches_brute_force():
    n = 6
    for c in range(n + 1):
        for k in range(1, n + 1):
            subsets = list(itertools.combinations(range(n), k))
            brute = sum(any(i < c for i in s) for s in subsets) / len(subsets)
            assert math.isclose(pass_at_k(n, c, k), brute, abs_tol=1e-12)
    with pytest.raises(ValueError):
        pass_at_k(4, 1, 5)


def test_majority_and_maj_at_k():
    assert majority(["3", None, "4", "4", "3"]) == "3"  # tie: first seen
    assert majority([None, None]) is None
    answers, correct = ["1", "2", "1", "2", "2"], [True, False, True, False, False]
    assert maj_at_k(answers, correct, 5) == 0.0
    assert maj_at_k(answers, correct, 1, draws=4000) == pytest.approx(0.4, abs=0.03)
    assert maj_at_k(["1"] * 4, [True] * 4, 2) == 1.0


def test_bootstrap_interval_covers_the_mean_and_shrinks_with_data():
    rng = np.random.default_rng(1)
    small, large = rng.normal(0.5, 1, 20), rng.normal(0.5, 1, 2000)
    m, lo, hi = bootstrap_ci(small)
    assert lo < m < hi
    _, lo2, hi2 = bootstrap_ci(large)
    assert hi2 - lo2 < (hi - lo) / 4 and lo2 < 0.5 < hi2
    assert all(math.isnan(v) for v in bootstrap_ci([float("nan")]))


def test_helpers():
    assert ks_up_to(16) == [1, 2, 4, 8, 16] and ks_up_to(6) == [1, 2, 4, 6] and ks_up_to(1) == [1]
    assert nan_mean([1.0, float("nan"), 3.0]) == 2.0 and math.isnan(nan_mean([float("nan")]))
