"""The Trainer component's `run_fn`: trains the Keras 3 CameNN model on Transform's output and exports it
with the Transform graph in front, so the pushed SavedModel takes raw tf.Examples (contract 6).

- Data: Transform's materialised examples, read through the TFX data accessor; the model's tf.data step
  adds the in-batch ITA/TIA negatives.
- Devices: MirroredStrategy over the GPUs it finds (mixed precision there), the default strategy on CPU.
- Checkpoints: keras.callbacks.BackupAndRestore in a directory keyed by the Trainer's inputs, outside the
  execution's own output folder (a retried execution gets a new one), so a killed Trainer resumes from
  its last checkpoint when the pipeline runs again with the same inputs.
- TensorBoard: losses per task, AUCs, expert load and learning rate, in the `model_run` artifact.
"""
import hashlib
import json
import logging
import os
import time

import keras
import tensorflow as tf
import tensorflow_transform as tft
from tfx_bsl.public import tfxio

from camenn.model import features as F
from camenn.tfx_pipeline import transform

logger = logging.getLogger(__name__)

MODEL_INPUTS = (*F.ID_FEATURES, *F.INTEGER_FEATURES, *F.NUMERIC_FEATURES, F.TEXT_TOKEN_IDS, F.PATCH_EMBEDDINGS)


def distribution_strategy() -> tf.distribute.Strategy:
    gpus = tf.config.list_logical_devices("GPU")
    if gpus:
        logger.info("training on %d GPU(s) with MirroredStrategy", len(gpus))
        return tf.distribute.MirroredStrategy()
    logger.info("no GPU found: training on CPU")
    return tf.distribute.get_strategy()


def precision_policy(setting: str) -> str:
    if setting == "auto":
        return "mixed_float16" if tf.config.list_logical_devices("GPU") else "float32"
    return setting


def checkpoint_dir(fn_args) -> str:
    """A directory that depends only on what the Trainer trains (inputs and settings): a rerun of the
    same work finds the checkpoints of a killed one."""
    key = json.dumps({
        "train": sorted(fn_args.train_files), "eval": sorted(fn_args.eval_files),
        "transform": fn_args.transform_output,
        "config": {k: v for k, v in fn_args.custom_config.items() if k != "checkpoint_root"},
    }, sort_keys=True)
    return os.path.join(fn_args.custom_config["checkpoint_root"], hashlib.sha256(key.encode()).hexdigest()[:16])


def read_transformed(fn_args, tft_output, files, batch_size, shuffle, seed, num_epochs=1):
    """Batches of transformed features (dict of dense tensors); `num_epochs=None` repeats forever."""
    return fn_args.data_accessor.tf_dataset_factory(
        files,
        tfxio.TensorFlowDatasetOptions(batch_size=batch_size, shuffle=shuffle, shuffle_seed=seed,
                                       num_epochs=num_epochs),
        tft_output.transformed_metadata.schema,
    )


def count_examples(file_patterns) -> int:
    files = tf.data.Dataset.list_files(file_patterns, shuffle=False)
    return int(tf.data.TFRecordDataset(files, compression_type="GZIP").reduce(0, lambda n, _: n + 1))


def vocabulary_sizes(tft_output, num_oov_buckets):
    return {name: tft_output.vocabulary_size_by_name(transform.vocabulary_name(name)) + num_oov_buckets
            for name in F.ID_FEATURES}


class ProgressLogger(keras.callbacks.Callback):
    """One log line every `every` steps with examples per second; says where a resumed run starts."""

    def __init__(self, every, batch_size, total_steps):
        super().__init__()
        self.every, self.batch_size, self.total_steps = every, batch_size, total_steps
        self.initial_step = 0

    def on_train_begin(self, logs=None):
        self.initial_step = int(self.model.optimizer.iterations.numpy())
        if self.initial_step:
            logger.info("resuming from checkpoint at step %d", self.initial_step)
        self._start, self._start_step = time.perf_counter(), self.initial_step

    def on_train_batch_end(self, batch, logs=None):
        step = int(self.model.optimizer.iterations.numpy())
        if step % self.every == 0:
            rate = (step - self._start_step) * self.batch_size / max(time.perf_counter() - self._start, 1e-9)
            shown = ", ".join(f"{k}={float(v):.4f}" for k, v in sorted((logs or {}).items()) if k.endswith("loss"))
            logger.info("step %d/%d  %s  (%.0f examples/s)", step, self.total_steps, shown, rate)


