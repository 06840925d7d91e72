"""The experiments' metrics, computed from predictions on the Evaluator's rows (`data.EvalRows`) with the
pipeline's own metric code (`camenn.tfx_pipeline.metrics`: exact weighted AUC, GAUC by shopper,
normalized entropy and log loss against the training rate), so that a model trained in this process is
judged as TFMA judges a pipeline's model.

- CVR on the true pairs: AUC, GAUC, log loss, normalized entropy, log loss / prior's, calibration
  (mean prediction / mean label) and a 10-bin reliability histogram; and each model's share of the
  headroom the oracle leaves: (AUC - 0.5) / (oracle AUC - 0.5).
- ITA and TIA: AUC of the true pairs against all their negatives, and per negative kind (`hard`: another
  product of the same coarse category; `other_coarse`).
- Flawed listings: how well a low ITA finds inaccurate texts, a low TIA vague photos, and a low
  min(ITA, TIA) any flaw (ROC AUC against the truth file's `ok` listings), per merchant size too.

Usage:
```text
cvr = cvr_metrics(rows, predictions["cvr"])        # {"auc": ..., "gauc": ..., ...}
headroom_share(cvr["auc"], oracle_cvr["auc"])
```
"""

from typing import Dict, Mapping, Optional, Sequence

import numpy as np

from camenn.model import features as F
from camenn.tfx_pipeline import metrics

CALIBRATION_BINS = 10
GOOD_QUALITY = "ok"
FLAWS = {F.ITA: "inaccurate_text", F.TIA: "vague_photo"}  # the flaw each alignment head should find
MERCHANT_SIZES = ("small", "medium", "large")


def auc(labels: np.ndarray, scores: np.ndarray, weights: Optional[np.ndarray] = None) -> float:
    """Exact (weighted) ROC AUC, ties counted half; NaN with one class only."""
    weights = np.ones(len(labels)) if weights is None else weights
    return metrics.weighted_auc(
        np.asarray(labels, np.float64), np.asarray(scores, np.float64), np.asarray(weights, np.float64)
    )


def headroom_share(model_auc: float, oracle_auc: float) -> float:
    """(AUC - 0.5) / (oracle AUC - 0.5): 0 is chance, 1 the best any model can do on the data."""
    if oracle_auc is None or not np.isfinite(oracle_auc) or oracle_auc <= 0.5:
        return float("nan")
    return float((model_auc - 0.5) / (oracle_auc - 0.5))


def calibration_histogram(labels: np.ndarray, predictions: np.ndarray, bins: int = CALIBRATION_BINS) -> list:
    """Per equal prediction range: [rows, sum of labels, sum of predictions]."""
    index = np.clip((predictions * bins).astype(int), 0, bins - 1)
    out = np.zeros((bins, 3))
    np.add.at(out, index, np.stack([np.ones(len(labels)), labels, predictions], axis=1))
    return out.round(6).tolist()


def cvr_metrics(rows, predictions: np.ndarray, subset: Optional[np.ndarray] = None) -> Dict[str, float]:
    """CVR metrics on the rows that count for CVR (the eval clicks), or on `subset` of them.

    Args:
        rows: `data.EvalRows`.
        predictions: [len(rows)] predicted conversion probabilities (other rows are ignored).
        subset: indices of rows to judge (default: every CVR row).
    """
    index = rows.task_rows(F.CVR) if subset is None else np.asarray(subset)
    labels, p = rows.labels[F.CVR][index], np.asarray(predictions, np.float64)[index]
    weights = rows.weights[F.CVR][index]
    result = {
        "auc": auc(labels, p, weights),
        "gauc": metrics.group_auc(rows.shopper_id[index], labels, p, weights),
        **metrics.prior_log_loss_metrics(labels, p, rows.train_rate[index], weights),
        "mean_label": float(np.average(labels, weights=weights)),
        "mean_prediction": float(np.average(p, weights=weights)),
        "clicks": int(len(index)),
    }
    result["calibration"] = result["mean_prediction"] / result["mean_label"]
    result["calibration_histogram"] = calibration_histogram(labels, p)
    return result


