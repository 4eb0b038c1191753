import math

import numpy as np
import pytest
from scipy import stats as scipy_stats

from miniend_jax.evaluation.stats import paired_difference, pooled_std, summarize


def test_paired_difference_equals_scipy_paired_t_interval():
    rng = np.random.default_rng(0)
    base = rng.normal(70, 3, 5)
    a = {seed: float(x + 1.5 + rng.normal(0, 0.5)) for seed, x in enumerate(base)}
    b = {seed: float(x) for seed, x in enumerate(base)}
    b[9] = 50.0  # a seed only one row has is left out
    ours = paired_difference(a, b)
    seeds = range(5)
    reference = scipy_stats.ttest_rel([a[s] for s in seeds], [b[s] for s in seeds])
    low, high = reference.confidence_interval(0.95)
    assert ours.n == 5
    assert ours.mean == pytest.approx(np.mean([a[s] - b[s] for s in seeds]), rel=1e-12)
    assert (ours.low, ours.high) == (pytest.approx(low, rel=1e-9), pytest.approx(high, rel=1e-9))
    assert ours.significant == (reference.pvalue < 0.05)


def test_difference_within_noise_is_not_significant():
    a = {0: 70.0, 1: 72.0, 2: 69.0}
    b = {0: 71.0, 1: 70.5, 2: 69.5}
    d = paired_difference(a, b)
    assert d.low < 0 < d.high and not d.significant
    assert math.isinf(paired_difference({0: 1.0}, {0: 0.0}).high)  # one seed: no interval
    with pytest.raises(ValueError, match="no seed"):
        paired_difference({0: float("nan")}, {0: 1.0})


def test_summary_and_pooled_std_against_anova_residual():
    rows = [[70.0, 72.0, 69.5], [60.0, 61.0, 65.0, 62.0], [55.0, float("nan"), 57.0]]
    summaries = [summarize(r) for r in rows]
    assert summaries[2].n == 2 and summaries[2].scores == (55.0, 57.0)  # NaN left out
    assert summaries[0].std == pytest.approx(np.std(rows[0], ddof=1))
    # Pooled variance = the within-group mean square of a one-way ANOVA: SS_within / (N - k).
    groups = [np.array([x for x in r if not math.isnan(x)]) for r in rows]
    ss_within = sum(((g - g.mean()) ** 2).sum() for g in groups)
    dof = sum(len(g) for g in groups) - len(groups)
    assert pooled_std(summaries) == pytest.approx(math.sqrt(ss_within / dof), rel=1e-12)
    with pytest.raises(ValueError):
        summarize([float("nan")])
