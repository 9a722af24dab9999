"""Statistics for claims: paired tests, confidence intervals over images and over seeds, and their formatting.

One place for every interval and test the library and the experiments report (below every layer: numpy and
scipy's special functions only, so `metrics`, `sanity`, `track` and `experiments/` share it).

    ats.stats.paired_t(a, b)              # Student's paired t-test, two-sided: Test(statistic, p, n, effect)
    ats.stats.welch_t(a, b)               # Welch's unpaired t-test, for samples that do not pair
    ats.stats.wilcoxon(a, b)              # Wilcoxon signed-rank, two-sided (exact for n <= 50, no ties or zeros)
    ats.stats.t_interval(values)          # mean and Student-t 95 % CI over the values
    ats.stats.bootstrap(values)           # mean and percentile-bootstrap CI over the values (e.g. images)
    ats.stats.bootstrap_seeds(per_seed)   # hierarchical: resample seeds, then images within each seed
    ats.stats.fmt(interval)               # "0.52 [0.48, 0.56]"

NaN values are left out (a similarity undefined on a constant map is not a zero); a pair with a NaN on
either side is left out of a paired test.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import special

from attnscope.errors import InputError

LEVEL = 0.95
RESAMPLES = 10_000


@dataclass(frozen=True)
class Test:
    """A two-sided test of "no difference": its name, statistic, p-value, pairs used and mean difference a − b."""

    name: str
    statistic: float
    p: float
    n: int
    effect: float

    def __str__(self) -> str:
        return f"{self.name}, {p_text(self.p)} (n = {self.n})"


@dataclass(frozen=True)
class Interval:
    """A mean with its confidence interval: what `low`/`high` were computed by (`method`), at `level`, over `n`."""

    mean: float
    low: float
    high: float
    n: int
    level: float = LEVEL
    method: str = "t"

    def __str__(self) -> str:
        return fmt(self)


def _values(x: Sequence[float] | np.ndarray) -> np.ndarray:
    v = np.asarray(x, dtype=np.float64).ravel()
    return v[~np.isnan(v)]


def _pairs(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray) -> np.ndarray:
    """a − b over the pairs defined on both sides."""
    a, b = np.asarray(a, dtype=np.float64).ravel(), np.asarray(b, dtype=np.float64).ravel()
    if a.shape != b.shape:
        raise InputError(f"a paired test needs two equally long samples, got {a.size} and {b.size}")
    d = a - b
    return d[~np.isnan(d)]


def paired_t(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray) -> Test:
    """Student's paired t-test: t = mean(d) / (sd(d) / √n), d = a − b, two-sided p from t with n − 1 df."""
    d = _pairs(a, b)
    n = d.size
    if n < 2:
        return Test("paired t-test", math.nan, math.nan, n, float(d.mean()) if n else math.nan)
    sd = float(d.std(ddof=1))
    mean = float(d.mean())
    if sd == 0:
        return Test("paired t-test", math.copysign(math.inf, mean) if mean else math.nan,
                    0.0 if mean else 1.0, n, mean)
    t = mean / (sd / math.sqrt(n))
    p = 2 * float(special.stdtr(n - 1, -abs(t)))
    return Test("paired t-test", t, min(p, 1.0), n, mean)


def welch_t(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray) -> Test:
    """Welch's unpaired t-test (unequal variances), two-sided: for samples that do not pair (other seeds,
    other images). df from the Welch–Satterthwaite equation."""
    x, y = _values(a), _values(b)
    if x.size < 2 or y.size < 2:
        return Test("Welch t-test", math.nan, math.nan, x.size + y.size, math.nan)
    vx, vy = x.var(ddof=1) / x.size, y.var(ddof=1) / y.size
    effect = float(x.mean() - y.mean())
    if vx + vy == 0:
        return Test("Welch t-test", math.nan, 0.0 if effect else 1.0, x.size + y.size, effect)
    t = effect / math.sqrt(vx + vy)
    df = (vx + vy) ** 2 / (vx**2 / (x.size - 1) + vy**2 / (y.size - 1))
    return Test("Welch t-test", t, min(2 * float(special.stdtr(df, -abs(t))), 1.0), x.size + y.size, effect)


def wilcoxon(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray) -> Test:
    """Wilcoxon's signed-rank test on d = a − b (zeros dropped): W = min(R⁺, R⁻), two-sided.

    As scipy's `wilcoxon` with its defaults: the exact null distribution for n ≤ 50 without ties; with ties,
    all 2ⁿ sign flips of the (average) ranks for n ≤ 13; otherwise the normal approximation with the tie
    correction of the variance and no continuity correction.
    """
    d = _pairs(a, b)
    effect = float(d.mean()) if d.size else math.nan
    d = d[d != 0]
    n = d.size
    if n == 0:
        return Test("Wilcoxon signed-rank", math.nan, math.nan, 0, effect)
    ranks = _average_ranks(np.abs(d))
    r_plus = float(ranks[d > 0].sum())
    w = min(r_plus, n * (n + 1) / 2 - r_plus)
    _, counts = np.unique(np.abs(d), return_counts=True)
    if n <= 50 and (counts == 1).all():
        p = 2 * _signed_rank_cdf(int(w), n)
    elif n <= 13:
        p = _sign_flip_p(ranks, r_plus)
    else:
        mean = n * (n + 1) / 4
        var = n * (n + 1) * (2 * n + 1) / 24 - float((counts**3 - counts).sum()) / 48
        z = (w - mean) / math.sqrt(var)
        p = 2 * float(special.ndtr(-abs(z)))
    return Test("Wilcoxon signed-rank", w, min(p, 1.0), n, effect)


