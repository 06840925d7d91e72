"""The training method the paper names: AdamW with a linear warmup then a linear decay."""
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
    schedule = WarmupLinearDecay(1e-3, warmup_steps=100, total_steps=1000)
    float(schedule(50))  # 5e-4
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
        return {"peak_learning_rate": self.peak_learning_rate, "warmup_steps": self.warmup_steps,
                "total_steps": self.total_steps, "end_learning_rate": self.end_learning_rate}


def camenn_optimizer(total_steps, learning_rate=1e-4, warmup_fraction=0.1, weight_decay=0.01):
    """AdamW on a `WarmupLinearDecay` schedule, gradients clipped to global norm 1; biases and layer-norm
    parameters are not decayed.

    Args:
        total_steps: int. Training steps in all (epochs x steps per epoch).
        learning_rate: float. Peak learning rate.
        warmup_fraction: float. Share of `total_steps` spent warming up.
        weight_decay: float. Decoupled weight decay.
    """
    warmup_steps = int(total_steps * warmup_fraction)
    optimizer = keras.optimizers.AdamW(
        learning_rate=WarmupLinearDecay(learning_rate, warmup_steps, max(total_steps, warmup_steps + 1)),
        weight_decay=weight_decay, global_clipnorm=1.0)
    optimizer.exclude_from_weight_decay(var_names=["bias", "gamma", "beta"])
    return optimizer
