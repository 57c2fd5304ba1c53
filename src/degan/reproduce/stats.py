"""Statistics of seeded comparisons: means, 95 % intervals, paired differences and verdicts.

The rules are those of SPEC §11: every arm has >= 3 seeds (seed of init, latents and augmentation; the data subset
is the same for every seed), the interval of a mean is the Student t interval over seeds
``mean ± t_{0.975, n-1} * s / sqrt(n)`` (``s`` the sample standard deviation, ``n - 1`` degrees of freedom), and
two arms that share seeds are compared by the paired differences ``arm[seed] - baseline[seed]`` with the same t
interval on the differences. With 3 seeds ``t_{0.975, 2} = 4.30``, so an interval is about 2.5 sample standard
deviations wide on each side: only effects well above the seed-to-seed spread are called.

Verdicts (lower metric = better, as for KID and FID):

- ``"better"`` claims (the arm improves on the baseline): **reproduced** when the whole interval of the paired
  difference is below 0, **not reproduced** when it is above 0 (the arm is worse) or lies inside
  ``[-margin, +margin]`` (no effect of the margin's size is possible), **inconclusive** otherwise.
- ``"match"`` claims (the arm is not worse than the baseline, as sparse tickets vs the dense GAN): **reproduced**
  when the upper end of the interval is below ``+margin``, **not reproduced** when the lower end is above 0 (the
  arm is measurably worse), **inconclusive** otherwise.

- ``"within"`` claims (the arm scores inside the baseline's own interval, as in the goal "KID inside the IMP
  ticket's interval"): **reproduced** when the arm's mean is at most the upper end of the baseline arm's 95 %
  interval (inside it, or below it: better), **not reproduced** otherwise; :func:`within_verdict`. It needs >= 3
  seeds on both sides (else inconclusive) and is reported beside the paired test, never instead of it.

The margin is a fraction of the baseline's mean (``rel_margin``, 10 % by default), stated with every verdict.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

REPRODUCED, NOT_REPRODUCED, INCONCLUSIVE = "reproduced", "not reproduced", "inconclusive"
EXPECTATIONS = ("better", "match")
WITHIN = "within"


def t_quantile(df: int, level: float = 0.95) -> float:
    """Two-sided Student t quantile ``t_{(1 + level) / 2, df}``.

    Raises:
        ValueError: ``df < 1`` or ``level`` outside (0, 1).
    """
    if df < 1:
        raise ValueError(f"a t interval needs at least 2 values (df >= 1), got df={df}")
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")
    from scipy.stats import t

    return float(t.ppf((1.0 + level) / 2.0, df))


@dataclass(frozen=True)
class Interval:
    """A mean with its two-sided interval over ``n`` values (``low``/``high`` are None when n < 2)."""

    mean: float
    low: float | None
    high: float | None
    n: int
    std: float | None
    method: str = "student-t 95%"

    @property
    def half_width(self) -> float | None:
        return None if self.low is None else (self.high - self.low) / 2.0

    def to_dict(self) -> dict:
        return {"mean": self.mean, "low": self.low, "high": self.high, "half_width": self.half_width,
                "n": self.n, "std": self.std, "method": self.method}


def mean_interval(values, level: float = 0.95) -> Interval:
    """Mean and Student t interval of ``values`` (one per seed).

    Args:
        values: finite numbers, at least one.
        level: coverage of the interval.

    Returns:
        an :class:`Interval`; with one value ``low``/``high``/``std`` are None (no interval from one seed).

    Raises:
        ValueError: no values, or a value that is not finite.
    """
    x = np.asarray(list(values), dtype=np.float64)
    if x.size == 0:
        raise ValueError("mean_interval needs at least one value")
    if not np.all(np.isfinite(x)):
        raise ValueError(f"values must be finite, got {x.tolist()}")
    mean = float(x.mean())
    if x.size < 2:
        return Interval(mean, None, None, 1, None)
    std = float(x.std(ddof=1))
    half = t_quantile(x.size - 1, level) * std / math.sqrt(x.size)
    return Interval(mean, mean - half, mean + half, int(x.size), std, f"student-t {level:.0%}")


def paired_difference(arm: dict, baseline: dict, level: float = 0.95) -> tuple[Interval, list]:
    """Interval of ``arm[s] - baseline[s]`` over the seeds ``s`` both have.

    Args:
        arm, baseline: ``{seed: value}``.

    Returns:
        (interval of the differences, the shared seeds in order).

    Raises:
        ValueError: the two arms share no seed.
    """
    seeds = sorted(set(arm) & set(baseline))
    if not seeds:
        raise ValueError("the arm and its baseline share no seed; a paired difference needs the same seeds")
    return mean_interval([arm[s] - baseline[s] for s in seeds], level), seeds


def verdict(diff: Interval, expect: str, margin: float) -> str:
    """Verdict of a claim from the interval of ``arm - baseline`` (lower is better); see the module docstring.

    Raises:
        ValueError: unknown ``expect`` or a negative margin.
    """
    if expect not in EXPECTATIONS:
        raise ValueError(f"unknown expectation {expect!r}; valid: {', '.join(EXPECTATIONS)}")
    if margin < 0:
        raise ValueError(f"margin must be >= 0, got {margin}")
    if diff.low is None:
        return INCONCLUSIVE
    if expect == "better":
        if diff.high < 0:
            return REPRODUCED
        if diff.low > 0 or (diff.low >= -margin and diff.high <= margin):
            return NOT_REPRODUCED
        return INCONCLUSIVE
    if diff.high < margin:
        return REPRODUCED
    if diff.low > 0:
        return NOT_REPRODUCED
    return INCONCLUSIVE


def within_verdict(arm_mean: float | None, baseline: Interval, arm_n: int = 3, min_seeds: int = 3) -> str:
    """Verdict of a ``"within"`` claim: is the arm's mean at most the upper end of the baseline's interval?

    Args:
        arm_mean: the arm's mean over its seeds (None: not run).
        baseline: the baseline arm's mean and interval.
        arm_n: how many seeds the arm's mean has; fewer than ``min_seeds`` (on either side) is inconclusive.

    Returns:
        :data:`REPRODUCED` (``arm_mean <= baseline.high``), :data:`NOT_REPRODUCED` (above it), or
        :data:`INCONCLUSIVE` when the arm has no mean or either side has fewer than ``min_seeds`` seeds.
    """
    if arm_mean is None or baseline.high is None or arm_n < min_seeds or baseline.n < min_seeds:
        return INCONCLUSIVE
    return REPRODUCED if arm_mean <= baseline.high else NOT_REPRODUCED
