"""CameNN's TFMA custom metrics, loaded by TFMA on the Beam workers through
`tfma.MetricConfig(class_name=..., module="camenn.tfx_pipeline.metrics", config=...)`.

GAUC: the AUC of each shopper's events, averaged with each shopper weighted by their number of events
(weighted events where the eval config has example weights). A ranking serves one shopper at a time, so
what matters is ordering each shopper's own candidates; the global AUC also rewards telling shoppers
apart. Shoppers whose events are all positive or all negative have no AUC and are left out.

NormalizedEntropy (He et al., "Practical Lessons from Predicting Clicks on Ads at Facebook", 2014): the
log loss divided by the entropy of the training conversion rate p, -(p log p + (1 - p) log(1 - p)), the
log loss of always predicting p. Below 1 the model knows more than the prior; the raw log loss cannot say
that, since what a useless model scores depends on the rate (0.60 at 29% conversion, 0.20 at 5%).
The rate comes from each row's `features.TRAIN_CONVERSION_RATE` (AlignmentEvalExamples writes it).

LogLoss: the weighted log loss itself, computed like the two above.

LogLossVsPrior: the log loss over the log loss of predicting the training conversion rate for every row
of the same eval set. Below 1 the model beats the prior on these rows whatever the rate, and also when
the eval period converts at another rate than the training one, where normalized entropy alone misleads:
on the sample (22.5% in training, 24.4% in the eval period) the prior scores NE 1.048, and at 25% in
training and 20% in the eval period it would score NE 0.90 while knowing nothing.

Every metric here comes out bit for bit the same whatever order Beam adds rows and merges accumulators
in (TFMA's input batches are sized by timing, so that order changes between runs): sums are kept exact
until read, and GAUC reads its groups and rows in sorted order. So the same model gives the same metrics.
"""

import math
from collections import defaultdict
from typing import Dict, Iterable, Mapping, Optional

import apache_beam as beam
import numpy as np
import tensorflow_model_analysis as tfma
from tensorflow_model_analysis.metrics import metric_types, metric_util
from tensorflow_model_analysis.utils import util

from camenn.model import features as F

GAUC_NAME = "gauc"
NORMALIZED_ENTROPY_NAME = "normalized_entropy"
LOG_LOSS_VS_PRIOR_NAME = "log_loss_vs_prior"
LOG_LOSS_NAME = "log_loss"
_EPSILON = 1e-7  # predictions are clipped to [eps, 1 - eps], as Keras' binary cross-entropy does


def binary_entropy(rate: float) -> float:
    """-(p log p + (1 - p) log(1 - p)) in nats: the log loss of predicting the rate p for every example."""
    p = min(max(float(rate), _EPSILON), 1.0 - _EPSILON)
    return float(-(p * np.log(p) + (1.0 - p) * np.log(1.0 - p)))


def add_exactly(partials: list, x: float) -> list:
    """Adds x to a sum kept exactly as non-overlapping float partials (Shewchuk's algorithm, which
    `math.fsum` uses); `math.fsum(partials)` reads it, correctly rounded whatever the order of additions."""
    i = 0
    for y in partials:
        if abs(x) < abs(y):
            x, y = y, x
        high = x + y
        low = y - (high - x)
        if low:
            partials[i] = low
            i += 1
        x = high
    partials[i:] = [x]
    return partials


def weighted_auc(labels: np.ndarray, predictions: np.ndarray, weights: np.ndarray) -> float:
    """Exact weighted ROC AUC (ties count one half); NaN when only one class is present."""
    positive = labels > 0.5
    total_pos, total_neg = weights[positive].sum(), weights[~positive].sum()
    if total_pos <= 0 or total_neg <= 0:
        return float("nan")
    order = np.argsort(predictions, kind="mergesort")
    predictions, positive, weights = predictions[order], positive[order], weights[order]
    # Group tied predictions: each positive beats the negatives below its group and half of its own group's.
    _, starts = np.unique(predictions, return_index=True)
    ends = np.append(starts[1:], len(predictions))
    neg_below, area = 0.0, 0.0
    for start, end in zip(starts, ends):
        w, pos = weights[start:end], positive[start:end]
        group_pos, group_neg = w[pos].sum(), w[~pos].sum()
        area += group_pos * (neg_below + 0.5 * group_neg)
        neg_below += group_neg
    return float(area / (total_pos * total_neg))


