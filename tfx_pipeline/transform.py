"""The Transform component's `preprocessing_fn`: raw tf.Examples to model inputs.

Ids get vocabularies computed over the training split, with OOV buckets so that a shopper, item or
merchant never seen in training still maps to an index; numbers are log-scaled and normalised with the
training split's mean and deviation; text and image encodings and token ids pass through (tokenising and
encoding happened in `camenn preprocess`, so the serving graph holds only core TF ops).
"""

import tensorflow as tf
import tensorflow_transform as tft

from camenn.model import features as F


def vocabulary_name(feature: str) -> str:
    """The vocabulary file Transform writes for an id feature (the Trainer reads its size)."""
    return f"{feature}_vocabulary"


def _squeeze(x):
    # Scalar raw features arrive as [B, 1] (FixedLenFeature([1])); the model takes [B].
    return tf.squeeze(x, axis=1)


def preprocessing_fn(inputs, custom_config):
    """Args: inputs: raw feature tensors by name; custom_config: `num_oov_buckets`,
    `vocabulary_min_frequency` (from configs.PipelineConfig)."""
    outputs = {}
    for name in F.ID_FEATURES:
        outputs[name] = tft.compute_and_apply_vocabulary(
            _squeeze(inputs[name]),
            num_oov_buckets=custom_config["num_oov_buckets"],
            frequency_threshold=custom_config["vocabulary_min_frequency"],
            vocab_filename=vocabulary_name(name),
        )
    for name, size in F.INTEGER_FEATURES.items():
        outputs[name] = tf.clip_by_value(_squeeze(inputs[name]), 0, size - 1)
    for name in F.NUMERIC_FEATURES:
        # Prices and distances are positive and heavy-tailed: normalise their logarithm. In float64, then
        # rounded to float32: in float32 the mean and variance (sums another runner adds in another order)
        # and the scaling itself (vectorised and scalar code round differently, so a value's batch position
        # mattered) moved results by an ulp; in float64 they round to the same float32, so every run and
        # runner writes the same transformed examples.
        log = tf.math.log1p(tf.maximum(tf.cast(_squeeze(inputs[name]), tf.float64), 0.0))
        outputs[name] = tf.cast(tft.scale_to_z_score(log), tf.float32)
    outputs[F.TEXT_TOKEN_IDS] = tf.identity(inputs[F.TEXT_TOKEN_IDS])
    outputs[F.TEXT_EMBEDDINGS] = tf.identity(inputs[F.TEXT_EMBEDDINGS])
    outputs[F.PATCH_EMBEDDINGS] = tf.identity(inputs[F.PATCH_EMBEDDINGS])
    outputs[F.LABEL] = _squeeze(inputs[F.LABEL])
    return outputs
