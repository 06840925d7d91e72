"""Fast checks of the pipeline's own pieces, without running the pipeline: the GAUC and normalized-entropy
metrics, the contract schema against TFDV statistics, the ITA/TIA evaluation pairs, and the configuration."""

import numpy as np
import pytest
import tensorflow as tf

from camenn.model import features as F
from camenn.tfx_pipeline import configs


def test_weighted_auc_matches_sklearn_with_ties_and_weights():
    from sklearn.metrics import roc_auc_score

    from camenn.tfx_pipeline.metrics import weighted_auc

    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 500).astype(float)
    predictions = np.round(rng.random(500) * 0.5 + 0.3 * labels, 1)  # many ties
    weights = rng.random(500) * 3
    assert weighted_auc(labels, predictions, weights) == pytest.approx(
        roc_auc_score(labels, predictions, sample_weight=weights), abs=1e-12
    )
    assert np.isnan(weighted_auc(np.ones(3), np.arange(3.0), np.ones(3)))


def test_gauc_weighs_each_shoppers_auc_by_their_events_and_skips_one_class_shoppers():
    from tensorflow_model_analysis.metrics import metric_types

    from camenn.tfx_pipeline.metrics import _GAUCCombiner

    key = metric_types.MetricKey(name="gauc", example_weighted=True)
    combiner = _GAUCCombiner(key, None, F.SHOPPER_ID, example_weighted=True)
    rows = [  # shopper, label, prediction, weight
        (b"s1", 1, 0.9, 1),
        (b"s1", 0, 0.1, 1),
        (b"s1", 1, 0.8, 1),
        (b"s1", 0, 0.2, 1),  # AUC 1, 4 events
        (b"s2", 1, 0.1, 1),
        (b"s2", 0, 0.9, 1),  # AUC 0, 2 events
        (b"s3", 1, 0.5, 1),
        (b"s3", 1, 0.4, 1),  # only positives: no AUC
        (b"s2", 1, 0.99, 0),  # weight 0 (e.g. an ITA negative row): not an event of s2
    ]
    halves = []
    for part in (rows[:5], rows[5:]):
        accumulator = combiner.create_accumulator()
        for shopper, label, prediction, weight in part:
            element = metric_types.StandardMetricInputs(
                labels=np.array([float(label)]),
                predictions=np.array([prediction]),
                example_weights=np.array([float(weight)]),
                features={F.SHOPPER_ID: np.array([shopper])},
            )
            accumulator = combiner.add_input(accumulator, element)
        halves.append(accumulator)
    result = combiner.extract_output(combiner.merge_accumulators(halves))
    assert result[key] == pytest.approx((4 * 1.0 + 2 * 0.0) / 6)


def _example(**overrides):
    values = {
        F.ITEM_ID: b"i1",
        F.MERCHANT_ID: b"m1",
        F.CATEGORY: b"Pink-Lady",
        F.COARSE_CATEGORY: b"Apple",
        F.MERCHANT_SIZE: b"small",
        F.REQUEST_ID: b"r1",
        F.SHOPPER_ID: b"s1",
        F.PRICE: 12.5,
        F.DISTANCE_KM: 1.5,
        F.TIMESTAMP: 1709510400,
        F.HOUR: 8,
        F.LABEL: 1,
        F.TEXT_TOKEN_IDS: [101, 2000, 102, 0],
        F.TEXT_EMBEDDINGS: [0.25] * 4,
        F.PATCH_EMBEDDINGS: [0.5] * 6,
    }
    values.update(overrides)
    example = tf.train.Example()
    for name, value in values.items():
        value = value if isinstance(value, list) else [value]
        feature = example.features.feature[name]
        if isinstance(value[0], bytes):
            feature.bytes_list.value[:] = value
        elif isinstance(value[0], float):
            feature.float_list.value[:] = value
        else:
            feature.int64_list.value[:] = value
    return example


def _anomalies(examples):
    import tensorflow_data_validation as tfdv
    from tensorflow_data_validation.statistics import stats_impl
    from tfx_bsl.coders import example_coder

    from camenn.tfx_pipeline.components.contract_schema import build_schema

    batch = example_coder.ExamplesToRecordBatchDecoder().DecodeBatch([e.SerializeToString() for e in examples])
    statistics = stats_impl.generate_statistics_in_memory(batch, tfdv.StatsOptions())
    anomalies = tfdv.validate_statistics(
        statistics, build_schema(max_text_length=4, text_floats=4, num_patches=2, patch_dim=3)
    )
    return set(anomalies.anomaly_info)


