"""CameNN's task model: the backbone plus one probability head per task (`cvr`, `ita`, `tia`)."""

import keras
import keras_hub
from keras import ops

from camenn.model.camenn.camenn_backbone import CameNNBackbone
from camenn.model.camenn.camenn_optimizer import camenn_optimizer

TASK_ARGUMENTS = ("loss_weights", "compile", "name")
# Peak learning rate of the weights that start random (embeddings, transformer layers, heads); measured
# on the sample, README "Training".
DEFAULT_LEARNING_RATE = 2e-3


@keras.saving.register_keras_serializable(package="camenn")
class PerExampleBinaryCrossentropy(keras.losses.Loss):
    """Binary cross-entropy of [batch] labels and probabilities, one value per example.

    `keras.losses.BinaryCrossentropy` first averages over the last axis, which for CameNN's [batch]
    outputs is the batch itself, so sample weights (which route rows to tasks) would be ignored.

    Example:
    ```python
    import numpy as np

    loss = PerExampleBinaryCrossentropy(reduction="mean_with_sample_weight")
    value = loss([1.0, 0.0, 1.0], [0.9, 0.2, 0.01], sample_weight=[1.0, 1.0, 0.0])
    assert np.isclose(float(value), -(np.log(0.9) + np.log(0.8)) / 2)  # the first two only
    ```
    """

    def call(self, y_true, y_pred):
        return keras.losses.binary_crossentropy(ops.expand_dims(y_true, -1), ops.expand_dims(y_pred, -1))