def weighted_group_auc(rows_by_group: Mapping) -> float:
    """GAUC from each group's (labels, predictions, weights) arrays: the groups' AUCs averaged with each
    group weighted by its summed weight; groups with one class only are left out (NaN when none is left).
    Groups are read in sorted order, so the result does not depend on the mapping's order."""
    total, weighted = 0.0, 0.0
    for group in sorted(rows_by_group):
        labels, predictions, weights = rows_by_group[group]
        labels, predictions, weights = (
            np.asarray(column, dtype=np.float64) for column in (labels, predictions, weights)
        )
        auc = weighted_auc(labels, predictions, weights)
        if not np.isnan(auc):
            total += weights.sum()
            weighted += weights.sum() * auc
    return weighted / total if total else float("nan")


def group_auc(
    groups: np.ndarray, labels: np.ndarray, predictions: np.ndarray, weights: Optional[np.ndarray] = None
) -> float:
    """GAUC of rows given as arrays (the `GAUC` metric's computation outside TFMA); rows of weight 0 are
    left out, as TFMA leaves them out.

    Args:
        groups: [N] the group (shopper) of each row.
        labels: [N] 0/1 labels.
        predictions: [N] scores.
        weights: [N] example weights (default 1).

    Example:
    >>> import numpy as np
    >>> float(group_auc(np.array(["a", "a", "b", "b"]), np.array([0, 1, 1, 0]), np.array([.1, .9, .2, .8])))
    0.5
    """
    weights = np.ones(len(labels)) if weights is None else np.asarray(weights, dtype=np.float64)
    keep = weights > 0
    groups, labels, predictions, weights = (np.asarray(a)[keep] for a in (groups, labels, predictions, weights))
    order = np.argsort(groups, kind="stable")
    groups, labels, predictions, weights = (a[order] for a in (groups, labels, predictions, weights))
    _, starts = np.unique(groups, return_index=True)
    bounds = zip(starts, np.append(starts[1:], len(groups)))
    return weighted_group_auc({i: (labels[a:b], predictions[a:b], weights[a:b]) for i, (a, b) in enumerate(bounds)})


def prior_log_loss_metrics(
    labels: np.ndarray, predictions: np.ndarray, rates: np.ndarray, weights: Optional[np.ndarray] = None
) -> Dict[str, float]:
    """Log loss, normalized entropy and log loss relative to the prior (module docstring) of rows given as
    arrays, computed as the TFMA metrics compute them.

    Args:
        labels: [N] 0/1 labels.
        predictions: [N] predicted probabilities (clipped to [eps, 1 - eps]).
        rates: [N] the training conversion rate on each row (or a scalar).
        weights: [N] example weights (default 1).

    Returns:
        {"log_loss", "normalized_entropy", "log_loss_vs_prior"}.
    """
    labels = np.asarray(labels, dtype=np.float64)
    weights = np.ones(len(labels)) if weights is None else np.asarray(weights, dtype=np.float64)
    rates = np.broadcast_to(np.asarray(rates, dtype=np.float64), labels.shape)

    def cross_entropy(p):
        p = np.clip(p, _EPSILON, 1.0 - _EPSILON)
        return -(labels * np.log(p) + (1.0 - labels) * np.log(1.0 - p))

    loss = float((weights * cross_entropy(np.asarray(predictions, dtype=np.float64))).sum())
    prior_loss = float((weights * cross_entropy(rates)).sum())
    weight, rate = float(weights.sum()), float((weights * rates).sum())
    return {
        LOG_LOSS_NAME: _prior_ratio(LOG_LOSS_NAME, loss, weight, rate, prior_loss),
        NORMALIZED_ENTROPY_NAME: _prior_ratio(NORMALIZED_ENTROPY_NAME, loss, weight, rate, prior_loss),
        LOG_LOSS_VS_PRIOR_NAME: _prior_ratio(LOG_LOSS_VS_PRIOR_NAME, loss, weight, rate, prior_loss),
    }


