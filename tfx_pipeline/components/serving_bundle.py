"""`ServingBundle`: after a push, everything TensorFlow Serving needs beside it.

For a pushed version: warmup requests from real eval rows in the version's
`assets.extra/tf_serving_warmup_requests` (for every signature, the id-based `rank` among them), and
`models.config`, batching parameters, the container command and the Kubernetes manifests in the serving
base (camenn.serving.bundle). The listings themselves travel inside the version (its listing table).
Nothing happens when the Pusher pushed nothing (an unblessed model).
"""
import logging
import os

import tensorflow as tf
from tfx import v1 as tfx
from tfx.types import artifact_utils

logger = logging.getLogger(__name__)

WARMUP_ROWS = 100


def _first_records(pattern: str, limit: int):
    files = sorted(tf.io.gfile.glob(pattern))
    dataset = tf.data.TFRecordDataset(files, compression_type="GZIP").take(limit)
    return [record.numpy() for record in dataset]


@tfx.dsl.components.component
def ServingBundle(
    pushed_model: tfx.dsl.components.InputArtifact[tfx.types.standard_artifacts.PushedModel],
    examples: tfx.dsl.components.InputArtifact[tfx.types.standard_artifacts.Examples],
    serving_base: tfx.dsl.components.Parameter[str],
    model_name: tfx.dsl.components.Parameter[str],
    code_version: tfx.dsl.components.Parameter[str] = "",
) -> None:
    """Writes the serving bundle for the version the Pusher just pushed (module docstring)."""
    del code_version  # part of the cache key only (code_version.py)
    from camenn.serving import bundle

    if not pushed_model.get_int_custom_property("pushed"):
        logger.info("the model was not pushed (not blessed): no serving bundle to write")
        return
    version = int(pushed_model.get_string_custom_property("pushed_version"))
    warmup = _first_records(os.path.join(artifact_utils.get_split_uri([examples], "eval"), "*"), WARMUP_ROWS)
    written = bundle.write_serving_bundle(serving_base, model_name, warmup_examples=warmup, version=version)
    logger.info("serving bundle for version %d: %s", version, written.models_config)
