"""`ServingBundle`: after a push, everything TensorFlow Serving needs beside it.

It serves the ranker and the retrieval model together: `models.config` lists every model of the two with
a version in the serving base. For each pushed version: warmup requests from real eval rows in the version's
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
    retrieval_pushed_model: tfx.dsl.components.InputArtifact[tfx.types.standard_artifacts.PushedModel] = None,
    retrieval_model_name: tfx.dsl.components.Parameter[str] = "",
    code_version: tfx.dsl.components.Parameter[str] = "",
) -> None:
    """Writes the serving bundle for the versions the Pushers just pushed (module docstring)."""
    del code_version  # part of the cache key only (code_version.py)
    from camenn.serving import bundle, servables

    pushes = {
        name: int(pushed.get_string_custom_property("pushed_version"))
        for name, pushed in ((model_name, pushed_model), (retrieval_model_name, retrieval_pushed_model))
        if pushed is not None and name and pushed.get_int_custom_property("pushed")
    }
    if not pushes:
        logger.info("no model was pushed (none blessed): no serving bundle to write")
        return
    warmup = _first_records(os.path.join(artifact_utils.get_split_uri([examples], "eval"), "*"), WARMUP_ROWS)
    for name, version in pushes.items():
        if not os.path.exists(os.path.join(serving_base, name, str(version), servables.WARMUP_FILE)):
            bundle.write_warmup_requests(os.path.join(serving_base, name, str(version)), warmup, name)
    served = [
        name for name in (model_name, retrieval_model_name) if name and os.path.isdir(os.path.join(serving_base, name))
    ]
    written = bundle.write_serving_bundle(serving_base, served[0], more_models=served[1:])
    logger.info(
        "serving bundle for %s: %s", ", ".join(f"{n} version {v}" for n, v in pushes.items()), written.models_config
    )
