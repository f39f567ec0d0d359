"""Paired comparisons of two arms' per-seed RMSEs: wins, losses and a two-sided paired test
(Wilcoxon signed-rank when scipy is installed, else an exact sign test)."""

from __future__ import annotations

import math
from typing import Sequence

import pandas as pd


def sign_test(differences: Sequence[float]) -> float:
    """Exact two-sided sign test of median(differences) = 0; zero differences are dropped.
    p = min(1, 2 * P(X <= min(k, n - k))) for X ~ Binomial(n, 1/2)."""
    signs = [d for d in differences if d != 0]
    n = len(signs)
    if n == 0:
        return 1.0
    k = sum(1 for d in signs if d > 0)
    tail = sum(math.comb(n, i) for i in range(min(k, n - k) + 1)) / 2 ** n
    return min(1.0, 2 * tail)


def paired_test(differences: Sequence[float]) -> tuple[float, str]:
    """(two-sided p-value, test name) for paired differences: Wilcoxon signed-rank when scipy is
    installed, else the exact sign test."""
    differences = [float(d) for d in differences]
    if not differences:
        return math.nan, ""
    try:
        from scipy.stats import wilcoxon
    except ImportError:
        return sign_test(differences), "sign"
    if all(d == 0 for d in differences):
        return 1.0, "wilcoxon"
    return float(wilcoxon(differences).pvalue), "wilcoxon"


def paired(mine: pd.Series, other: pd.Series, prefix: str = "") -> dict:
    """Two per-seed RMSE series compared over the seeds both have: n_pairs, wins (mine lower),
    losses, and the two-sided paired test's p_value and name, each key after `prefix`."""
    common = mine.index.intersection(other.index)
    diff = (mine[common] - other[common]).tolist()
    p, test = paired_test(diff)
    return {f"{prefix}n_pairs": len(common), f"{prefix}wins": sum(d < 0 for d in diff),
            f"{prefix}losses": sum(d > 0 for d in diff), f"{prefix}p_value": p,
            f"{prefix}test": test}


def against_reference(mine: pd.Series, ref: pd.Series, arm: str) -> dict:
    """A cell's per-seed RMSE set against the real-data reference cell's, over the seeds both
    have: the reference's mean, ratio_to_reference (mean of mine / ref) and the paired test."""
    common = mine.index.intersection(ref.index)
    if not len(common):
        return {}
    return {"reference_arm": arm, "reference_rmse_mean": ref[common].mean(),
            "ratio_to_reference": (mine[common] / ref[common]).mean(),
            **paired(mine, ref, "reference_")}


def relative_change(mine: pd.Series, ref: pd.Series) -> dict:
    """Two per-seed series (indexed alike) over the seeds both have: the mean relative change
    of mine against ref in % (`change_%`, NaN without a pair), the seeds where mine is lower
    (`better`) and no higher (`no_worse`) of `n`."""
    change = (mine / ref.reindex(mine.index) - 1).dropna()
    return {"change_%": 100 * change.mean() if len(change) else float("nan"),
            "better": int((change < 0).sum()), "no_worse": int((change <= 0).sum()),
            "n": len(change)}
