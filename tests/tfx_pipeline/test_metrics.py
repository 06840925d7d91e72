"""CameNN's TFMA metrics give the same bits whatever order Beam feeds and merges them in."""

import math

import numpy as np
import pytest
from tensorflow_model_analysis.metrics import metric_types

from camenn.model import features as F
from camenn.tfx_pipeline import metrics


def _combiner(name):
    key = metric_types.MetricKey(name=name, example_weighted=True)
    if name == metrics.GAUC_NAME:
        return metrics._GAUCCombiner(key, None, F.SHOPPER_ID, True)
    return metrics._PriorCombiner(key, None, F.TRAIN_CONVERSION_RATE, True)


def _rows(n=600, seed=0):
    rng = np.random.default_rng(seed)
    shoppers = rng.integers(0, 15, n).astype(str).astype("S")
    labels = (rng.random(n) < 0.3).astype(float)
    predictions = rng.random(n).astype(np.float32).astype(float)
    predictions[:40] = 0.5  # ties across labels and groups
    weights = rng.random(n) * 3  # weights with many bits make the order of float additions show
    rates = np.full(n, 0.27)
    return shoppers, labels, predictions, weights, rates


def _metric(name, order, chunks, merge_order, rows):
    """The metric over the rows in `order`, added to `chunks` accumulators merged in `merge_order`."""
    shoppers, labels, predictions, weights, rates = rows
    combiner = _combiner(name)
    accumulators = []
    for part in np.array_split(order, chunks):
        accumulator = combiner.create_accumulator()
        for i in part:
            element = metric_types.StandardMetricInputs(
                labels=np.array([labels[i]]),
                predictions=np.array([predictions[i]]),
                example_weights=np.array([weights[i]]),
                features={F.SHOPPER_ID: np.array([shoppers[i]]), F.TRAIN_CONVERSION_RATE: np.array([rates[i]])},
            )
            accumulator = combiner.add_input(accumulator, element)
        accumulators.append(accumulator)
    merged = combiner.merge_accumulators([accumulators[i] for i in merge_order])
    return list(combiner.extract_output(merged).values())[0]


@pytest.mark.parametrize(
    "name",
    [metrics.GAUC_NAME, metrics.LOG_LOSS_NAME, metrics.NORMALIZED_ENTROPY_NAME, metrics.LOG_LOSS_VS_PRIOR_NAME],
)
def test_the_metrics_do_not_depend_on_the_order_rows_arrive_and_merge_in(name):
    rows = _rows()
    n = len(rows[0])
    rng = np.random.default_rng(1)
    reference = _metric(name, np.arange(n), 1, [0], rows)
    assert math.isfinite(reference)
    for chunks in (2, 7, 31):
        order = rng.permutation(n)
        assert _metric(name, order, chunks, rng.permutation(chunks), rows) == reference  # bit for bit


def test_log_loss_is_the_weighted_mean_cross_entropy():
    shoppers, labels, predictions, weights, rates = rows = _rows(n=50, seed=2)
    p = np.clip(predictions, 1e-7, 1 - 1e-7)
    expected = -np.sum(weights * (labels * np.log(p) + (1 - labels) * np.log(1 - p))) / weights.sum()
    assert _metric(metrics.LOG_LOSS_NAME, np.arange(50), 3, [2, 0, 1], rows) == pytest.approx(expected, rel=1e-12)


def test_add_exactly_reads_the_correctly_rounded_sum_in_any_order():
    values = [1e16, 1.0, -1e16, 3.14159, 1e-9, -2.5] * 5
    partials = []
    for v in values:
        metrics.add_exactly(partials, v)
    backwards = []
    for v in reversed(values):
        metrics.add_exactly(backwards, v)
    assert math.fsum(partials) == math.fsum(backwards) == math.fsum(values)


def test_array_metrics_equal_the_tfma_combiners():
    """The experiments score models with `group_auc` and `prior_log_loss_metrics`: the same numbers the
    Evaluator's TFMA combiners give for the same rows (weight 0 rows left out)."""
    rng = np.random.default_rng(0)
    n = 300
    shoppers = rng.integers(0, 12, n).astype(str).astype("S")
    labels, predictions = (rng.random(n) < 0.3).astype(float), rng.random(n)
    weights = np.where(rng.random(n) < 0.2, 0.0, 1.0)
    rates = np.full(n, 0.27)
    rows = shoppers, labels, predictions, weights, rates
    gauc = _metric(metrics.GAUC_NAME, np.arange(n), 1, [0], rows)
    assert metrics.group_auc(shoppers, labels, predictions, weights) == pytest.approx(gauc, abs=1e-12)
    ours = metrics.prior_log_loss_metrics(labels[weights > 0], predictions[weights > 0], rates[weights > 0])
    for name in (metrics.LOG_LOSS_NAME, metrics.NORMALIZED_ENTROPY_NAME, metrics.LOG_LOSS_VS_PRIOR_NAME):
        assert ours[name] == pytest.approx(_metric(name, np.arange(n), 1, [0], rows), rel=1e-9)
