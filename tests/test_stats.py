"""attnscope.stats: the tests and intervals every claim in docs uses, against scipy on fixed data."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.stats as ss

from attnscope import stats
from attnscope.errors import InputError
from attnscope.metrics.similarity import mean_ci

A = np.array([0.445, 0.363, 0.429, 0.51, 0.47, 0.39, 0.44, 0.52])
B = np.array([0.472, 0.464, 0.457, 0.50, 0.49, 0.41, 0.47, 0.49])


@pytest.mark.parametrize("n", [2, 3, 5, 8])
def test_paired_t_equals_scipy(n: int) -> None:
    ours = stats.paired_t(A[:n], B[:n])
    ref = ss.ttest_rel(A[:n], B[:n])
    assert ours.statistic == pytest.approx(ref.statistic, rel=1e-12)
    assert ours.p == pytest.approx(ref.pvalue, rel=1e-10)
    assert ours.n == n and ours.effect == pytest.approx((A[:n] - B[:n]).mean())


def test_welch_t_equals_scipy_and_the_audits_unpaired_p() -> None:
    ours = stats.welch_t(A, B[:5])
    ref = ss.ttest_ind(A, B[:5], equal_var=False)
    assert ours.statistic == pytest.approx(ref.statistic) and ours.p == pytest.approx(ref.pvalue, rel=1e-9)
    att3, att2 = [0.844, 0.849, 0.785], [0.807, 0.811, 0.753]  # docs/ltpa.md, per seed
    assert stats.welch_t(att3, att2).p == pytest.approx(0.27, abs=0.01)  # the audit's p: the seeds unpaired
    assert stats.paired_t(att3, att2).p < 0.01  # paired by seed (same data and order) the gap is consistent


def test_paired_t_of_the_docs_bleu_claim() -> None:
    """The per-seed BLEU-4 of docs/sat.md (soft vs supervised λ = 10): the p the audit recomputed, 0.17."""
    soft, supervised = [0.445, 0.363, 0.429], [0.472, 0.464, 0.457]
    assert stats.paired_t(supervised, soft).p == pytest.approx(0.17, abs=0.005)


def test_paired_t_leaves_out_nan_pairs_and_handles_constant_differences() -> None:
    a, b = np.array([1.0, 2.0, np.nan, 4.0]), np.array([0.5, 1.0, 3.0, 2.0])
    assert stats.paired_t(a, b).n == 3
    assert stats.paired_t(a, b).p == pytest.approx(ss.ttest_rel([1, 2, 4], [0.5, 1, 2]).pvalue)
    same = stats.paired_t([1.0, 2.0, 3.0], [0.0, 1.0, 2.0])  # every difference 1: sd 0
    assert same.p == 0.0 and same.statistic == math.inf
    assert stats.paired_t([1.0, 2.0], [1.0, 2.0]).p == 1.0
    with pytest.raises(InputError):
        stats.paired_t([1.0, 2.0], [1.0])


@pytest.mark.parametrize("data", [
    (A, B),                                                        # small, exact
    (np.arange(1, 13) * 0.1, np.zeros(12)),                        # every difference positive, exact
    (np.array([1, 2, 2, 3, 4, 4, 5, 6.0]), np.array([0, 0, 1, 1, 5, 6, 2, 3.0])),  # ties: normal approximation
    (np.array([1, 2, 3, 4, 5.0]), np.array([1, 1, 1, 1, 1.0])),   # a zero difference, dropped
])
def test_wilcoxon_equals_scipy(data: tuple[np.ndarray, np.ndarray]) -> None:
    a, b = data
    ours = stats.wilcoxon(a, b)
    ref = ss.wilcoxon(a, b)
    assert ours.statistic == pytest.approx(ref.statistic)
    assert ours.p == pytest.approx(ref.pvalue, rel=1e-9)


def test_wilcoxon_large_sample_equals_scipy_normal_approximation() -> None:
    rng = np.random.default_rng(3)
    a, b = rng.normal(0.1, 1, 80), rng.normal(0, 1, 80)
    assert stats.wilcoxon(a, b).p == pytest.approx(ss.wilcoxon(a, b).pvalue, rel=1e-9)


def test_signed_rank_exact_distribution_by_hand() -> None:
    """n = 3: the 8 sign patterns give W⁺ ∈ {0, 1, 2, 3, 3, 4, 5, 6}; P(W⁺ ≤ 1) = 2/8, P(W⁺ ≤ 3) = 5/8."""
    assert stats._signed_rank_cdf(1, 3) == 2 / 8
    assert stats._signed_rank_cdf(3, 3) == 5 / 8
    assert stats.wilcoxon([1.0, 2.0, 3.0], [0.0, 0.0, 0.0]).p == 2 * 1 / 8  # the smallest p three pairs allow


def test_t_interval_equals_scipy_and_mean_ci() -> None:
    ci = stats.t_interval(A)
    low, high = ss.t.interval(0.95, A.size - 1, loc=A.mean(), scale=ss.sem(A))
    assert (ci.low, ci.high) == (pytest.approx(low), pytest.approx(high))
    import torch

    assert mean_ci(torch.tensor(A)) == pytest.approx((ci.mean, ci.low, ci.high, ci.n))  # one implementation
    assert math.isnan(stats.t_interval([1.0]).low) and stats.t_interval([]).n == 0


def test_bootstrap_is_seeded_and_close_to_scipy_percentile() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(2.0, 1.0, 60)
    ours = stats.bootstrap(x, resamples=20_000, seed=1)
    assert ours == stats.bootstrap(x, resamples=20_000, seed=1)
    ref = ss.bootstrap((x,), np.mean, method="percentile", n_resamples=20_000, rng=2).confidence_interval
    assert ours.low == pytest.approx(ref.low, abs=0.02) and ours.high == pytest.approx(ref.high, abs=0.02)
    assert ours.mean == pytest.approx(x.mean()) and ours.low < x.mean() < ours.high


def test_hierarchical_bootstrap_reduces_to_the_image_bootstrap_for_one_seed() -> None:
    x = np.linspace(0, 1, 40) ** 2
    one = stats.bootstrap_seeds([x], resamples=4000, seed=5)
    flat = stats.bootstrap(x, resamples=4000, seed=7)
    assert one.n == 1 and one.mean == pytest.approx(x.mean())
    assert one.low == pytest.approx(flat.low, abs=0.02) and one.high == pytest.approx(flat.high, abs=0.02)


def test_hierarchical_bootstrap_widens_with_the_spread_between_seeds() -> None:
    """Seeds whose means differ (0.2, 0.5, 0.8) give a wide interval even with many precise images each;
    the image bootstrap of the pooled values does not see it."""
    rng = np.random.default_rng(0)
    seeds = [m + rng.normal(0, 0.01, 200) for m in (0.2, 0.5, 0.8)]
    h = stats.bootstrap_seeds(seeds, resamples=4000)
    pooled = stats.bootstrap(np.concatenate(seeds), resamples=4000)
    assert h.high - h.low > 0.4 > 10 * (pooled.high - pooled.low)
    assert h.mean == pytest.approx(0.5, abs=0.01) and h.n == 3


def test_formatting() -> None:
    assert stats.fmt(stats.Interval(0.523, 0.481, 0.566, 9)) == "0.52 [0.48, 0.57]"
    assert stats.fmt(stats.Interval(0.5, math.nan, math.nan, 1)) == "0.50"
    assert stats.fmt_p(0.1712) == "0.17" and stats.fmt_p(0.0123) == "0.012" and stats.fmt_p(1e-5) == "< 0.001"
    assert str(stats.paired_t([1.0, 2.0, 3.5], [0.0, 0.5, 1.0])).startswith("paired t-test, p = ")