def oracle_cvr_metrics(rows) -> Dict[str, float]:
    """`cvr_metrics` of the true probabilities; raises when a CVR row has no truth."""
    index = rows.task_rows(F.CVR)
    if rows.oracle is None or np.isnan(rows.oracle[index]).any():
        missing = len(index) if rows.oracle is None else int(np.isnan(rows.oracle[index]).sum())
        raise ValueError(f"{missing} of {len(index)} eval clicks have no true probability")
    return cvr_metrics(rows, rows.oracle)


def with_headroom(result: Dict[str, float], oracle: Optional[Mapping[str, float]]) -> Dict[str, float]:
    """`result` plus its AUC's and GAUC's share of the oracle's headroom."""
    if oracle:
        result = dict(
            result,
            auc_headroom=headroom_share(result["auc"], oracle["auc"]),
            gauc_headroom=headroom_share(result["gauc"], oracle["gauc"]),
        )
    return result


def alignment_metrics(rows, predictions: Mapping[str, np.ndarray]) -> Dict[str, float]:
    """ITA and TIA AUC on their rows, overall and per negative kind (`{task}/auc`, `{task}/auc/{kind}`)."""
    result = {}
    for task in (F.ITA, F.TIA):
        if task not in predictions:
            continue
        index = rows.task_rows(task)
        labels, scores = rows.labels[task][index], np.asarray(predictions[task], np.float64)[index]
        weights = rows.weights[task][index]
        result[f"{task}/auc"] = auc(labels, scores, weights)
        kinds = rows.negative_kind[index]
        for kind in (F.HARD_NEGATIVE, F.OTHER_COARSE_NEGATIVE):
            keep = np.array([kind.encode() in k for k in kinds])
            if keep.any():
                result[f"{task}/auc/{kind}"] = auc(labels[keep], scores[keep], weights[keep])
    return result


def flaw_metrics(
    item_ids: Sequence[str],
    ita: np.ndarray,
    tia: np.ndarray,
    truth: Mapping[str, str],
    merchant_size: Optional[Sequence[str]] = None,
) -> Dict[str, float]:
    """How well low alignment scores find the listings the truth file calls flawed.

    Returns ROC AUCs (0.5 is chance) of 1 - ITA against inaccurate texts (`ita_finds_inaccurate_text`),
    of 1 - TIA against vague photos (`tia_finds_vague_photo`), of 1 - min(ITA, TIA) against any flaw
    (`any_flaw`), each against the `ok` listings; with `merchant_size`, `any_flaw/{size}` within each
    size; and the counts (`listings`, `{quality}_listings`). Listings the truth lacks, or marks as a bad
    row, are left out.
    """
    keep = [i for i, item in enumerate(item_ids) if truth.get(item) in (GOOD_QUALITY, *FLAWS.values())]
    quality = np.array([truth[item_ids[i]] for i in keep])
    scores = {F.ITA: 1.0 - np.asarray(ita, np.float64)[keep], F.TIA: 1.0 - np.asarray(tia, np.float64)[keep]}
    misalignment = np.maximum(scores[F.ITA], scores[F.TIA])  # 1 - min(ITA, TIA)
    good = quality == GOOD_QUALITY
    result = {
        "listings": int(len(keep)),
        **{f"{q}_listings": int((quality == q).sum()) for q in (GOOD_QUALITY, *FLAWS.values())},
    }
    for task, flaw in FLAWS.items():
        chosen = good | (quality == flaw)
        result[f"{task}_finds_{flaw}"] = auc(quality[chosen] == flaw, scores[task][chosen])
    result["any_flaw"] = auc(~good, misalignment)
    if merchant_size is not None:
        sizes = np.array([merchant_size[i] for i in keep])
        for size in MERCHANT_SIZES:
            chosen = sizes == size
            result[f"any_flaw/{size}"] = auc(~good[chosen], misalignment[chosen]) if chosen.any() else float("nan")
            result[f"flawed_listings/{size}"] = int((~good[chosen]).sum())
            result[f"listings/{size}"] = int(chosen.sum())
    return result