def _prior_ratio(name: str, loss: float, weight: float, rate: float, prior_loss: float) -> float:
    """From summed weighted log loss, weight, weighted rate and weighted log loss of the rate."""
    if weight <= 0:
        return float("nan")
    if name == LOG_LOSS_NAME:
        return loss / weight
    if name == LOG_LOSS_VS_PRIOR_NAME:
        return loss / prior_loss
    return (loss / weight) / binary_entropy(rate / weight)


class GAUC(tfma.metrics.Metric):
    """Group AUC: per-group (shopper) AUC averaged with weights equal to each group's (weighted) events.

    Args:
        name: metric name.
        group_key: the feature that defines a group (default: the shopper id).
    """

    def __init__(self, name: str = GAUC_NAME, group_key: str = F.SHOPPER_ID):
        super().__init__(metric_util.merge_per_key_computations(_gauc), name=name, group_key=group_key)


metric_types.register_metric(GAUC)


def _gauc(
    name: str = GAUC_NAME,
    group_key: str = F.SHOPPER_ID,
    eval_config=None,
    model_name: str = "",
    output_name: str = "",
    sub_key=None,
    example_weighted: bool = False,
):
    return _reading_feature(
        _GAUCCombiner, group_key, name, eval_config, model_name, output_name, sub_key, example_weighted
    )


def _reading_feature(
    combiner_class, feature_key: str, name, eval_config, model_name, output_name, sub_key, example_weighted
) -> list:
    """The one computation of a metric whose combiner (`combiner_class(key, eval_config, feature_key,
    example_weighted)`) also reads the example feature `feature_key`."""
    key = metric_types.MetricKey(
        name=name, model_name=model_name, output_name=output_name, sub_key=sub_key, example_weighted=example_weighted
    )
    return [
        metric_types.MetricComputation(
            keys=[key],
            preprocessors=[metric_types.FeaturePreprocessor(feature_keys=[feature_key])],
            combiner=combiner_class(key, eval_config, feature_key, example_weighted),
        )
    ]


class _GAUCCombiner(beam.CombineFn):
    """Accumulates (label, prediction, weight) lists per group; exact per-group AUCs at the end."""

    def __init__(self, key, eval_config, group_key: str, example_weighted: bool):
        self._key, self._eval_config = key, eval_config
        self._group_key, self._example_weighted = group_key, example_weighted

    def create_accumulator(self) -> Dict[bytes, list]:
        return defaultdict(list)

    def add_input(self, accumulator, element: metric_types.StandardMetricInputs):
        groups = util.get_by_keys(element.features, [self._group_key]).flatten()
        values = metric_util.to_label_prediction_example_weight(
            element,
            eval_config=self._eval_config,
            model_name=self._key.model_name,
            output_name=self._key.output_name,
            example_weighted=self._example_weighted,
            flatten=True,
        )
        for group, (label, prediction, weight) in zip(groups, values):
            weight = float(weight)
            if weight > 0:
                accumulator[group].append((float(label), float(prediction), weight))
        return accumulator

    def merge_accumulators(self, accumulators: Iterable[Dict[bytes, list]]):
        merged = defaultdict(list)
        for accumulator in accumulators:
            for group, rows in accumulator.items():
                merged[group].extend(rows)
        return merged

    def extract_output(self, accumulator) -> Dict[metric_types.MetricKey, Optional[float]]:
        # Each group's rows sorted: tied predictions sum their weights in one order, however they arrived.
        rows_by_group = {group: tuple(zip(*sorted(rows))) for group, rows in accumulator.items()}
        return {self._key: weighted_group_auc(rows_by_group)}


def _cross_entropy(label: float, prediction: float) -> float:
    p = min(max(float(prediction), _EPSILON), 1.0 - _EPSILON)
    return float(-(label * np.log(p) + (1.0 - label) * np.log(1.0 - p)))


