"""Recall@K of the RetrievalEvaluator step equals Recall@K counted by hand on a tiny set, for the model, the
popularity baseline and random; the blessing follows the bounds."""

import json
import os

import numpy as np
import pytest
import tensorflow as tf

from camenn.model import features as F
from camenn.model.retrieval_index import RetrievalIndex

# Four listings on the plane and two shoppers. By hand: shopper s1 [1, 0] ranks a (1), b (.6), c (0), d (-1);
# s2 [0, 1] ranks c (1), b (.8), then a and d tie at 0 (the index breaks ties by item id: a first).
LISTINGS = {b"a": [1.0, 0.0], b"b": [0.6, 0.8], b"c": [0.0, 1.0], b"d": [-1.0, 0.0]}
SHOPPERS = {b"s1": [1.0, 0.0], b"s2": [0.0, 1.0]}
TRAIN = [b"a", b"a", b"a", b"b", b"c", b"c"]  # popularity: a (3), c (2), b (1), d (0)
EVAL = [(b"s1", b"d"), (b"s2", b"b"), (b"s1", b"a"), (b"s9", b"c")]  # s9 is unknown: popularity a, c, b, d
# Model: s1 -> a b c d (d at 4), s2 -> c b a d (b at 2), s1 (a at 1), s9 -> a c b d (c at 2).
MODEL_RECALL = {1: 1 / 4, 2: 3 / 4, 3: 3 / 4}
# Popularity a c b d for everyone: d at 4, b at 3, a at 1, c at 2.
POPULARITY_RECALL = {1: 1 / 4, 2: 2 / 4, 3: 3 / 4}


class HandModel(tf.Module):
    """The retrieval contract (`serving_default`: shopper_id, hour -> item_id, score, known_shopper, ...)
    over fixed vectors."""

    def __init__(self):
        super().__init__()
        self.index = RetrievalIndex()
        counts = {item: TRAIN.count(item) for item in LISTINGS}
        self.index.assign(
            list(LISTINGS),
            np.array(list(LISTINGS.values())),
            {"popularity": np.array([counts[i] for i in LISTINGS], np.float32)},
        )
        self.shoppers = tf.lookup.StaticHashTable(
            tf.lookup.KeyValueTensorInitializer(tf.constant(list(SHOPPERS)), tf.range(len(SHOPPERS), dtype=tf.int64)),
            default_value=-1,
        )
        self.vectors = tf.Variable(np.array(list(SHOPPERS.values()), np.float32))

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string), tf.TensorSpec([None], tf.int64)])
    def retrieve(self, shopper_id, hour):
        rows = self.shoppers.lookup(shopper_id)
        known = rows >= 0
        queries = tf.gather(self.vectors, tf.maximum(rows, 0))
        scores, found = self.index.top_k(queries, known, 3)
        return {"score": scores, "known_shopper": known, **self.index.gather(found)}


def _examples(path, rows):
    path.mkdir(parents=True)
    with tf.io.TFRecordWriter(str(path / "data.tfrecord.gz"), tf.io.TFRecordOptions(compression_type="GZIP")) as w:
        for shopper, item in rows:
            feature = {
                F.SHOPPER_ID: tf.train.Feature(bytes_list=tf.train.BytesList(value=[shopper])),
                F.ITEM_ID: tf.train.Feature(bytes_list=tf.train.BytesList(value=[item])),
                F.HOUR: tf.train.Feature(int64_list=tf.train.Int64List(value=[12])),
            }
            w.write(tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString())


@pytest.fixture(scope="module")
def hand_model(tmp_path_factory):
    root = tmp_path_factory.mktemp("hand_retrieval")
    model = HandModel()
    tf.saved_model.save(
        model,
        str(root / "model" / "Format-Serving"),
        signatures={"serving_default": model.retrieve.get_concrete_function()},
    )
    _examples(root / "examples" / "Split-train", [(b"s1", item) for item in TRAIN])
    _examples(root / "examples" / "Split-eval", EVAL)
    return root


def _run_component(root, out, **parameters):
    from tfx.types import standard_artifacts

    from camenn.tfx_pipeline.components.retrieval import METRICS_FILE, RetrievalEvaluator

    model = standard_artifacts.Model()
    model.uri, model.id = str(root / "model"), 7
    examples = standard_artifacts.Examples()
    examples.uri, examples.split_names = str(root / "examples"), '["train", "eval"]'
    evaluation, blessing = standard_artifacts.ModelEvaluation(), standard_artifacts.ModelBlessing()
    for artifact, name in ((evaluation, "evaluation"), (blessing, "blessing")):
        artifact.uri = str(out / name)
        os.makedirs(artifact.uri)
    RetrievalEvaluator.EXECUTOR_SPEC.executor_class._FUNCTION(
        model=model, examples=examples, evaluation=evaluation, blessing=blessing, **parameters
    )
    with open(out / "evaluation" / METRICS_FILE) as f:
        return json.load(f), blessing


def test_recall_at_k_equals_the_hand_count(hand_model, tmp_path):
    record, blessing = _run_component(hand_model, tmp_path, recall_ks="1,2,3", bless_k=2, min_lift_over_popularity=1.0)
    metrics = record["metrics"]
    for k in (1, 2, 3):
        assert metrics[f"recall@{k}"] == pytest.approx(MODEL_RECALL[k]), k
        assert metrics[f"popularity_recall@{k}"] == pytest.approx(POPULARITY_RECALL[k]), k
        assert metrics[f"random_recall@{k}"] == pytest.approx(k / 4), k
    assert metrics["unknown_shopper_clicks"] == 1 and metrics["eval_clicks"] == 4 and metrics["listings"] == 4
    # At K=2 the model (3/4) beats popularity (2/4) and random (2/4): blessed, under the retrieval key only.
    assert record["blessed"] and blessing.get_int_custom_property("blessed") == 1
    assert blessing.get_int_custom_property("retrieval_model_id") == 7
    assert not blessing.has_custom_property("current_model_id")  # the ranker's resolver must never take it


def test_not_blessed_when_it_does_not_beat_popularity_enough(hand_model, tmp_path):
    # At K=1 the model equals popularity (1/4): a lift of 1.5 is refused, and so is random's level.
    record, blessing = _run_component(hand_model, tmp_path, recall_ks="1", bless_k=1, min_lift_over_popularity=1.5)
    assert not record["blessed"] and blessing.get_int_custom_property("blessed") == 0
    assert any("popularity" in failure for failure in record["failures"])
    assert any("random" in failure for failure in record["failures"])


def test_recall_at_k_and_judge_by_hand():
    from camenn.tfx_pipeline import retrieval_evaluation as ev

    retrieved = [[b"a", b"b"], [b"c", b"b"], [b"a", b"b"]]
    assert ev.recall_at_k(retrieved, [b"b", b"a", b"a"], (1, 2)) == {1: pytest.approx(1 / 3), 2: pytest.approx(2 / 3)}
    assert ev.popularity_ranking([b"c", b"b", b"c", b"b", b"a"], [b"a", b"b", b"c", b"d"]) == [b"b", b"c", b"a", b"d"]
    result = {"recall@2": 0.5, "popularity_recall@2": 0.4, "random_recall@2": 0.2}
    assert ev.judge(result, 2, 1.0) == []
    assert ev.judge(result, 2, 1.0, baseline={"recall@2": 0.6}) != []
    assert ev.judge(result, 2, 1.0, baseline={"recall@2": 0.6}, max_regression=0.1) == []
