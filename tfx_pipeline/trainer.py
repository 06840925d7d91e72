"""The Trainer component's `run_fn`: trains the Keras 3 CameNN model on Transform's output and exports it
with the Transform graph in front, so the pushed SavedModel takes raw features.

- Data: Transform's materialised examples, read once through the TFX data accessor into memory, each
  distinct listing held once and everything in content order (`training_data.ClickData`); the model's
  tf.data step adds the in-batch ITA/TIA negatives.
- Reproducible: the same data, seed and settings give the same weights and metrics (seeded shuffles and
  negatives, content-ordered inputs, TensorFlow's deterministic ops).
- Training: up to `epochs` epochs, stopped early once the eval split's loss has not improved for
  `early_stopping_patience` epochs, the best epoch's weights kept; the CVR head starts at the training
  conversion rate.
- Devices: MirroredStrategy over the GPUs it finds (mixed precision there), the default strategy on CPU.
- Checkpoints: keras.callbacks.BackupAndRestore in a directory keyed by the Trainer's inputs, outside the
  execution's own output folder (a retried execution gets a new one), so a killed Trainer resumes from
  its last checkpoint when the pipeline runs again with the same inputs; early stopping's state (best
  epoch and weights) is kept beside it.
- TensorBoard: losses per task, AUCs, expert load and learning rate, in the `model_run` artifact, and the
  per-epoch train and eval curves in `model_run/history.json`.
"""

import hashlib
import io
import json
import logging
import math
import os
import time

import keras
import numpy as np
import tensorflow as tf
import tensorflow_transform as tft

from camenn.model import features as F
from camenn.model.task_models import task_class
from camenn.tfx_pipeline.configs import TrainerSettings
from camenn.tfx_pipeline.training_data import read_split, vocabulary_sizes

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
    key = json.dumps(
        {
            "train": sorted(fn_args.train_files),
            "eval": sorted(fn_args.eval_files),
            "transform": fn_args.transform_output,
            "config": {k: v for k, v in fn_args.custom_config.items()},
        },
        sort_keys=True,
    )
    root = settings_of(fn_args).checkpoint_root
    return os.path.join(root, hashlib.sha256(key.encode()).hexdigest()[:16])


def settings_of(fn_args) -> TrainerSettings:
    """The Trainer's settings (configs.TrainerSettings) from the component's custom_config."""
    return TrainerSettings.from_json(fn_args.custom_config["settings"])


class ResumableEarlyStopping(keras.callbacks.EarlyStopping):
    """`keras.callbacks.EarlyStopping` with the best epoch's weights restored at the end, whose state
    outlives a killed Trainer: after every epoch the best value, its epoch, the epochs waited and the
    best weights go to `directory` (inside BackupAndRestore's, which is removed once training ends), and
    a resumed run starts from them.

    Args:
        directory: str. Where the state goes.
        **kwargs: `keras.callbacks.EarlyStopping` arguments (`monitor`, `patience`, ...).
    """

    def __init__(self, directory, **kwargs):
        super().__init__(restore_best_weights=True, **kwargs)
        self.directory = directory

    def _paths(self):
        return os.path.join(self.directory, "state.json"), os.path.join(self.directory, "best_weights.npz")

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        state_path, weights_path = self._paths()
        if tf.io.gfile.exists(state_path) and tf.io.gfile.exists(weights_path):
            with tf.io.gfile.GFile(state_path) as f:
                state = json.load(f)
            self.best, self.best_epoch, self.wait = state["best"], state["best_epoch"], state["wait"]
            with tf.io.gfile.GFile(weights_path, "rb") as f, np.load(io.BytesIO(f.read())) as saved:
                self.best_weights = [saved[f"w{i}"] for i in range(len(saved.files))]
            logger.info(
                "early stopping resumes: best %s %.4f at epoch %d, %d epochs without improvement",
                self.monitor,
                self.best,
                self.best_epoch + 1,
                self.wait,
            )

    def on_epoch_end(self, epoch, logs=None):
        super().on_epoch_end(epoch, logs)
        if self.best_weights is None:
            return
        tf.io.gfile.makedirs(self.directory)
        state_path, weights_path = self._paths()
        buffer = io.BytesIO()
        np.savez(buffer, **{f"w{i}": w for i, w in enumerate(self.best_weights)})
        with tf.io.gfile.GFile(weights_path + ".tmp", "wb") as f:
            f.write(buffer.getvalue())
        tf.io.gfile.rename(weights_path + ".tmp", weights_path, overwrite=True)
        with tf.io.gfile.GFile(state_path, "w") as f:
            json.dump({"best": float(self.best), "best_epoch": int(self.best_epoch), "wait": int(self.wait)}, f)
        if self.model.stop_training:
            logger.info(
                "early stopping after epoch %d: best %s %.4f at epoch %d",
                epoch + 1,
                self.monitor,
                self.best,
                self.best_epoch + 1,
            )


