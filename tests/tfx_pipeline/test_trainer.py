"""The Trainer's early stopping: monitors a per-task eval loss, keeps the best epoch's weights, and a
killed run resumes its state."""

import json

import keras
import numpy as np
import pytest

from camenn.tfx_pipeline.trainer import early_stopping


def _model_and_data(seed=0):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((4,))
    outputs = {task: keras.layers.Dense(1, activation="sigmoid", name=task)(inputs) for task in ("cvr", "ita")}
    model = keras.Model(inputs, outputs)  # two heads, so Keras logs a loss per task, as CameNN's
    model.compile(optimizer=keras.optimizers.SGD(0.5), loss={task: "binary_crossentropy" for task in outputs})
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(64, 4)).astype("float32")
    y = (x[:, 0] > 0).astype("float32")
    # Validation labels the opposite way: the better the model fits training, the worse val_cvr_loss gets.
    return model, (x, {"cvr": y, "ita": y}), (x, {"cvr": 1.0 - y, "ita": y})


def test_stops_on_the_eval_cvr_loss_and_keeps_the_best_epochs_weights(tmp_path):
    model, train, validation = _model_and_data()
    stopping = early_stopping(str(tmp_path / "state"), ("cvr", "ita"), patience=2)
    snapshots = []
    record = keras.callbacks.LambdaCallback(on_epoch_end=lambda epoch, logs: snapshots.append(model.get_weights()))
    history = model.fit(
        *train, validation_data=validation, epochs=20, batch_size=64, verbose=0, callbacks=[record, stopping]
    )
    losses = history.history["val_cvr_loss"]
    assert len(losses) < 20  # stopped early
    best = int(np.argmin(losses))
    assert stopping.best_epoch == best and stopping.best == pytest.approx(losses[best])
    for restored, kept in zip(model.get_weights(), snapshots[best]):
        np.testing.assert_array_equal(restored, kept)
    state = json.loads((tmp_path / "state" / "state.json").read_text())
    assert state == {"best": pytest.approx(losses[best]), "best_epoch": best, "wait": len(losses) - 1 - best}


def test_a_resumed_run_starts_from_the_saved_state(tmp_path):
    model, train, validation = _model_and_data()
    first = early_stopping(str(tmp_path / "state"), ("cvr", "ita"), patience=5)
    model.fit(*train, validation_data=validation, epochs=2, batch_size=64, verbose=0, callbacks=[first])
    resumed = early_stopping(str(tmp_path / "state"), ("cvr", "ita"), patience=5)
    resumed.set_model(model)
    resumed.on_train_begin()
    assert (resumed.best, resumed.best_epoch, resumed.wait) == (first.best, first.best_epoch, first.wait)
    for a, b in zip(resumed.best_weights, first.best_weights):
        np.testing.assert_array_equal(a, b)
