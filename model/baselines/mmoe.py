"""The MMoE baseline (Ma et al., KDD 2018): dense MLP experts over the pooled inputs, one softmax gate per
task, a small tower per task. What CameNN's mixture replaces with sparse transformer experts over tokens."""

import keras
import keras_hub
from keras import ops

from camenn.model import features
from camenn.model.baselines.baseline_presets import mmoe_presets
from camenn.model.baselines.dnn_ranker import mlp
from camenn.model.baselines.pooled_inputs import PooledBaseline, PooledInputs, model_inputs
from camenn.model.camenn.camenn_backbone import ConfigPresets
from camenn.model.camenn.camenn_multi_task import CameNNMultiTask


@keras.saving.register_keras_serializable(package="camenn")
class MMoEBackbone(PooledBaseline, ConfigPresets, keras_hub.models.Backbone):
    """From model inputs to one vector per task: `PooledInputs`, `num_experts` MLP experts
    that every example goes through (dense, not top-k), and per task a softmax gate over the experts
    (fed with the pooled inputs) whose weighted sum feeds the task's ReLU tower.

    Args:
        vocabulary_sizes: dict from each of `features.ID_FEATURES` to its vocabulary size.
        num_text_tokens: int. Cached text tokens per listing.
        text_dim: int. Width of each cached text token.
        num_patches: int. Image patches per listing.
        patch_dim: int. Width of each cached patch embedding.
        hidden_dim: int. Width of each pooled part (text, image, each feature).
        num_experts: int. MLP experts.
        expert_dims: sequence of int. Widths of each expert's ReLU layers.
        tower_dim: int. Width of each task's ReLU tower.
        dropout: float. Dropout after each expert and tower layer.
        task_names: sequence of str. The tasks, each with a gate and a tower.
        dtype: str or `keras.DTypePolicy`.
        **kwargs: base `keras_hub.models.Backbone` arguments (`name`, `trainable`).

    Example:
    ```python
    import numpy as np
    from camenn.model import features
    from camenn.model.baselines import MMoEBackbone

    backbone = MMoEBackbone.from_preset(
        "mmoe_tiny", vocabulary_sizes={name: 50 for name in features.ID_FEATURES}, num_text_tokens=2,
        text_dim=8, num_patches=4, patch_dim=16)
    batch = {name: np.zeros((2,), "int64") for name in (*features.ID_FEATURES, features.HOUR)}
    batch.update({name: np.zeros((2,), "float32") for name in features.NUMERIC_FEATURES})
    batch[features.TEXT_EMBEDDINGS] = np.zeros((2, 16), "float32")
    batch[features.PATCH_EMBEDDINGS] = np.zeros((2, 64), "float32")
    pooled = backbone(batch)
    assert {task: vector.shape for task, vector in pooled.items()} == {"cvr": (2, 32), "ita": (2, 32), "tia": (2, 32)}
    ```
    """

    preset_configs = mmoe_presets

    def __init__(
        self,
        vocabulary_sizes,
        num_text_tokens,
        text_dim,
        num_patches,
        patch_dim,
        hidden_dim,
        num_experts,
        expert_dims,
        tower_dim,
        dropout=0.1,
        task_names=features.TASKS,
        dtype=None,
        **kwargs,
    ):
        task_names = tuple(task_names)
        # === Layers ===
        self.pooled_inputs = PooledInputs(
            vocabulary_sizes,
            num_text_tokens,
            text_dim,
            num_patches,
            patch_dim,
            hidden_dim,
            dtype=dtype,
            name="pooled_inputs",
        )
        self.experts = [mlp(expert_dims, dropout, dtype, f"expert_{e}") for e in range(num_experts)]
        self.gates = [
            keras.layers.Dense(num_experts, activation="softmax", dtype=dtype, name=f"{task}_gate")
            for task in task_names
        ]
        self.towers = [mlp((tower_dim,), dropout, dtype, f"{task}_tower") for task in task_names]

        # === Functional Model ===
        inputs = model_inputs(num_text_tokens, text_dim, num_patches, patch_dim)
        pooled = self.pooled_inputs(inputs)
        expert_outputs = ops.stack([expert(pooled) for expert in self.experts], axis=1)  # [B, E, D]
        outputs = {}
        for task, gate, tower in zip(task_names, self.gates, self.towers):
            mixed = ops.sum(expert_outputs * ops.expand_dims(gate(pooled), -1), axis=1)
            outputs[task] = tower(mixed)
        super().__init__(inputs=inputs, outputs=outputs, dtype=dtype, **kwargs)

        # === Config ===
        self.vocabulary_sizes = self.pooled_inputs.vocabulary_sizes
        self.num_text_tokens = num_text_tokens
        self.text_dim = text_dim
        self.num_patches = num_patches
        self.patch_dim = patch_dim
        self.hidden_dim = hidden_dim
        self.num_experts = num_experts
        self.expert_dims = tuple(expert_dims)
        self.tower_dim = tower_dim
        self.dropout = dropout
        self.task_names = task_names

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "vocabulary_sizes": self.vocabulary_sizes,
                "num_text_tokens": self.num_text_tokens,
                "text_dim": self.text_dim,
                "num_patches": self.num_patches,
                "patch_dim": self.patch_dim,
                "hidden_dim": self.hidden_dim,
                "num_experts": self.num_experts,
                "expert_dims": list(self.expert_dims),
                "tower_dim": self.tower_dim,
                "dropout": self.dropout,
                "task_names": list(self.task_names),
            }
        )
        return config


@keras.saving.register_keras_serializable(package="camenn")
class MMoE(CameNNMultiTask):
    """The MMoE baseline with CameNN's heads, losses, optimizer and outputs (`cvr`, `ita`, `tia`): see
    `CameNNMultiTask`; trained and exported as CameNN is.

    Example:
    ```python
    from camenn.model import features
    from camenn.model.baselines import MMoE

    model = MMoE.from_preset("mmoe_tiny", vocabulary_sizes={name: 50 for name in features.ID_FEATURES},
                             num_text_tokens=2, text_dim=8, num_patches=4, patch_dim=16)
    model.compile(total_steps=100)
    ```
    """

    backbone_cls = MMoEBackbone