def export_serving_model(model, tft_output, export_dir):
    """Writes the SavedModel of contract 6: Transform graph, then the model.

    Signatures: `serving_default` (serialized raw tf.Examples, input `examples`) and `dense` (raw
    feature tensors by name); both return float32 `cvr`, `ita`, `tia` of shape [B].
    The ExportArchive tracks the Transform layer for its tables and vocabulary assets; the model's
    variables are tracked through the endpoints that use them (tracking the model too would save them
    twice).
    """
    tft_layer = tft_output.transform_features_layer()
    raw_spec = tft_output.raw_feature_spec()
    serving_spec = {name: raw_spec[name] for name in MODEL_INPUTS}

    def predict(raw):
        transformed = tft_layer(raw)
        outputs = model({name: transformed[name] for name in MODEL_INPUTS}, training=False)
        return {task: tf.cast(outputs[task], tf.float32) for task in F.TASKS}

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="examples")])
    def serve_examples(examples):
        return predict(tf.io.parse_example(examples, serving_spec))

    dense_specs = [tf.TensorSpec([None] + ([] if spec.shape == [1] else list(spec.shape)), spec.dtype, name=name)
                   for name, spec in serving_spec.items()]

    @tf.function(input_signature=dense_specs)
    def serve_dense(*tensors):
        raw = {}
        for spec, tensor in zip(dense_specs, tensors):
            raw[spec.name] = tf.expand_dims(tensor, 1) if serving_spec[spec.name].shape == [1] else tensor
        return predict(raw)

    archive = keras.export.ExportArchive()
    archive.track(tft_layer)
    archive.add_endpoint("serving_default", serve_examples)
    archive.add_endpoint("dense", serve_dense)
    archive.write_out(export_dir, verbose=False)


def run_fn(fn_args):
    """TFX Trainer entry point (`custom_config` from configs.PipelineConfig, see pipeline.py)."""
    from camenn.tfx_pipeline import _standins  # TODO(phase 2): camenn.model.camenn

    config = fn_args.custom_config
    keras.utils.set_random_seed(config["seed"])
    keras.mixed_precision.set_global_policy(precision_policy(config["mixed_precision"]))
    tft_output = tft.TFTransformOutput(fn_args.transform_output)
    strategy = distribution_strategy()
    batch_size = config["batch_size"] * strategy.num_replicas_in_sync

    def pairs(dataset):
        return dataset.map(lambda f: _standins.alignment_batches(f, config["hard_negatives"]),
                           num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)

    train = pairs(read_transformed(fn_args, tft_output, fn_args.train_files, batch_size, True, config["seed"],
                                   num_epochs=None))
    evaluation = pairs(read_transformed(fn_args, tft_output, fn_args.eval_files, batch_size, False, None))
    steps_per_epoch = config["steps_per_epoch"] or -(-count_examples(fn_args.train_files) // batch_size)
    epochs = config["epochs"]

    patch_features = tft_output.transformed_feature_spec()[F.PATCH_EMBEDDINGS].shape[0]
    text_length = tft_output.transformed_feature_spec()[F.TEXT_TOKEN_IDS].shape[0]
    with strategy.scope():
        model = _standins.build_model(vocabulary_sizes(tft_output, config["num_oov_buckets"]), text_length,
                                      patch_features, config["model_preset"])
        model.compile(
            optimizer=keras.optimizers.AdamW(config["learning_rate"] or 1e-3),
            loss={task: keras.losses.BinaryCrossentropy() for task in F.TASKS},
            weighted_metrics={task: [keras.metrics.AUC(name="auc")] for task in F.TASKS},
        )

    backup = checkpoint_dir(fn_args)
    progress = ProgressLogger(max(1, steps_per_epoch // 4), batch_size, steps_per_epoch * epochs)
    callbacks = [
        keras.callbacks.BackupAndRestore(backup, save_freq=config["checkpoint_every_steps"]),
        keras.callbacks.TensorBoard(fn_args.model_run_dir, update_freq=max(1, steps_per_epoch // 10)),
        progress,
    ]
    logger.info("training %s: %d epochs of %d steps, batch %d, checkpoints in %s", config["model_preset"], epochs,
                steps_per_epoch, batch_size, backup)
    history = model.fit(train, epochs=epochs, steps_per_epoch=steps_per_epoch, validation_data=evaluation,
                        callbacks=callbacks, verbose=0)
    with tf.io.gfile.GFile(os.path.join(fn_args.model_run_dir, "history.json"), "w") as f:
        json.dump({"initial_step": progress.initial_step,
                   "final_step": int(model.optimizer.iterations.numpy()),
                   "history": {k: [float(x) for x in v] for k, v in history.history.items()}}, f)
    export_serving_model(model, tft_output, fn_args.serving_model_dir)
    logger.info("exported the serving model to %s", fn_args.serving_model_dir)