@keras.saving.register_keras_serializable(package="camenn")
class CameNNMultiTask(keras_hub.models.Task):
    """CameNN with its three heads: each task's pooled vector through a dense layer and a sigmoid.

    Outputs a dict of float32 probabilities of shape [batch], also under mixed precision: `cvr` (will
    the click convert?), `ita` (for this image, is this the right text?) and `tia` (for this text, is
    this the right image?). Train it on `make_alignment_examples(dataset)`, which adds the ITA and TIA
    negatives and per-output sample weights; `compile()`'s defaults fit that data.

    Args:
        backbone: a `CameNNBackbone`.
        loss_weights: dict from task name to the weight of its loss; None weighs every task 1.
        **kwargs: `keras_hub.models.Task` arguments (`compile`, `name`).

    Example:
    ```python
    import numpy as np
    import tensorflow as tf
    from camenn.model import features
    from camenn.model.camenn import CameNNMultiTask, make_alignment_examples

    model = CameNNMultiTask.from_preset(
        "camenn_tiny", vocabulary_sizes={name: 50 for name in features.ID_FEATURES},
        num_text_tokens=4, text_dim=16, num_patches=4, patch_dim=16)
    model.compile(total_steps=100)  # AdamW, linear warmup then linear decay

    # 32 clicks as Transform makes them (vocabulary indices, normalised numbers), with their order labels.
    rng = np.random.default_rng(0)
    clicks = {name: rng.integers(0, 50, 32) for name in features.ID_FEATURES}
    clicks[features.HOUR] = rng.integers(0, 24, 32)
    clicks.update({name: rng.normal(size=32).astype("float32") for name in features.NUMERIC_FEATURES})
    clicks[features.TEXT_EMBEDDINGS] = rng.normal(size=(32, 4 * 16)).astype("float32")
    clicks[features.PATCH_EMBEDDINGS] = rng.normal(size=(32, 4 * 16)).astype("float32")
    clicks[features.LABEL] = rng.integers(0, 2, 32)

    model.fit(make_alignment_examples(tf.data.Dataset.from_tensor_slices(clicks).batch(16), seed=0), epochs=1)
    scores = model.predict({name: value for name, value in clicks.items() if name != features.LABEL})
    assert {task: score.shape for task, score in scores.items()} == {"cvr": (32,), "ita": (32,), "tia": (32,)}
    ```
    """

    backbone_cls = CameNNBackbone

    def __init__(self, backbone, loss_weights=None, **kwargs):
        # === Config === (before the base constructor, whose default compile() reads it)
        self.loss_weights = {task: float((loss_weights or {}).get(task, 1.0)) for task in backbone.task_names}

        # === Layers ===
        self.backbone = backbone
        self.preprocessor = None
        self.heads = [
            keras.layers.Dense(1, activation="sigmoid", dtype="float32", name=f"{task}_head")
            for task in backbone.task_names
        ]

        # === Functional Model ===
        inputs = backbone.input
        pooled = backbone(inputs)
        outputs = {
            task: ops.squeeze(head(pooled[task]), axis=-1) for task, head in zip(backbone.task_names, self.heads)
        }
        super().__init__(inputs=inputs, outputs=outputs, **kwargs)

    def compile(
        self,
        optimizer="auto",
        loss="auto",
        *,
        weighted_metrics="auto",
        total_steps=None,
        learning_rate=DEFAULT_LEARNING_RATE,
        pretrained_learning_rate_multiplier=0.05,
        weight_decay=0.01,
        **kwargs,
    ):
        """Configures training; "auto" picks CameNN's defaults.

        Args:
            optimizer: "auto" is AdamW (`camenn_optimizer`): with `total_steps`, a linear warmup over
                the first 10% then a linear decay to 0; without, a constant `learning_rate`. An
                end-to-end encoder being fine-tuned steps at `pretrained_learning_rate_multiplier` times
                the rate of the fresh weights.
            loss: "auto" is binary cross-entropy per task, averaged over the examples whose sample
                weight for that task is non-zero, weighted by the config's `loss_weights`.
            weighted_metrics: "auto" is AUC per task (logged as `cvr_auc`, `ita_auc`, `tia_auc`).
            total_steps: int or None. Steps of the whole fit, for the learning-rate schedule.
            learning_rate: float. Peak learning rate of the weights that start random.
            pretrained_learning_rate_multiplier: float. See `optimizer`.
            weight_decay: float. AdamW's decoupled weight decay.
            **kwargs: `keras.Model.compile` arguments.
        """
        tasks = self.backbone.task_names
        if optimizer == "auto":
            encoders = [e for e in (self.backbone.text_encoder, self.backbone.image_encoder) if e is not None]
            optimizer = camenn_optimizer(
                total_steps,
                learning_rate=learning_rate,
                weight_decay=weight_decay,
                pretrained_paths=[v.path for e in encoders for v in e.trainable_variables],
                pretrained_learning_rate_multiplier=pretrained_learning_rate_multiplier,
            )
        if loss == "auto":
            loss = {
                task: PerExampleBinaryCrossentropy(reduction="mean_with_sample_weight", name=f"{task}_bce")
                for task in tasks
            }
            kwargs.setdefault("loss_weights", dict(self.loss_weights))
        if weighted_metrics == "auto":
            weighted_metrics = {task: [keras.metrics.AUC(name="auc")] for task in tasks}
        super().compile(optimizer=optimizer, loss=loss, weighted_metrics=weighted_metrics, **kwargs)

    def compile_from_config(self, config):
        """Restores the compile state a `.keras` file recorded (optimizer and its schedule, losses, metrics)."""
        self.compile(**keras.saving.deserialize_keras_object(config))
        if self.built:
            self.optimizer.build(self.trainable_variables)

    def get_config(self):
        config = super().get_config()
        config.pop("preprocessor", None)
        config["loss_weights"] = dict(self.loss_weights)
        return config

    @classmethod
    def from_preset(cls, preset, load_weights=True, **kwargs):
        """Builds a CameNN preset: `loss_weights`, `compile` and `name` configure the task, every other
        argument goes to `CameNNBackbone.from_preset` (see there for what the data decides). A preset
        folder written by `save_to_preset` goes to keras-hub's loader.
        """
        if preset not in cls.backbone_cls.preset_configs:
            return super().from_preset(preset, load_weights=load_weights, **kwargs)
        task_kwargs = {name: kwargs.pop(name) for name in TASK_ARGUMENTS if name in kwargs}
        backbone = cls.backbone_cls.from_preset(preset, load_weights=load_weights, **kwargs)
        return cls(backbone=backbone, **task_kwargs)
