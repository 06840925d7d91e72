"""`EvaluationTensorBoard`: the Evaluator's TFMA results as TensorBoard scalars, beside the Trainer's.

TFMA writes its metrics as protos that only its notebook widgets show; this step writes every metric of
every slice as a scalar, tag `<output>/<metric>` on the whole eval set and
`<output>/<metric>/<feature>=<value>` on a slice (e.g. `cvr/auc/merchant_size=small`), at the Trainer's
last step, so `tensorboard --logdir <pipeline root>` shows training curves and model analysis together.
"""

import json
import math
import os

import tensorflow as tf
from tfx import v1 as tfx

_HISTORY_FILE = "history.json"  # the Trainer's record in its model_run (trainer.run_fn)


def slice_name(slice_key) -> str:
    """A TFMA SliceKey proto as '' for the whole eval set, else 'feature=value' pairs joined by ','."""
    parts = []
    for key in slice_key.single_slice_keys:
        value = getattr(key, key.WhichOneof("kind"))
        parts.append(f"{key.column}={value.decode() if isinstance(value, bytes) else value}")
    return ",".join(parts)


def evaluation_scalars(evaluation_uri: str) -> dict:
    """tag -> value of every finite scalar metric of the candidate model, overall and per slice."""
    import tensorflow_model_analysis as tfma

    scalars = {}
    for slice_metrics in tfma.load_metrics(evaluation_uri):
        sliced = slice_name(slice_metrics.slice_key)
        for entry in slice_metrics.metric_keys_and_values:
            if entry.key.is_diff or not entry.value.HasField("double_value"):
                continue
            value = entry.value.double_value.value
            if not math.isfinite(value):
                continue
            tag = f"{entry.key.output_name}/{entry.key.name}" if entry.key.output_name else entry.key.name
            scalars[f"{tag}/{sliced}" if sliced else tag] = value
    return scalars


def write_scalars(logdir: str, scalars: dict, step: int) -> None:
    writer = tf.summary.create_file_writer(logdir)
    with writer.as_default():
        for tag, value in sorted(scalars.items()):
            tf.summary.scalar(tag, value, step=step)
    writer.close()


@tfx.dsl.components.component
def EvaluationTensorBoard(
    evaluation: tfx.dsl.components.InputArtifact[tfx.types.standard_artifacts.ModelEvaluation],
    model_run: tfx.dsl.components.InputArtifact[tfx.types.standard_artifacts.ModelRun],
    tensorboard: tfx.dsl.components.OutputArtifact[tfx.types.standard_artifacts.ModelRun],
    code_version: tfx.dsl.components.Parameter[str] = "",
) -> None:
    """Writes the TFMA scalars (module docstring) under `tensorboard`'s uri, in `evaluation/`."""
    del code_version  # part of the cache key only (code_version.py)
    step = 0
    history = os.path.join(model_run.uri, _HISTORY_FILE)
    if tf.io.gfile.exists(history):
        with tf.io.gfile.GFile(history) as f:
            step = int(json.load(f).get("final_step", 0))
    scalars = evaluation_scalars(evaluation.uri)
    write_scalars(os.path.join(tensorboard.uri, "evaluation"), scalars, step)
    tensorboard.set_int_custom_property("scalars", len(scalars))
