"""How sure a table's numbers are: an interval per cell and a paired test of each row against the best.

A cell's accuracy is uncertain for two reasons: another seed trains another model (the spread over
seeds), and another draw of test images from the same domain would score differently (the test
set's own sampling error, which DomainBed's ± SE over seeds leaves out). A cell combines both:

- one seed on one test domain: the Wilson score interval of its n test images;
- otherwise: mean ± t·SE with SE² = s²/k (the seeds' variance of the mean, k seeds) +
  Σ w² p(1-p)/n (each test domain's binomial variance, weighted as the cell averages the domains,
  p averaged over seeds); t has the Welch–Satterthwaite degrees of freedom (the binomial part counts
  as known), so three seeds give a wide interval rather than a falsely narrow one.

Rows are compared with the column's best by a paired sign-flip test over the same test images: the
per-image difference in correctness (averaged over each method's seeds) has a sign that is a fair
coin under "no difference". With one seed each and equally weighted images this is exactly
McNemar's exact test (a binomial test on the images only one of the two got right); otherwise the
p value comes from random sign flips, seeded, so a table is the same every time it is built.

Any two rows (benchmarks.compare) get the same test, a paired interval of their difference (the same
per-image differences, a normal interval over the images plus each row's seed spread as a cell's has
it), and Holm's correction over the family of pairs compared at once.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

LEVEL = 0.95
Z = 1.959963984540054  # the normal quantile of 0.975
FLIPS = 10_000  # random sign flips where the test is not exact
ALPHA = 0.05  # a row "differs from the best" below this p value


def wilson(p: float, n: int, z: float = Z) -> tuple[float, float]:
    """The Wilson score interval of a proportion ``p`` observed on ``n`` trials (as fractions)."""
    if n <= 0:
        return (0.0, 1.0)
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (max(0.0, centre - half), min(1.0, centre + half))


def t_quantile(df: float) -> float:
    """The 0.975 quantile of Student's t with ``df`` degrees of freedom (the normal's for df = inf)."""
    if math.isinf(df):
        return Z
    from scipy.stats import t

    return float(t.ppf(0.5 + LEVEL / 2, df))


def interval(per_seed: Sequence[float], parts: Sequence[tuple[float, int, float]]) -> tuple[float, float]:
    """The 95% interval (fractions) of a cell: ``per_seed`` its value per seed, ``parts`` (p, n, weight) per test
    domain it averages (p averaged over seeds, n test images, weight in the average; weights sum to 1)."""
    mean = float(np.mean(per_seed))
    if len(per_seed) == 1 and len(parts) == 1 and parts[0][2] == 1.0:
        return wilson(mean, parts[0][1])
    sampling = sum(weight * weight * p * (1 - p) / n for p, n, weight in parts if n > 0)
    k = len(per_seed)
    seeds = float(np.var(per_seed, ddof=1)) / k if k > 1 else 0.0
    se2 = sampling + seeds
    if se2 == 0:
        return (mean, mean)
    df = se2 * se2 / (seeds * seeds / (k - 1)) if seeds > 0 else math.inf  # Welch–Satterthwaite
    half = t_quantile(df) * math.sqrt(se2)
    return (max(0.0, mean - half), min(1.0, mean + half))


def mcnemar_exact(only_first: int, only_second: int) -> float:
    """Two-sided exact McNemar p value: of the images exactly one method got right, ``only_first`` went to the
    first; under no difference that count is Binomial(b + c, 1/2)."""
    total = only_first + only_second
    if total == 0:
        return 1.0
    low = min(only_first, only_second)
    tail = sum(math.comb(total, i) for i in range(low + 1)) / 2.0**total
    return min(1.0, 2.0 * tail)


def sign_flip(differences: np.ndarray, weights: np.ndarray | None = None, flips: int = FLIPS, seed: int = 0) -> float:
    """Two-sided p value of a paired sign-flip test of sum(weight · difference) = 0. Exact McNemar when every
    difference is -1, 0 or 1 with equal weights; else ``flips`` random flips (seeded): (1 + extreme) / (1 + flips)."""
    differences = np.asarray(differences, float)
    weights = np.ones_like(differences) if weights is None else np.asarray(weights, float)
    if np.all(np.isin(differences, (-1.0, 0.0, 1.0))) and np.allclose(weights, weights[0] if len(weights) else 1):
        return mcnemar_exact(int((differences > 0).sum()), int((differences < 0).sum()))
    terms = weights * differences
    keep = terms != 0
    terms = terms[keep]
    if not len(terms):
        return 1.0
    observed = abs(terms.sum())
    rng = np.random.default_rng(seed)
    extreme = 0
    for start in range(0, flips, 1000):  # in blocks: [1000, images] signs at a time
        signs = rng.choice((-1.0, 1.0), size=(min(1000, flips - start), len(terms)))
        extreme += int((np.abs(signs @ terms) >= observed - 1e-12).sum())
    return (1 + extreme) / (1 + flips)


def paired_p(domains: Sequence[tuple[float, np.ndarray]]) -> float:
    """The paired sign-flip test's p value over ``domains``: per test domain, (its weight in the cells, the per-image
    differences in correctness); each image weighs its domain's weight over the domain's image count."""
    return sign_flip(np.concatenate([d for _, d in domains]),
                     np.concatenate([np.full(len(d), weight / len(d)) for weight, d in domains]))


def paired_interval(domains: Sequence[tuple[float, np.ndarray]], per_seed_a: Sequence[float],
                    per_seed_b: Sequence[float]) -> tuple[float, float]:
    """The 95% interval (fractions) of the difference a − b of two cells over the same test images.

    ``domains`` as paired_p reads them (the differences: each method's correctness averaged over its own seeds);
    ``per_seed_a``, ``per_seed_b``: each cell's value per seed. The centre is the weighted mean difference; SE² =
    Σ w² s²/n (each domain's sample variance of the per-image differences: the test images' part, normal) + each
    cell's seed variance of its mean, s²/k, as ``interval`` adds it, with Welch–Satterthwaite degrees of freedom
    over the two seed terms (the image part counts as known). Not clipped: a difference lies in [-1, 1].
    """
    mean = float(sum(weight * d.mean() for weight, d in domains))
    images = sum(weight * weight * float(np.var(d, ddof=1)) / len(d) for weight, d in domains if len(d) > 1)
    seeds = [(float(np.var(v, ddof=1)) / len(v), len(v)) for v in (per_seed_a, per_seed_b) if len(v) > 1]
    se2 = images + sum(term for term, _ in seeds)
    if se2 == 0:
        return (mean, mean)
    spread = sum(term * term / (k - 1) for term, k in seeds)
    df = se2 * se2 / spread if spread > 0 else math.inf  # Welch–Satterthwaite
    half = t_quantile(df) * math.sqrt(se2)
    return (mean - half, mean + half)


def holm(p_values: Sequence[float | None]) -> list[float | None]:
    """Holm's step-down adjustment of one family of p values, in their order: the i-th smallest (i from 1) of m
    times (m - i + 1), then each at least the one before it in that order, and at most 1. None (a pair that could
    not be tested) stays None and is not counted in m."""
    tested = sorted((p, index) for index, p in enumerate(p_values) if p is not None)
    adjusted: list[float | None] = [None] * len(p_values)
    running = 0.0
    for rank, (p, index) in enumerate(tested):
        running = max(running, min(1.0, (len(tested) - rank) * p))
        adjusted[index] = running
    return adjusted