class ProgressLogger(keras.callbacks.Callback):
    """Progress lines with clicks per second, and each epoch's training time (from its start to its last
    step, validation excluded) and first-step time (graph tracing, in the first epoch) for throughput
    figures; says where a resumed run starts."""

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
            logger.info("step %d/%d  %s  (%.1f clicks/s this epoch)", step, self.total_steps, shown, rate)

    def on_epoch_end(self, epoch, logs=None):
        # The eval split's losses and AUCs, which early stopping and a reader of the log judge by.
        shown = ", ".join(
            f"{k}={float(v):.4f}"
            for k, v in sorted((logs or {}).items())
            if k.startswith("val_") and (k.endswith("loss") or k.endswith("auc"))
        )
        logger.info("epoch %d done in %.0f s  %s", epoch + 1, self.epoch_seconds[-1], shown or "(no eval split)")

    def record(self) -> dict:
        return {
            "initial_step": self.initial_step,
            "final_step": int(self.model.optimizer.iterations.numpy()),
            "batch_size": self.batch_size,
            "epoch_seconds": self.epoch_seconds,
            "epoch_steps": self.epoch_steps,
            "first_step_seconds": self.first_step_seconds,
        }


def early_stopping(directory: str, task_names, patience: int) -> ResumableEarlyStopping:
    """Early stopping on the eval split's click-to-order loss where the model predicts it (the product's
    objective; the alignment heads learn within the first epochs), else on the whole eval loss."""
    monitor = f"val_{F.CVR}_loss" if F.CVR in task_names else "val_loss"
    # Keras cannot tell the direction of a per-output loss by its name: lower is better.
    return ResumableEarlyStopping(directory, monitor=monitor, mode="min", patience=patience)


def build_model(settings: TrainerSettings, tft_output, policy):
    """The task model of `settings.model_preset` with `settings.model_options` over the preset's
    arguments, sized by what Transform and preprocessing made."""
    spec = tft_output.transformed_feature_spec()
    cls = task_class(settings.model_preset)
    data = dict(
        vocabulary_sizes=vocabulary_sizes(tft_output, settings.num_oov_buckets),
        num_patches=settings.num_patches,
        patch_dim=spec[F.PATCH_EMBEDDINGS].shape[0] // settings.num_patches,
        num_text_tokens=settings.num_text_tokens,
        text_dim=spec[F.TEXT_EMBEDDINGS].shape[0] // settings.num_text_tokens,
    )
    if cls.backbone_cls.preset_configs[settings.model_preset].get("text_encoder"):
        # An end-to-end text encoder reads the token ids; its width and pooled tokens are its own.
        data.update(max_text_length=spec[F.TEXT_TOKEN_IDS].shape[0])
        del data["text_dim"]
    return cls.from_preset(settings.model_preset, dtype=policy, **data, **settings.model_arguments)


def compile_model(model, settings: TrainerSettings, total_steps):
    """The task's own compile: AdamW, warmup then linear decay over `total_steps`, per-example losses (so
    the per-task sample weights route rows to tasks), AUC per task."""
    model.compile(
        total_steps=total_steps, **({"learning_rate": settings.learning_rate} if settings.learning_rate else {})
    )


def start_at_the_prior(model, conversion_rate):
    """Starts the CVR head at the training conversion rate: kernel zero, bias the rate's logit, so that
    the untrained model predicts the rate for every click (a random head spread its first predictions
    over the whole interval: normalized entropy 1.7 before any training) and training moves away from
    the prior only as far as the data supports."""
    if F.CVR not in model.backbone.task_names:
        return
    rate = min(max(conversion_rate, 1e-4), 1 - 1e-4)
    head = model.heads[model.backbone.task_names.index(F.CVR)]
    head.kernel.assign(np.zeros(head.kernel.shape, dtype="float32"))
    head.bias.assign(np.full(head.bias.shape, math.log(rate / (1 - rate)), dtype="float32"))


def training_examples(model, dataset: tf.data.Dataset, seed: int, hard_negatives: bool = True) -> tf.data.Dataset:
    """Batches of clicks (`ClickData.dataset`) -> `model.fit`'s (x, y, sample_weight) with the in-batch
    ITA/TIA negatives, keeping only what the model takes: an ablation may drop a modality or the
    alignment tasks.

    Args:
        model: the task model (`build_model`).
        dataset: batches of transformed clicks, the label included.
        seed: seeds the negatives.
        hard_negatives: prefer negatives of the same coarse category.
    """
    from camenn.model.camenn import make_alignment_examples

    inputs, tasks = list(model.input), model.backbone.task_names
    return (
        make_alignment_examples(dataset, seed=seed, hard_negatives=hard_negatives)
        .map(lambda x, y, w: ({k: x[k] for k in inputs}, {t: y[t] for t in tasks}, {t: w[t] for t in tasks}))
        .prefetch(tf.data.AUTOTUNE)
    )


