"""The DNN baseline: an MLP over the concatenated pooled text, image and feature embeddings, shared by
every task (the classic shared-bottom ranking DNN)."""

import keras
import keras_hub

from camenn.model import features
from camenn.model.baselines.baseline_presets import dnn_ranker_presets
from camenn.model.baselines.pooled_inputs import PooledBaseline, PooledInputs, model_inputs
from camenn.model.camenn.camenn_backbone import ConfigPresets
from camenn.model.camenn.camenn_multi_task import CameNNMultiTask


def mlp(dims, dropout, dtype, name):
    """Dense ReLU layers with dropout after each, as one `keras.Sequential`."""
    layers = []
    for i, dim in enumerate(dims):
        layers += [
            keras.layers.Dense(dim, activation="relu", dtype=dtype, name=f"{name}_dense_{i}"),
            keras.layers.Dropout(dropout, dtype=dtype, name=f"{name}_dropout_{i}"),
        ]
    return keras.Sequential(layers, name=name)


@keras.saving.register_keras_serializable(package="camenn")
class DNNRankerBackbone(PooledBaseline, ConfigPresets, keras_hub.models.Backbone):
    """From model inputs to one vector, the same for every task: `PooledInputs`, then an MLP.

    Args:
        vocabulary_sizes: dict from each of `features.ID_FEATURES` to its vocabulary size.
        num_text_tokens: int. Cached text tokens per listing.
        text_dim: int. Width of each cached text token.
        num_patches: int. Image patches per listing.
        patch_dim: int. Width of each cached patch embedding.
        hidden_dim: int. Width of each pooled part (text, image, each feature).
        mlp_dims: sequence of int. Widths of the MLP's ReLU layers.
        dropout: float. Dropout after each MLP layer.
        task_names: sequence of str. The tasks; each gets the same vector.
        dtype: str or `keras.DTypePolicy`.
        **kwargs: base `keras_hub.models.Backbone` arguments (`name`, `trainable`).

    Example:
    ```python
    import numpy as np
    from camenn.model import features
    from camenn.model.baselines import DNNRankerBackbone

    backbone = DNNRankerBackbone.from_preset(
        "dnn_ranker_tiny", vocabulary_sizes={name: 50 for name in features.ID_FEATURES},
        num_text_tokens=2, text_dim=8, num_patches=4, patch_dim=16)
    batch = {name: np.zeros((2,), "int64") for name in (*features.ID_FEATURES, features.HOUR)}
    batch.update({name: np.zeros((2,), "float32") for name in features.NUMERIC_FEATURES})
    batch[features.TEXT_EMBEDDINGS] = np.zeros((2, 16), "float32")
    batch[features.PATCH_EMBEDDINGS] = np.zeros((2, 64), "float32")
    pooled = backbone(batch)
    assert {task: vector.shape for task, vector in pooled.items()} == {"cvr": (2, 32), "ita": (2, 32), "tia": (2, 32)}
    ```
    """

    preset_configs = dnn_ranker_presets

    def __init__(
        self,
        vocabulary_sizes,
        num_text_tokens,
        text_dim,
        num_patches,
        patch_dim,
        hidden_dim,
        mlp_dims,
        dropout=0.1,
        task_names=features.TASKS,
        dtype=None,
        **kwargs,
    ):
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
        self.mlp = mlp(mlp_dims, dropout, dtype, "mlp")

        # === Functional Model ===
        inputs = model_inputs(num_text_tokens, text_dim, num_patches, patch_dim)
        shared = self.mlp(self.pooled_inputs(inputs))
        super().__init__(inputs=inputs, outputs={task: shared for task in task_names}, dtype=dtype, **kwargs)

        # === Config ===
        self.vocabulary_sizes = self.pooled_inputs.vocabulary_sizes
        self.num_text_tokens = num_text_tokens
        self.text_dim = text_dim
        self.num_patches = num_patches
        self.patch_dim = patch_dim
        self.hidden_dim = hidden_dim
        self.mlp_dims = tuple(mlp_dims)
        self.dropout = dropout
        self.task_names = tuple(task_names)

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
                "mlp_dims": list(self.mlp_dims),
                "dropout": self.dropout,
                "task_names": list(self.task_names),
            }
        )
        return config


@keras.saving.register_keras_serializable(package="camenn")
class DNNRanker(CameNNMultiTask):
    """The DNN baseline with CameNN's heads, losses, optimizer and outputs (`cvr`, `ita`, `tia`): see
    `CameNNMultiTask`. Train it on `make_alignment_examples(dataset)` and export it with
    `camenn.model.camenn.export.export_saved_model`, as CameNN.

    Example:
    ```python
    from camenn.model import features
    from camenn.model.baselines import DNNRanker

    model = DNNRanker.from_preset("dnn_ranker_tiny", vocabulary_sizes={name: 50 for name in features.ID_FEATURES},
                                  num_text_tokens=2, text_dim=8, num_patches=4, patch_dim=16)
    model.compile(total_steps=100)
    ```
    """

    backbone_cls = DNNRankerBackbone
