"""`ServingBundle`: after a push, everything TensorFlow Serving and the ranking client need beside it.

For a pushed version: warmup requests from real eval rows in the version's
`assets.extra/tf_serving_warmup_requests`, and `models.config`, batching parameters, the container command
and the Kubernetes manifests in the serving base (camenn.serving.bundle); the listings' cached features
(what `camenn rank` and `camenn audit` attach to requests, made by the same preprocessing as the model's
training data) are copied to `<serving base>/item_features/`. Nothing happens when the Pusher pushed
nothing (an unblessed model).
"""
import logging
import os

import tensorflow as tf
from tfx import v1 as tfx
from tfx.types import artifact_utils

from camenn.tfx_pipeline.components.artifacts import ItemFeatures

logger = logging.getLogger(__name__)

ITEM_FEATURES_DIR = "item_features"
WARMUP_ROWS = 100


def _first_records(pattern: str, limit: int):
    files = sorted(tf.io.gfile.glob(pattern))
    dataset = tf.data.TFRecordDataset(files, compression_type="GZIP").take(limit)
    return [record.numpy() for record in dataset]


@tfx.dsl.components.component
def ServingBundle(
    pushed_model: tfx.dsl.components.InputArtifact[tfx.types.standard_artifacts.PushedModel],
    items: tfx.dsl.components.InputArtifact[ItemFeatures],
    examples: tfx.dsl.components.InputArtifact[tfx.types.standard_artifacts.Examples],
    serving_base: tfx.dsl.components.Parameter[str],
    model_name: tfx.dsl.components.Parameter[str],
) -> None:
    """Writes the serving bundle for the version the Pusher just pushed (module docstring)."""
    from camenn.serving import bundle

    if not pushed_model.get_int_custom_property("pushed"):
        logger.info("the model was not pushed (not blessed): no serving bundle to write")
        return
    version = int(pushed_model.get_string_custom_property("pushed_version"))
    warmup = _first_records(os.path.join(artifact_utils.get_split_uri([examples], "eval"), "*"), WARMUP_ROWS)
    written = bundle.write_serving_bundle(serving_base, model_name, warmup_examples=warmup, version=version)
    destination = os.path.join(serving_base, ITEM_FEATURES_DIR)
    staging = destination + ".new"
    if tf.io.gfile.exists(staging):
        tf.io.gfile.rmtree(staging)
    tf.io.gfile.makedirs(staging)
    for name in tf.io.gfile.listdir(items.uri):
        tf.io.gfile.copy(os.path.join(items.uri, name), os.path.join(staging, name))
    if tf.io.gfile.exists(destination):
        tf.io.gfile.rmtree(destination)
    tf.io.gfile.rename(staging, destination)
    logger.info("serving bundle for version %d: %s; item features in %s", version, written.models_config,
                destination)