def export_serving_model(model, tft_output, export_dir):
    """The serving SavedModel (`camenn.model.camenn.export`) with the Transform graph in front: its
    signatures take raw features (serialized tf.Examples, or raw tensors by name), the label not needed.
    Its listing table is empty: the pipeline's ListingTable step fills it from the catalog.

    The export tracks the Transform layer, which owns the vocabulary tables and files; the model's
    variables are saved through the signatures that use them (tracking the model too saves them twice).
    """
    from camenn.model.camenn.export import export_saved_model

    tft_layer = tft_output.transform_features_layer()
    raw_spec = tft_output.raw_feature_spec()
    export_saved_model(
        model,
        export_dir,
        transform=tft_layer,
        transform_trackables=[tft_layer],
        raw_feature_spec={name: raw_spec[name] for name in model.input},
    )


def run_fn(fn_args):
    """TFX Trainer entry point (`custom_config["settings"]`: configs.TrainerSettings, see pipeline.py)."""
    from camenn.serving.listings import write_encoding

    settings = settings_of(fn_args)
    keras.utils.set_random_seed(settings.seed)
    tf.config.experimental.enable_op_determinism()
    policy = precision_policy(settings.mixed_precision)
    # Global too, so the task model's own policy is mixed and compile() adds loss scaling.
    keras.mixed_precision.set_global_policy(policy)
    tft_output = tft.TFTransformOutput(fn_args.transform_output)
    strategy = distribution_strategy()
    batch_size = settings.batch_size * strategy.num_replicas_in_sync

    train_data = read_split(fn_args, tft_output, fn_args.train_files)
    eval_data = read_split(fn_args, tft_output, fn_args.eval_files) if settings.validate_each_epoch else None
    steps_per_epoch = settings.steps_per_epoch or -(-train_data.num_clicks // batch_size)
    epochs = settings.epochs
    total_steps = steps_per_epoch * epochs

    with strategy.scope():
        model = build_model(settings, tft_output, policy)
        compile_model(model, settings, total_steps)
    start_at_the_prior(model, train_data.conversion_rate)

    def with_negatives(dataset, seed):
        return training_examples(model, dataset, seed, settings.hard_negatives)

    train = with_negatives(train_data.dataset(batch_size, seed=settings.seed, repeat=True), settings.seed)
    evaluation = None if eval_data is None else with_negatives(eval_data.dataset(batch_size), settings.seed)

    backup = checkpoint_dir(fn_args)
    progress = ProgressLogger(max(1, steps_per_epoch // 4), batch_size, total_steps)
    callbacks = [
        # double_checkpoint: a Trainer killed while writing a checkpoint resumes from the one before it
        # (without it the half-written weights file stops the next run with an h5py error).
        keras.callbacks.BackupAndRestore(backup, save_freq=settings.checkpoint_every_steps, double_checkpoint=True),
        keras.callbacks.TensorBoard(fn_args.model_run_dir, update_freq=max(1, steps_per_epoch // 10)),
        progress,
    ]
    if evaluation is not None and settings.early_stopping_patience:
        callbacks.insert(
            1,
            early_stopping(
                os.path.join(backup, "early_stopping"), model.backbone.task_names, settings.early_stopping_patience
            ),
        )
    logger.info(
        "training %s (%s, %d parameters): up to %d epochs of %d steps, batch %d, checkpoints in %s",
        settings.model_preset,
        policy,
        model.count_params(),
        epochs,
        steps_per_epoch,
        batch_size,
        backup,
    )
    history = model.fit(
        train,
        epochs=epochs,
        steps_per_epoch=steps_per_epoch,
        validation_data=evaluation,
        callbacks=callbacks,
        verbose=0,
    )
    stopping = next((c for c in callbacks if isinstance(c, ResumableEarlyStopping)), None)
    with tf.io.gfile.GFile(os.path.join(fn_args.model_run_dir, "history.json"), "w") as f:
        json.dump(
            {
                **progress.record(),
                "best_epoch": None if stopping is None else int(stopping.best_epoch),
                "history": {k: [float(x) for x in v] for k, v in history.history.items()},
            },
            f,
        )
    export_serving_model(model, tft_output, fn_args.serving_model_dir)
    write_encoding(fn_args.serving_model_dir, settings.encoding)
    logger.info("exported the serving model to %s", fn_args.serving_model_dir)