def _signed_rank_cdf(w: int, n: int) -> float:
    """P(W⁺ ≤ w) under the null for n untied ranks: the count of subsets of {1..n} summing to ≤ w, / 2ⁿ."""
    counts = np.zeros(n * (n + 1) // 2 + 1)
    counts[0] = 1
    for k in range(1, n + 1):
        counts[k:] = counts[k:] + counts[:-k].copy()
    return float(counts[: w + 1].sum() / 2.0**n)


def _sign_flip_p(ranks: np.ndarray, r_plus: float) -> float:
    """Two-sided p of R⁺ over every assignment of signs to `ranks`: 2 · min(P(R⁺ ≥ r), P(R⁺ ≤ r))."""
    n = ranks.size
    signs = (np.arange(2**n)[:, None] >> np.arange(n)) & 1  # (2ⁿ, n) every pattern
    null = signs @ ranks
    eps = 1e-9 * max(1.0, abs(r_plus))
    return float(2 * min((null >= r_plus - eps).mean(), (null <= r_plus + eps).mean()))


def _average_ranks(x: np.ndarray) -> np.ndarray:
    """Ranks 1..n, ties sharing their average rank."""
    order = np.argsort(x, kind="mergesort")
    ranks = np.empty(x.size)
    ranks[order] = np.arange(1, x.size + 1)
    _, inverse, counts = np.unique(x, return_inverse=True, return_counts=True)
    sums = np.bincount(inverse, weights=ranks)
    return sums[inverse] / counts[inverse]


def t_interval(values: Sequence[float] | np.ndarray, level: float = LEVEL) -> Interval:
    """Mean ± t_{(1+level)/2, n−1} · s / √n over the defined values; NaN bounds for n < 2."""
    v = _values(values)
    n = v.size
    if n == 0:
        return Interval(math.nan, math.nan, math.nan, 0, level, "t")
    return t_interval_of(float(v.mean()), float(v.std(ddof=1)) if n > 1 else math.nan, n, level)


def t_interval_of(mean: float, sd: float, n: int, level: float = LEVEL) -> Interval:
    """The Student-t interval from a mean, a standard deviation and a count."""
    if n < 2:
        return Interval(mean, math.nan, math.nan, n, level, "t")
    half = float(special.stdtrit(n - 1, 0.5 + level / 2)) * sd / math.sqrt(n)
    return Interval(mean, mean - half, mean + half, n, level, "t")


def bootstrap(values: Sequence[float] | np.ndarray, level: float = LEVEL, resamples: int = RESAMPLES,
              seed: int = 0) -> Interval:
    """Mean and percentile-bootstrap interval: the (1 ± level)/2 quantiles of the means of `resamples` resamples."""
    v = _values(values)
    if v.size == 0:
        return Interval(math.nan, math.nan, math.nan, 0, level, "bootstrap")
    rng = np.random.default_rng(seed)
    means = v[rng.integers(0, v.size, size=(resamples, v.size))].mean(1)
    low, high = np.quantile(means, [(1 - level) / 2, (1 + level) / 2])
    return Interval(float(v.mean()), float(low), float(high), int(v.size), level, "bootstrap")


def bootstrap_seeds(per_seed: Sequence[Sequence[float] | np.ndarray], level: float = LEVEL,
                    resamples: int = RESAMPLES, seed: int = 0) -> Interval:
    """Hierarchical percentile bootstrap over seeds and images: each resample draws S seeds with replacement,
    then each drawn seed's images with replacement; the statistic is the mean over seeds of their image means.

    The point estimate is that mean over seeds (each seed weighs the same). `n` is the number of seeds.
    """
    groups = [v for v in (_values(s) for s in per_seed) if v.size]
    if not groups:
        return Interval(math.nan, math.nan, math.nan, 0, level, "hierarchical bootstrap")
    rng = np.random.default_rng(seed)
    s = len(groups)
    chosen = rng.integers(0, s, size=(resamples, s))  # (R, S) which seed fills each slot
    totals = np.zeros(resamples)
    for g, v in enumerate(groups):
        uses = (chosen == g).sum(1)  # (R,) how many slots seed g fills in each resample
        for k in range(1, int(uses.max(initial=0)) + 1):
            rows = np.nonzero(uses >= k)[0]
            totals[rows] += v[rng.integers(0, v.size, size=(rows.size, v.size))].mean(1)
    means = totals / s
    low, high = np.quantile(means, [(1 - level) / 2, (1 + level) / 2])
    point = float(np.mean([v.mean() for v in groups]))
    return Interval(point, float(low), float(high), s, level, "hierarchical bootstrap")


def fmt(interval: Interval, digits: int = 2) -> str:
    """`mean [low, high]` with `digits` decimals; a mean alone when the interval is undefined."""
    if math.isnan(interval.mean):
        return "–"
    if math.isnan(interval.low):
        return f"{interval.mean:.{digits}f}"
    return f"{interval.mean:.{digits}f} [{interval.low:.{digits}f}, {interval.high:.{digits}f}]"


def p_text(p: float) -> str:
    """`p = 0.17`, `p = 0.0027` or `p < 0.001`."""
    return "p < 0.001" if p < 0.001 else f"p = {fmt_p(p)}"


def fmt_p(p: float) -> str:
    """A p-value for a table: two significant digits, `< 0.001` below that."""
    if math.isnan(p):
        return "–"
    if p < 0.001:
        return "< 0.001"
    return f"{p:.2g}" if p < 0.1 else f"{p:.2f}"
