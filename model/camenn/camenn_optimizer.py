"""The training method the paper names: AdamW with a linear warmup then a linear decay, with a smaller
step for pre-trained weights than for the fresh ones."""

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="camenn")
class WarmupLinearDecay(keras.optimizers.schedules.LearningRateSchedule):
    """Rises linearly from 0 to `peak_learning_rate` over `warmup_steps`, then falls linearly to
    `end_learning_rate` at `total_steps`, and stays there.

    Args:
        peak_learning_rate: float.
        warmup_steps: int.
        total_steps: int. Must exceed `warmup_steps`.
        end_learning_rate: float.

    Example:
    ```python
    import numpy as np

    schedule = WarmupLinearDecay(1e-3, warmup_steps=100, total_steps=1000)
    assert np.isclose(float(schedule(50)), 5e-4)  # half way up
    assert np.isclose(float(schedule(100)), 1e-3) and np.isclose(float(schedule(550)), 5e-4)  # the peak, half way down
    assert float(schedule(2000)) == 0.0  # end_learning_rate from total_steps on
    ```
    """

    def __init__(self, peak_learning_rate, warmup_steps, total_steps, end_learning_rate=0.0):
        if total_steps <= warmup_steps:
            raise ValueError(f"total_steps ({total_steps}) must exceed warmup_steps ({warmup_steps})")
        self.peak_learning_rate = peak_learning_rate
        self.warmup_steps = warmup_steps
        self.total_steps = total_steps
        self.end_learning_rate = end_learning_rate

    def __call__(self, step):
        step = ops.cast(step, "float32")
        warmup = self.peak_learning_rate * step / max(self.warmup_steps, 1)
        progress = ops.minimum((step - self.warmup_steps) / (self.total_steps - self.warmup_steps), 1.0)
        decay = self.peak_learning_rate + (self.end_learning_rate - self.peak_learning_rate) * progress
        return ops.where(step < self.warmup_steps, warmup, decay)

    def get_config(self):
        return {
            "peak_learning_rate": self.peak_learning_rate,
            "warmup_steps": self.warmup_steps,
            "total_steps": self.total_steps,
            "end_learning_rate": self.end_learning_rate,
        }


@keras.saving.register_keras_serializable(package="camenn")
class GroupedAdamW(keras.optimizers.AdamW):
    """AdamW whose step for the variables at `scaled_paths` is `learning_rate_multiplier` times the rest's.

    Fine-tuning a pre-trained encoder wants a small step (BERT's ~5e-5) where fresh embeddings and
    towers want a large one (~1e-3); one rate for both either forgets the encoder or barely moves the
    rest. Weight decay stays decoupled and common to all.

    Args:
        scaled_paths: sequence of variable paths (`variable.path`) that take the smaller step.
        learning_rate_multiplier: float. Their step relative to the others'.
        **kwargs: `keras.optimizers.AdamW` arguments.

    Example:
    ```python
    import keras
    import numpy as np

    encoder = keras.layers.Dense(4, name="encoder")  # stands for a pre-trained BERT
    head = keras.layers.Dense(1, name="head")
    model = keras.Sequential([keras.Input((8,)), encoder, head])
    optimizer = GroupedAdamW(scaled_paths=[v.path for v in encoder.trainable_variables],
                             learning_rate_multiplier=0.05, learning_rate=1e-3, weight_decay=0.0)
    model.compile(optimizer, loss="mse")
    before = [encoder.kernel.numpy(), head.kernel.numpy()]
    model.fit(np.random.normal(size=(16, 8)), np.random.normal(size=(16, 1)), batch_size=16, verbose=0)
    encoder_step, head_step = (np.abs(v.numpy() - b).max() for v, b in zip([encoder.kernel, head.kernel], before))
    assert np.isclose(encoder_step, 0.05 * head_step, rtol=0.01)  # Adam's first step is the learning rate
    ```
    """

    def __init__(self, scaled_paths=(), learning_rate_multiplier=1.0, **kwargs):
        super().__init__(**kwargs)
        self.scaled_paths = sorted(scaled_paths)
        self.learning_rate_multiplier = float(learning_rate_multiplier)
        self._scaled_keys = set()

    def build(self, var_list):
        # update_step sees the backend's variables, not Keras', so the variables are known by their keys.
        paths = set(self.scaled_paths)
        self._scaled_keys = {self._var_key(v) for v in var_list if v.path in paths}
        super().build(var_list)

    def update_step(self, gradient, variable, learning_rate):
        if self._var_key(variable) in self._scaled_keys:
            learning_rate = ops.multiply(learning_rate, self.learning_rate_multiplier)
        super().update_step(gradient, variable, learning_rate)

    def get_config(self):
        config = super().get_config()
        config.update(
            {"scaled_paths": list(self.scaled_paths), "learning_rate_multiplier": self.learning_rate_multiplier}
        )
        return config


def camenn_optimizer(
    total_steps=None,
    learning_rate=1e-3,
    warmup_fraction=0.1,
    weight_decay=0.01,
    pretrained_paths=(),
    pretrained_learning_rate_multiplier=0.05,
):
    """AdamW (`GroupedAdamW`), gradients clipped to global norm 1; biases and layer-norm parameters are not
    decayed.

    Args:
        total_steps: int or None. Training steps in all (epochs x steps per epoch): a
            `WarmupLinearDecay` schedule over them; None keeps `learning_rate` constant.
        learning_rate: float. Peak learning rate of the fresh weights.
        warmup_fraction: float. Share of `total_steps` spent warming up.
        weight_decay: float. Decoupled weight decay.
        pretrained_paths: paths of pre-trained variables being fine-tuned (an end-to-end encoder).
        pretrained_learning_rate_multiplier: float. Their learning rate relative to `learning_rate`.
    """
    schedule = learning_rate
    if total_steps:
        warmup_steps = int(total_steps * warmup_fraction)
        schedule = WarmupLinearDecay(learning_rate, warmup_steps, max(total_steps, warmup_steps + 1))
    optimizer = GroupedAdamW(
        scaled_paths=pretrained_paths,
        learning_rate_multiplier=pretrained_learning_rate_multiplier,
        learning_rate=schedule,
        weight_decay=weight_decay,
        global_clipnorm=1.0,
    )
    optimizer.exclude_from_weight_decay(var_names=["bias", "gamma", "beta"])
    return optimizer
