"""The statistics of the verdict: mean, std and Student-t intervals over seeds, and the paired
difference of each retrained config to the baseline on the same seeds (no scipy needed)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

BASELINE = "baseline"  # label of the hand-tuned config among the retrained ones

# Two-sided 95% Student t quantiles by degrees of freedom (scipy is not a dependency).
T975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228,
        12: 2.179, 15: 2.131, 20: 2.086, 30: 2.042}


def t975(df: int) -> float:
    if df <= 0:
        return math.nan
    if df > 30:
        return 1.96 + 2.4 / df  # within 0.002 of the exact quantile
    return T975[max(k for k in T975 if k <= df)]  # between table rows: the next smaller df, a wider interval


def verdict(retrain: pd.DataFrame, metric: str, mode: str) -> pd.DataFrame:
    """Per config: mean, std, 95% interval over seeds; paired difference to the baseline on the
    same seeds, its 95% interval, and whether it beats the baseline beyond seed noise."""
    rows = []
    base = retrain[retrain["label"] == BASELINE].set_index("seed")[metric]
    for label, group in retrain.groupby("label", sort=False):
        values = group.set_index("seed")[metric]
        n = len(values)
        row = {"label": label, "n": n, "mean": values.mean(), "std": values.std(ddof=1) if n > 1 else math.nan}
        half = t975(n - 1) * row["std"] / math.sqrt(n) if n > 1 else math.nan
        row["ci_low"], row["ci_high"] = row["mean"] - half, row["mean"] + half
        if label != BASELINE:
            common = values.index.intersection(base.index)
            diff = values[common] - base[common]
            m = len(diff)
            row["diff_mean"] = diff.mean()
            dhalf = t975(m - 1) * diff.std(ddof=1) / math.sqrt(m) if m > 1 else math.nan
            row["diff_low"], row["diff_high"] = row["diff_mean"] - dhalf, row["diff_mean"] + dhalf
            better = row["diff_low"] > 0 if mode == "max" else row["diff_high"] < 0
            worse = row["diff_high"] < 0 if mode == "max" else row["diff_low"] > 0
            row["beats_baseline"] = bool(better) if m > 1 else False
            row["worse_than_baseline"] = bool(worse) if m > 1 else False
        rows.append(row)
    return pd.DataFrame(rows)


def verdict_sentence(v: pd.DataFrame, metric: str, kept_baseline: bool = False) -> str:
    """`kept_baseline`: the search's best trial was the baseline's own, so what the search recommends
    is the baseline; the best other config was retrained for reference only."""
    tuned = v[v["label"] != BASELINE]
    if tuned.empty:
        return "no tuned configuration was retrained."
    best = tuned.iloc[0]
    diff = f"{best['diff_mean']:+.4f} (95% interval {best['diff_low']:+.4f} .. {best['diff_high']:+.4f})"
    if kept_baseline:
        return (f"no trial beat the baseline's own trial in the search, so the search recommends keeping the "
                f"baseline; the best other config, retrained for reference, against it on {metric}: paired "
                f"difference {diff} over {int(best['n'])} seeds.")
    if best.get("beats_baseline"):
        return f"the best tuned config beats the baseline beyond seed noise on {metric}: paired difference {diff}."
    if best.get("worse_than_baseline"):
        return (f"the best tuned config is worse than the baseline beyond seed noise on {metric}: paired difference "
                f"{diff} over {int(best['n'])} seeds.")
    return (f"the best tuned config does not beat the baseline beyond seed noise on {metric}: paired difference "
            f"{diff} over {int(best['n'])} seeds.")


def mean_std(values: pd.Series, digits: int = 4) -> str:
    values = values.dropna()
    if values.empty:
        return ""
    std = values.std(ddof=1) if len(values) > 1 else math.nan
    return f"{values.mean():.{digits}f}" + (f" ± {std:.{digits}f}" if math.isfinite(std) else "")


def rank_corr(a: pd.Series, b: pd.Series) -> float:
    """Spearman's rho: Pearson's correlation of the ranks (ties share their mean rank)."""
    if len(a) < 3 or a.nunique() < 2 or b.nunique() < 2:
        return math.nan
    return float(np.corrcoef(a.rank().to_numpy(), b.rank().to_numpy())[0, 1])