def test_contract_schema_accepts_good_examples_and_names_each_broken_feature():
    assert _anomalies([_example(), _example(**{F.ITEM_ID: b"i2", F.LABEL: 0})]) == set()
    assert _anomalies([_example(**{F.PRICE: b"12,50 kr"})]) == {F.PRICE}  # float column became a string
    assert _anomalies([_example(**{F.PATCH_EMBEDDINGS: [0.5] * 5})]) == {F.PATCH_EMBEDDINGS}
    assert _anomalies([_example(**{F.TEXT_EMBEDDINGS: [0.5] * 3})]) == {F.TEXT_EMBEDDINGS}
    assert _anomalies([_example(**{F.HOUR: 24})]) == {F.HOUR}


def _pairs(events, items, pool=(), quality=None):
    from camenn.tfx_pipeline.components.alignment_eval import _MakePairs

    rows = _MakePairs().process(
        (b"Apple", {"events": events, "items": items}), pool=list(pool), quality=quality or {}, train_rate=0.25
    )
    return [tf.train.Example.FromString(row) for row in rows]


def _value(example, name):
    feature = example.features.feature[name]
    return list(getattr(feature, feature.WhichOneof("kind")).value)


def test_evaluation_pairs_swap_one_modality_for_hard_and_other_coarse_negatives_and_weight_each_task():
    item = dict(zip((F.ITEM_ID, F.CATEGORY), (b"i1", b"Pink-Lady")))
    same_product = _example(**{F.ITEM_ID: b"i2", F.CATEGORY: b"Pink-Lady", F.TEXT_TOKEN_IDS: [101, 7, 102, 0]})
    other = _example(
        **{
            F.ITEM_ID: b"i3",
            F.CATEGORY: b"Granny-Smith",
            F.TEXT_TOKEN_IDS: [101, 9, 102, 0],
            F.TEXT_EMBEDDINGS: [0.75] * 4,
            F.PATCH_EMBEDDINGS: [-1.0] * 6,
        }
    )
    onion = _example(
        **{
            F.ITEM_ID: b"i4",
            F.CATEGORY: b"Yellow-Onion",
            F.COARSE_CATEGORY: b"Onion",
            F.TEXT_TOKEN_IDS: [101, 5, 102, 0],
            F.TEXT_EMBEDDINGS: [-0.5] * 4,
            F.PATCH_EMBEDDINGS: [2.0] * 6,
        }
    )
    event = _example(**item)
    rows = _pairs(
        [event], [_example(**item), same_product, other], pool=[onion, other], quality={b"i1": b"inaccurate_text"}
    )
    assert len(rows) == 5
    true_pair, ita_hard, tia_hard, ita_other, tia_other = rows
    for row in rows:  # every row carries the training split's conversion rate, for normalized entropy
        assert _value(row, F.TRAIN_CONVERSION_RATE) == [0.25]
    assert _value(true_pair, F.TEXT_TOKEN_IDS) == _value(event, F.TEXT_TOKEN_IDS)
    assert _value(true_pair, F.NEGATIVE_KIND) == [b"hard", b"other_coarse"]  # judged against both kinds
    # Hard: Granny-Smith's text and photo, never Pink-Lady's; both forms of the text travel together.
    assert _value(ita_hard, F.TEXT_TOKEN_IDS) == [101, 9, 102, 0] and _value(ita_hard, F.TEXT_EMBEDDINGS) == [0.75] * 4
    assert _value(ita_hard, F.PATCH_EMBEDDINGS) == _value(event, F.PATCH_EMBEDDINGS)
    assert _value(tia_hard, F.PATCH_EMBEDDINGS) == [-1.0] * 6
    assert _value(tia_hard, F.TEXT_TOKEN_IDS) == _value(event, F.TEXT_TOKEN_IDS)
    assert {_value(r, F.NEGATIVE_KIND)[0] for r in (ita_hard, tia_hard)} == {b"hard"}
    # Other coarse category: the onion (the pool's other listing is an apple).
    assert _value(ita_other, F.TEXT_EMBEDDINGS) == [-0.5] * 4 and _value(tia_other, F.PATCH_EMBEDDINGS) == [2.0] * 6
    assert {_value(r, F.NEGATIVE_KIND)[0] for r in (ita_other, tia_other)} == {b"other_coarse"}
    labels = [(_value(r, F.EVAL_LABELS[F.ITA])[0], _value(r, F.EVAL_LABELS[F.TIA])[0]) for r in rows]
    assert labels == [(1, 1), (0, 1), (1, 0), (0, 1), (1, 0)]
    weights = [[_value(r, F.EVAL_WEIGHTS[t])[0] for t in F.TASKS] for r in rows]
    assert weights == [[1.0, 1.0, 1.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]
    assert {_value(r, F.LISTING_QUALITY)[0] for r in rows} == {b"inaccurate_text"}
    assert _pairs([event], [other, same_product], [onion]) == _pairs([event], [same_product, other], [onion])


def test_without_a_partner_of_a_kind_its_negatives_are_left_out():
    event = _example(**{F.ITEM_ID: b"i1"})
    rows = _pairs([event], [_example(**{F.ITEM_ID: b"i1"})])  # alone in its coarse category, no pool
    assert len(rows) == 1 and _value(rows[0], F.EVAL_LABELS[F.ITA]) == [1]


def _normalized_entropy(rows, rate_key=F.TRAIN_CONVERSION_RATE, name="normalized_entropy"):
    """NE (or another prior metric) through the metric's own combiner, over (rate, label, prediction,
    weight) rows in two halves."""
    from tensorflow_model_analysis.metrics import metric_types

    from camenn.tfx_pipeline.metrics import _PriorCombiner

    key = metric_types.MetricKey(name=name, example_weighted=True)
    combiner = _PriorCombiner(key, None, rate_key, example_weighted=True)
    halves = []
    for part in (rows[: len(rows) // 2], rows[len(rows) // 2 :]):
        accumulator = combiner.create_accumulator()
        for rate, label, prediction, weight in part:
            element = metric_types.StandardMetricInputs(
                labels=np.array([float(label)]),
                predictions=np.array([prediction]),
                example_weights=np.array([float(weight)]),
                features={rate_key: np.array([rate])},
            )
            accumulator = combiner.add_input(accumulator, element)
        halves.append(accumulator)
    return combiner.extract_output(combiner.merge_accumulators(halves))[key]


def test_log_loss_vs_prior_refuses_a_useless_model_when_the_eval_rate_drifts_and_normalized_entropy_would_not():
    rng = np.random.default_rng(1)
    labels = (rng.random(20000) < 0.20).astype(float)  # the eval period converts at 20%, training at 25%
    rows = [(0.25, y, 0.25, 1.0) for y in labels]  # the training rate, for everyone: knows nothing
    assert _normalized_entropy(rows) < 0.95  # normalized entropy alone would call it informative
    assert _normalized_entropy(rows, name="log_loss_vs_prior") == pytest.approx(1.0)


@pytest.mark.parametrize("rate", [0.29, 0.05])
def test_normalized_entropy_is_one_for_the_prior_and_below_one_only_for_a_model_that_knows_more(rate):
    from camenn.tfx_pipeline.metrics import binary_entropy

    rng = np.random.default_rng(0)
    truth = rng.uniform(0.5 * rate, 1.5 * rate, 20000)  # each row's true probability; mean = rate
    labels = (rng.random(20000) < truth).astype(float)
    rows = lambda predictions: [(rate, y, p, 1.0) for y, p in zip(labels, predictions)]  # noqa: E731
    prior = _normalized_entropy(rows(np.full(20000, rate)))
    informed = _normalized_entropy(rows(truth))
    uninformed = _normalized_entropy(rows(np.full(20000, 0.5)))  # an untrained model's 0.5
    assert prior == pytest.approx(1.0, abs=0.02)
    assert informed < prior
    assert uninformed > 1.0
    # The raw log loss a useless model scores depends on the rate; the normalized one does not.
    assert binary_entropy(0.29) == pytest.approx(0.602, abs=1e-3) and binary_entropy(0.05) == pytest.approx(
        0.199, abs=1e-3
    )
    # Against the prior on the same rows: 1 for the prior itself, below 1 only for the informed model.
    vs_prior = lambda predictions: _normalized_entropy(rows(predictions), name="log_loss_vs_prior")  # noqa: E731
    assert vs_prior(np.full(20000, rate)) == pytest.approx(1.0) and vs_prior(truth) < 1 < vs_prior(np.full(20000, 0.5))
    # A row of weight 0 (an ITA/TIA negative, for CVR) does not count.
    assert _normalized_entropy([(rate, 1, 0.9, 0.0), *rows(truth)[:10]]) == pytest.approx(
        _normalized_entropy(rows(truth)[:10]), rel=1e-12
    )


def test_config_overrides_convert_types_and_reject_unknown_keys():
    config = configs.from_profile("tiny")
    changed = configs.parse_override(configs.parse_override(config, "epochs=7"), "enable_cache=false")
    changed = configs.parse_override(changed, "grid=3,3")
    assert (changed.epochs, changed.enable_cache, changed.grid) == (7, False, (3, 3))
    assert configs.PipelineConfig.from_json(changed.to_json()) == changed
    with pytest.raises(ValueError, match="KEY=VALUE"):
        configs.parse_override(config, "no_such_knob=1")
    with pytest.raises(ValueError, match="unknown pipeline profile"):
        configs.from_profile("huge")
