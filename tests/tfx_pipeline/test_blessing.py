"""The Evaluator's CVR gate (tfx_pipeline/evaluation.py) through TFMA itself, at two conversion rates: a
model is blessed only when its log loss beats predicting the training rate on the same rows and its
normalized entropy is below the bound, whatever the rate; a fixed log-loss bound could not say it."""

import numpy as np
import pytest
import tensorflow as tf

from camenn.model import features as F
from camenn.tfx_pipeline import configs, evaluation

PREDICTION = "prediction"  # the test model returns this feature as its CVR


class FeatureAsPrediction(tf.Module):
    """A SavedModel whose `cvr` is the example's own `prediction` feature: the test decides what it predicts."""

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="examples")])
    def serve(self, examples):
        parsed = tf.io.parse_example(examples, {PREDICTION: tf.io.FixedLenFeature([], tf.float32)})
        return {F.CVR: parsed[PREDICTION]}


def _rows(path, rate, predictions, labels):
    with tf.io.TFRecordWriter(str(path)) as writer:
        for k, (p, y) in enumerate(zip(predictions, labels)):
            feature = {
                PREDICTION: tf.train.Feature(float_list=tf.train.FloatList(value=[p])),
                F.LABEL: tf.train.Feature(int64_list=tf.train.Int64List(value=[int(y)])),
                F.EVAL_WEIGHTS[F.CVR]: tf.train.Feature(float_list=tf.train.FloatList(value=[1.0])),
                F.TRAIN_CONVERSION_RATE: tf.train.Feature(float_list=tf.train.FloatList(value=[rate])),
                F.SHOPPER_ID: tf.train.Feature(bytes_list=tf.train.BytesList(value=[f"s{k % 20}".encode()])),
            }
            writer.write(tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString())


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("feature_as_prediction")
    module = FeatureAsPrediction()
    tf.saved_model.save(module, str(path), signatures={"serving_default": module.serve.get_concrete_function()})
    return path


def _blessed(model_dir, tmp_path, rate, predictions, labels):
    import tensorflow_model_analysis as tfma

    config = configs.from_profile(
        "small", model_options='{"task_names": ["cvr"]}', bless_against_last=False, slice_features=()
    )
    eval_config = evaluation.eval_config(config)
    data = tmp_path / f"rows_{rate}_{len(list(tmp_path.iterdir()))}.tfrecord"
    _rows(data, rate, predictions, labels)
    output = tmp_path / f"{data.stem}_evaluation"
    tfma.run_model_analysis(
        eval_shared_model=tfma.default_eval_shared_model(str(model_dir), eval_config=eval_config),
        eval_config=eval_config,
        data_location=str(data),
        output_path=str(output),
    )
    return tfma.load_validation_result(str(output)).validation_ok


@pytest.mark.slow
@pytest.mark.parametrize("rate", [0.29, 0.05])
def test_the_gate_refuses_what_knows_no_more_than_the_prior_at_any_rate(model_dir, tmp_path, rate):
    rng = np.random.default_rng(0)
    truth = rng.uniform(0.2 * rate, 1.8 * rate, 4000)  # each row's true probability; the training rate is `rate`
    labels = rng.random(4000) < truth
    assert _blessed(model_dir, tmp_path, rate, truth, labels)  # knows each row's probability: blessed
    assert not _blessed(model_dir, tmp_path, rate, np.full(4000, rate), labels)  # the prior itself: refused
    # Predicting 0.25 for everyone: at 5% its log loss (~0.34) is under a fixed 0.6 bound, yet it is far
    # worse than the prior (normalized entropy ~1.7): refused at both rates.
    assert not _blessed(model_dir, tmp_path, rate, np.full(4000, 0.25), labels)
