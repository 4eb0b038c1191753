"""Scores over seeds: mean, spread and paired differences with a confidence interval.

A downstream score from one finetuning seed is one draw; two models are told apart only when their
difference is larger than what reseeding alone does. Rows finetuned with the same seeds (the same data
order and dropout masks) are compared seed by seed: the paired differences cancel what the seed does to
both (Student's paired t interval, e.g. Wasserman, *All of Statistics*, 2004, 10.7).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Mapping, Sequence

import numpy as np
from scipy import stats as scipy_stats


@dataclasses.dataclass(frozen=True)
class SeedSummary:
    """Scores of one model on one metric over finetuning seeds (same units as the scores)."""

    scores: tuple[float, ...]
    mean: float
    std: float          # sample standard deviation (ddof=1); NaN with one seed
    n: int

    def as_dict(self) -> dict:
        return {"scores": list(self.scores), "mean": self.mean, "std": self.std, "n": self.n}


@dataclasses.dataclass(frozen=True)
class PairedDifference:
    """`a - b` over the seeds both have: mean, its `level` confidence interval, and whether the interval
    excludes 0."""

    mean: float
    low: float
    high: float
    n: int
    level: float
    significant: bool

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


def summarize(scores: Sequence[float]) -> SeedSummary:
    """Mean and sample standard deviation of `scores` (one per seed; NaN scores are left out).

    Raises:
      ValueError: no finite score.
    """
    finite = [float(s) for s in scores if s is not None and math.isfinite(s)]
    if not finite:
        raise ValueError(f"no finite score among {list(scores)}")
    std = float(np.std(finite, ddof=1)) if len(finite) > 1 else float("nan")
    return SeedSummary(scores=tuple(finite), mean=float(np.mean(finite)), std=std, n=len(finite))


def paired_difference(a: Mapping[int, float], b: Mapping[int, float], level: float = 0.95) -> PairedDifference:
    """Student's t interval of the mean of `a[seed] - b[seed]` over the seeds both have scores for.

    Args:
      a, b: {finetuning seed: score}.
      level: the interval's coverage, in (0, 1).

    Returns:
      The mean difference and its interval `mean -+ t_{(1+level)/2, n-1} * sd / sqrt(n)`; with one shared
      seed the interval is (-inf, inf) and nothing is significant.

    Raises:
      ValueError: no seed has a finite score in both.
    """
    seeds = sorted(s for s in set(a) & set(b) if math.isfinite(a[s]) and math.isfinite(b[s]))
    if not seeds:
        raise ValueError("no seed has a finite score in both rows")
    diffs = np.array([a[s] - b[s] for s in seeds], np.float64)
    mean, n = float(diffs.mean()), len(diffs)
    if n == 1:
        return PairedDifference(mean, -math.inf, math.inf, 1, level, False)
    half = float(scipy_stats.t.ppf((1 + level) / 2, n - 1) * diffs.std(ddof=1) / math.sqrt(n))
    return PairedDifference(mean, mean - half, mean + half, n, level, not (mean - half <= 0.0 <= mean + half))


def pooled_std(summaries: Sequence[SeedSummary]) -> float:
    """The seed standard deviation pooled over rows: sqrt(sum (n_i - 1) s_i^2 / sum (n_i - 1)).

    Raises:
      ValueError: no row has two seeds.
    """
    dof = sum(s.n - 1 for s in summaries if s.n > 1)
    if dof == 0:
        raise ValueError("pooling needs a row with at least two seeds")
    return math.sqrt(sum((s.n - 1) * s.std ** 2 for s in summaries if s.n > 1) / dof)
