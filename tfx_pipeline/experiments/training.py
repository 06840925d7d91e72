"""Trains one neural model of the experiments in this process, with the Trainer's own code, and records its
learning curve.

The model is what the pipeline's Trainer builds for the same settings (`trainer.build_model` on the
run's Transform output, `trainer.compile_model`: AdamW, warmup then linear decay over the whole budget,
`trainer.start_at_the_prior`), fed the same batches (`ClickData.dataset`, seeded, with the in-batch
ITA/TIA negatives of `trainer.training_examples`). What differs from the Trainer: no early stopping (the
Trainer stops on the eval split's loss, which is the split the experiments judge on) and no export;
instead the training runs in `points` equal segments, and after each one the model predicts the eval
clicks, so the curve says how CVR AUC grows with the clicks seen.

Usage:
```text
run = train_neural(config, tft_output, train_clicks, eval_rows, total_steps=300, points=6)
run.curve        # [{"clicks_seen": 3200, "auc": 0.55, ...}, ...]
```
"""

import dataclasses
import logging
import time
from typing import Callable, Dict, List, Optional

import keras
import numpy as np
import tensorflow as tf

from camenn.model import features as F
from camenn.tfx_pipeline import configs, trainer

logger = logging.getLogger(__name__)
PREDICT_BATCH = 1024


@dataclasses.dataclass
class NeuralRun:
    model: keras.Model
    curve: List[Dict[str, float]]
    train_seconds: float  # fit() time, the curve's predictions excluded
    first_segment_seconds: float  # includes tracing the training graph
    parameters: int
    routing: Dict[str, float]  # the last segment's expert load and overflow, for models that route


def predict(model: keras.Model, dataset: tf.data.Dataset) -> Dict[str, np.ndarray]:
    """{task: [N] float64} for a dataset of model inputs, in order (the forward pass is traced once per model)."""
    outputs: Dict[str, list] = {}
    predict_step = getattr(model, "_experiments_predict", None)
    if predict_step is None:
        predict_step = tf.function(lambda x: model(x, training=False), reduce_retracing=True)
        model._experiments_predict = predict_step
    for batch in dataset:
        for task, value in predict_step(batch).items():
            outputs.setdefault(task, []).append(value.numpy())
    return {task: np.concatenate(parts).astype(np.float64) for task, parts in outputs.items()}


class _Curve(keras.callbacks.Callback):
    def __init__(self, evaluate: Callable[[keras.Model], Dict[str, float]], batch_size: int):
        super().__init__()
        self.evaluate, self.batch_size = evaluate, batch_size
        self.points, self.fit_seconds, self.segment_seconds, self.routing = [], 0.0, [], {}

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        seconds = time.perf_counter() - self._start
        self.segment_seconds.append(seconds)
        self.fit_seconds += seconds
        steps = int(self.model.optimizer.iterations.numpy())
        point = {
            "steps": steps,
            "clicks_seen": steps * self.batch_size,
            **self.evaluate(self.model),
            "train_cvr_loss": float((logs or {}).get(f"{F.CVR}_loss", np.nan)),
        }
        self.points.append(point)
        self.routing = {
            k: float(v)
            for k, v in (logs or {}).items()
            if ("_expert_" in k and k.endswith("_load")) or k == "expert_overflow"
        }
        logger.info(
            "  %d clicks seen: eval CVR AUC %.4f (%.0f s)", point["clicks_seen"], point.get("auc", np.nan), seconds
        )


def restart(model: keras.Model, fresh: keras.Model) -> None:
    """Makes a compiled `model` start training anew as `fresh` (the same architecture, built but not
    compiled) would: every variable, dropout seed states included, takes `fresh`'s value, and the
    optimizer's state (step counter, moments) goes back to zero. The next `fit` reuses `model`'s traced
    training graph instead of tracing a new one (a minute on 2 CPU cores for CameNN)."""
    if [tuple(v.shape) for v in model.variables] != [tuple(v.shape) for v in fresh.variables]:
        raise ValueError("restart needs two models of the same architecture")
    for target, source in zip(model.variables, fresh.variables):
        target.assign(source)
    for variable in model.optimizer.variables:
        if "learning_rate" not in variable.path:
            variable.assign(tf.zeros(variable.shape, variable.dtype))


def train_neural(
    config: configs.TrainerSettings,
    tft_output,
    train_clicks,
    evaluate: Callable[[keras.Model], Dict[str, float]],
    total_steps: int,
    points: int,
    seed: int,
    batch_size: Optional[int] = None,
    reuse: Optional[keras.Model] = None,
) -> NeuralRun:
    """Builds, trains and curves one model.

    Args:
        config: the Trainer's settings (`configs.TrainerSettings`; its epochs, early stopping and
            checkpoints are the Trainer's own loop's, not used here).
        tft_output: the run's `tft.TFTransformOutput`.
        train_clicks: `ClickData` of the training split.
        evaluate: model -> curve metrics, called after every segment.
        total_steps: training steps in all (the learning-rate schedule spans them).
        points: segments (curve points); `total_steps` is rounded down to a multiple of them.
        seed: weights, batch order and negatives.
        batch_size: clicks per step (default `config.batch_size`).
        reuse: a model an earlier call returned for the same config and budget (another seed): it is
            `restart`ed with this seed's initial weights instead of building and tracing a new one.
    """
    batch_size = batch_size or config.batch_size
    keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()
    segment = max(1, total_steps // points)
    model = trainer.build_model(config, tft_output, "float32")
    if reuse is None:
        trainer.compile_model(model, config, segment * points)
    else:
        restart(reuse, model)
        model = reuse
    trainer.start_at_the_prior(model, train_clicks.conversion_rate)
    train = trainer.training_examples(
        model, train_clicks.dataset(batch_size, seed=seed, repeat=True), seed, config.hard_negatives
    )
    curve = _Curve(evaluate, batch_size)
    model.fit(train, epochs=points, steps_per_epoch=segment, callbacks=[curve], verbose=0)
    return NeuralRun(
        model=model,
        curve=curve.points,
        train_seconds=curve.fit_seconds,
        first_segment_seconds=curve.segment_seconds[0],
        parameters=int(model.count_params()),
        routing=curve.routing,
    )
