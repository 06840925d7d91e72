"""The paper's claims as tests with a verdict: supported, not supported, or undecided at this budget.

A claim "A beats B" on a dataset compares the two models' eval CVR AUC, paired by seed (the same seed
gives both the same batches and negatives). Two sources of noise are counted:
- training: the spread of the per-seed differences (standard error over seeds);
- the eval set: a bootstrap over eval clicks (`BOOTSTRAP` resamples of the clicks, the same resample
  for every run) of the seed-averaged difference.
The interval is the mean difference +- 1.96 x the two standard errors added in quadrature (a normal
approximation; with 3 seeds the seed term is itself rough). Verdict:
- supported: the interval lies above 0;
- not supported: the interval lies below `MARGIN` (A is not better by a margin that would matter;
  "the opposite holds" when it lies below 0);
- undecided: otherwise (the data allow both a gain worth having and none).

A claim that a score finds flawed listings (ROC AUC against the truth) is supported when the bootstrap
interval over listings lies above 0.5, not supported when it lies below 0.5 + `MARGIN_FLAWS`.

Usage:
```text
compare({0: preds_a0, 1: preds_a1}, {0: preds_b0, 1: preds_b1}, labels)
```
{"mean": 0.012, "low": 0.004, "high": 0.020, "verdict": "supported", ...}
"""

from typing import Dict, Mapping

import numpy as np
from scipy.stats import rankdata

BOOTSTRAP = 300
Z = 1.96
MARGIN = 0.005  # CVR AUC: a smaller gain would not change a ranking decision
MARGIN_FLAWS = 0.05  # flaw-finding AUC: below 0.55 an audit is of no use to a merchant
SUPPORTED, NOT_SUPPORTED, OPPOSITE, UNDECIDED = (
    "supported",
    "not supported",
    "not supported (the opposite holds)",
    "undecided at this budget",
)


def fast_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """ROC AUC by ranks (ties count half, as `metrics.weighted_auc` with unit weights); NaN with one class."""
    labels = np.asarray(labels) > 0.5
    positives, negatives = labels.sum(), (~labels).sum()
    if not positives or not negatives:
        return float("nan")
    ranks = rankdata(scores)
    return float((ranks[labels].sum() - positives * (positives + 1) / 2) / (positives * negatives))


def verdict(low: float, high: float, margin: float) -> str:
    if low > 0:
        return SUPPORTED
    if high < 0:
        return OPPOSITE
    if high < margin:
        return NOT_SUPPORTED
    return UNDECIDED


def compare(
    a: Mapping[int, np.ndarray],
    b: Mapping[int, np.ndarray],
    labels: np.ndarray,
    bootstrap: int = BOOTSTRAP,
    seed: int = 0,
    margin: float = MARGIN,
) -> Dict[str, object]:
    """Does model A rank the eval clicks better than model B (AUC)?

    Args:
        a, b: seed -> [N] predictions on the same N eval clicks; only seeds both have are paired.
        labels: [N] the clicks' order labels.
        bootstrap: resamples of the clicks.
        seed: seeds the resamples.
        margin: the smallest gain that matters (see the module docstring).

    Returns:
        mean (A - B), its per-seed values, the two standard errors, the interval (low, high) and the verdict.
    """
    seeds = sorted(set(a) & set(b))
    if not seeds:
        raise ValueError("no seed has both models")
    differences = np.array([fast_auc(labels, a[s]) - fast_auc(labels, b[s]) for s in seeds])
    seed_se = float(differences.std(ddof=1) / np.sqrt(len(seeds))) if len(seeds) > 1 else 0.0
    rng = np.random.default_rng(seed)
    resampled = []
    for _ in range(bootstrap):
        index = rng.integers(0, len(labels), len(labels))
        resampled.append(
            np.mean([fast_auc(labels[index], a[s][index]) - fast_auc(labels[index], b[s][index]) for s in seeds])
        )
    eval_se = float(np.nanstd(resampled, ddof=1))
    mean = float(differences.mean())
    half = Z * float(np.hypot(seed_se, eval_se))
    return {
        "seeds": seeds,
        "per_seed": differences.round(6).tolist(),
        "mean": mean,
        "seed_se": seed_se,
        "eval_se": eval_se,
        "low": mean - half,
        "high": mean + half,
        "verdict": verdict(mean - half, mean + half, margin),
    }


def flaw_finding(
    labels: np.ndarray, scores: np.ndarray, bootstrap: int = BOOTSTRAP, seed: int = 0, margin: float = MARGIN_FLAWS
) -> Dict[str, object]:
    """Does a score find the flawed listings (`labels` 1) among the ok ones? ROC AUC with a bootstrap
    interval over listings, judged against chance (0.5)."""
    labels = np.asarray(labels) > 0.5
    scores = np.asarray(scores, np.float64)
    value = fast_auc(labels, scores)
    rng = np.random.default_rng(seed)
    resampled = []
    for _ in range(bootstrap):
        index = rng.integers(0, len(labels), len(labels))
        resampled.append(fast_auc(labels[index], scores[index]))
    low, high = (float(q) for q in np.nanpercentile(resampled, [2.5, 97.5]))
    return {
        "auc": value,
        "low": low,
        "high": high,
        "flawed": int(labels.sum()),
        "ok": int((~labels).sum()),
        "verdict": verdict(low - 0.5, high - 0.5, margin),
    }