class NormalizedEntropy(tfma.metrics.Metric):
    """Weighted log loss over the entropy of the training conversion rate (module docstring).

    Args:
        name: metric name.
        rate_key: the feature that holds the training split's conversion rate on every row.
    """

    def __init__(self, name: str = NORMALIZED_ENTROPY_NAME, rate_key: str = F.TRAIN_CONVERSION_RATE):
        super().__init__(metric_util.merge_per_key_computations(_prior_metric), name=name, rate_key=rate_key)


class LogLossVsPrior(tfma.metrics.Metric):
    """Weighted log loss over that of predicting the training conversion rate on the same rows (module
    docstring).

    Args:
        name: metric name.
        rate_key: the feature that holds the training split's conversion rate on every row.
    """

    def __init__(self, name: str = LOG_LOSS_VS_PRIOR_NAME, rate_key: str = F.TRAIN_CONVERSION_RATE):
        super().__init__(metric_util.merge_per_key_computations(_prior_metric), name=name, rate_key=rate_key)


class LogLoss(tfma.metrics.Metric):
    """Weighted log loss (binary cross-entropy, predictions clipped as Keras clips them), in float64 and
    independent of the order rows arrive in, unlike TFMA's Keras `BinaryCrossentropy` (float32 batches).

    Args:
        name: metric name.
        rate_key: the feature that holds the training split's conversion rate (read with the others).
    """

    def __init__(self, name: str = LOG_LOSS_NAME, rate_key: str = F.TRAIN_CONVERSION_RATE):
        super().__init__(metric_util.merge_per_key_computations(_prior_metric), name=name, rate_key=rate_key)


metric_types.register_metric(NormalizedEntropy)
metric_types.register_metric(LogLossVsPrior)
metric_types.register_metric(LogLoss)


def _prior_metric(
    name: str = NORMALIZED_ENTROPY_NAME,
    rate_key: str = F.TRAIN_CONVERSION_RATE,
    eval_config=None,
    model_name: str = "",
    output_name: str = "",
    sub_key=None,
    example_weighted: bool = False,
):
    return _reading_feature(
        _PriorCombiner, rate_key, name, eval_config, model_name, output_name, sub_key, example_weighted
    )


class _PriorCombiner(beam.CombineFn):
    """Accumulates exact sums of [weighted log loss, weight, weighted rate, weighted log loss of the rate];
    extracts the metric its key names: the log loss, normalized entropy, or the log loss relative to the
    prior's."""

    def __init__(self, key, eval_config, rate_key: str, example_weighted: bool):
        self._key, self._eval_config = key, eval_config
        self._rate_key, self._example_weighted = rate_key, example_weighted

    def create_accumulator(self):
        return [[], [], [], []]

    def add_input(self, accumulator, element: metric_types.StandardMetricInputs):
        rates = util.get_by_keys(element.features, [self._rate_key]).flatten()
        values = metric_util.to_label_prediction_example_weight(
            element,
            eval_config=self._eval_config,
            model_name=self._key.model_name,
            output_name=self._key.output_name,
            example_weighted=self._example_weighted,
            flatten=True,
        )
        for rate, (label, prediction, weight) in zip(rates, values):
            weight = float(weight)
            if weight > 0:
                terms = (
                    weight * _cross_entropy(float(label), prediction),
                    weight,
                    weight * float(rate),
                    weight * _cross_entropy(float(label), rate),
                )
                for partials, term in zip(accumulator, terms):
                    add_exactly(partials, term)
        return accumulator

    def merge_accumulators(self, accumulators):
        accumulators = iter(accumulators)
        merged = next(accumulators)
        for accumulator in accumulators:
            for partials, other in zip(merged, accumulator):
                for term in other:
                    add_exactly(partials, term)
        return merged

    def extract_output(self, accumulator) -> Dict[metric_types.MetricKey, Optional[float]]:
        loss, weight, rate, prior_loss = (math.fsum(partials) for partials in accumulator)
        return {self._key: _prior_ratio(self._key.name, loss, weight, rate, prior_loss)}
