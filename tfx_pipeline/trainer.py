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
    """Progress lines with examples per second, and each epoch's training time (from its start to its
    last step, validation excluded) and first-step time (graph tracing, in the first epoch) for
    throughput figures; says where a resumed run starts."""

    def __init__(self, every, batch_size, total_steps):
        super().__init__()
        self.every, self.batch_size, self.total_steps = every, batch_size, total_steps
        self.initial_step = 0
        self.epoch_seconds, self.epoch_steps, self.first_step_seconds = [], [], []

    def on_train_begin(self, logs=None):
        self.initial_step = int(self.model.optimizer.iterations.numpy())
        if self.initial_step:
            logger.info("resuming from the checkpoint at step %d", self.initial_step)

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch_start, self._epoch_first_step = time.perf_counter(), int(self.model.optimizer.iterations.numpy())
        self.epoch_seconds.append(0.0)
        self.epoch_steps.append(0)

    def on_train_batch_end(self, batch, logs=None):
        step = int(self.model.optimizer.iterations.numpy())
        self.epoch_seconds[-1] = time.perf_counter() - self._epoch_start
        self.epoch_steps[-1] = step - self._epoch_first_step
        if len(self.first_step_seconds) < len(self.epoch_seconds):
            self.first_step_seconds.append(self.epoch_seconds[-1])
        if step % self.every == 0:
            rate = self.epoch_steps[-1] * self.batch_size / max(self.epoch_seconds[-1], 1e-9)
            shown = ", ".join(f"{k}={float(v):.4f}" for k, v in sorted((logs or {}).items()) if k.endswith("loss"))
            logger.info("step %d/%d  %s  (%.1f examples/s this epoch)", step, self.total_steps, shown, rate)

    def record(self) -> dict:
        return {"initial_step": self.initial_step, "final_step": int(self.model.optimizer.iterations.numpy()),
                "batch_size": self.batch_size, "epoch_seconds": self.epoch_seconds, "epoch_steps": self.epoch_steps,
                "first_step_seconds": self.first_step_seconds}


def task_class(preset):
    """The task model class whose family names `preset`: CameNN's, or a baseline's (camenn.model.baselines)."""
    from camenn.model.baselines import DNNRanker, MMoE
    from camenn.model.camenn import CameNNMultiTask

    for cls in (CameNNMultiTask, DNNRanker, MMoE):
        if preset in cls.backbone_cls.preset_configs:
            return cls
    raise ValueError(f"unknown model preset {preset!r}")


def build_model(config, tft_output, policy):
    """The task model of `config["model_preset"]` with `config["model_options"]` (JSON) over the preset's
    arguments, sized by what Transform and preprocessing made."""
    spec = tft_output.transformed_feature_spec()
    return task_class(config["model_preset"]).from_preset(
        config["model_preset"], vocabulary_sizes=vocabulary_sizes(tft_output, config["num_oov_buckets"]),
        num_patches=config["num_patches"], patch_dim=spec[F.PATCH_EMBEDDINGS].shape[0] // config["num_patches"],
        max_text_length=spec[F.TEXT_TOKEN_IDS].shape[0], dtype=policy,
        **json.loads(config.get("model_options") or "{}"))


def compile_model(model, config, total_steps):
    """The task's own compile: AdamW, warmup then linear decay over `total_steps`, per-example losses (so
    the per-task sample weights route rows to tasks), AUC per task."""
    model.compile(total_steps=total_steps,
                  **({"learning_rate": config["learning_rate"]} if config["learning_rate"] else {}))


def export_serving_model(model, tft_output, export_dir):
    """The SavedModel of contract 6 with the Transform graph in front: its signatures take raw features
    (`serving_default`: serialized tf.Examples; `dense`: raw tensors by name), the label not needed.

    The export tracks the Transform layer, which owns the vocabulary tables and files; the model's
    variables are saved through the signatures that use them (tracking the model too saves them twice).
    """
    from camenn.model.camenn.export import export_saved_model

    tft_layer = tft_output.transform_features_layer()
    raw_spec = tft_output.raw_feature_spec()
    export_saved_model(model, export_dir, transform=tft_layer, transform_trackables=[tft_layer],
                       raw_feature_spec={name: raw_spec[name] for name in F.MODEL_INPUTS})


def run_fn(fn_args):
    """TFX Trainer entry point (`custom_config` from configs.PipelineConfig, see pipeline.py)."""
    from camenn.model.camenn import make_alignment_examples

    config = fn_args.custom_config
    keras.utils.set_random_seed(config["seed"])
    policy = precision_policy(config["mixed_precision"])
    # Global too, so the task model's own policy is mixed and compile() adds loss scaling.
    keras.mixed_precision.set_global_policy(policy)
    tft_output = tft.TFTransformOutput(fn_args.transform_output)
    strategy = distribution_strategy()
    batch_size = config["batch_size"] * strategy.num_replicas_in_sync

    steps_per_epoch = config["steps_per_epoch"] or -(-count_examples(fn_args.train_files) // batch_size)
    epochs = config["epochs"]
    total_steps = steps_per_epoch * epochs

    with strategy.scope():
        model = build_model(config, tft_output, policy)
        compile_model(model, config, total_steps)

    def with_negatives(dataset, seed):
        # Only what the model takes: an ablation may drop a modality or the alignment tasks.
        inputs, tasks = list(model.input), model.backbone.task_names
        return make_alignment_examples(dataset, seed=seed, hard_negatives=config["hard_negatives"]).map(
            lambda x, y, w: ({k: x[k] for k in inputs}, {t: y[t] for t in tasks}, {t: w[t] for t in tasks})
        ).prefetch(tf.data.AUTOTUNE)

    train = with_negatives(read_transformed(fn_args, tft_output, fn_args.train_files, batch_size, True,
                                            config["seed"], num_epochs=None), config["seed"])
    evaluation = None
    if config["validate_each_epoch"]:
        evaluation = with_negatives(read_transformed(fn_args, tft_output, fn_args.eval_files, batch_size, False,
                                                     None), config["seed"])

    backup = checkpoint_dir(fn_args)
    progress = ProgressLogger(max(1, steps_per_epoch // 4), batch_size, total_steps)
    callbacks = [
        keras.callbacks.BackupAndRestore(backup, save_freq=config["checkpoint_every_steps"]),
        keras.callbacks.TensorBoard(fn_args.model_run_dir, update_freq=max(1, steps_per_epoch // 10)),
        progress,
    ]
    logger.info("training %s (%s, %d parameters): %d epochs of %d steps, batch %d, checkpoints in %s",
                config["model_preset"], policy, model.count_params(), epochs, steps_per_epoch, batch_size, backup)
    history = model.fit(train, epochs=epochs, steps_per_epoch=steps_per_epoch,
                        validation_data=evaluation, callbacks=callbacks, verbose=0)
    with tf.io.gfile.GFile(os.path.join(fn_args.model_run_dir, "history.json"), "w") as f:
        json.dump({**progress.record(),
                   "history": {k: [float(x) for x in v] for k, v in history.history.items()}}, f)
    export_serving_model(model, tft_output, fn_args.serving_model_dir)
    logger.info("exported the serving model to %s", fn_args.serving_model_dir)
