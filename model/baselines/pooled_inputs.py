"""The baselines' input layer: CameNN's inputs pooled into one vector per example."""

import keras
from keras import ops

from camenn.model import features


def model_inputs(num_text_tokens, text_dim, num_patches, patch_dim):
    """`keras.Input`s with the same names, dtypes and shapes as `CameNNBackbone` takes (cached encodings)."""
    inputs = {
        name: keras.Input(shape=(), dtype="int64", name=name)
        for name in (*features.ID_FEATURES, *features.INTEGER_FEATURES)
    }
    inputs.update({name: keras.Input(shape=(), dtype="float32", name=name) for name in features.NUMERIC_FEATURES})
    inputs[features.TEXT_EMBEDDINGS] = keras.Input(
        shape=(num_text_tokens * text_dim,), dtype="float32", name=features.TEXT_EMBEDDINGS
    )
    inputs[features.PATCH_EMBEDDINGS] = keras.Input(
        shape=(num_patches * patch_dim,), dtype="float32", name=features.PATCH_EMBEDDINGS
    )
    return inputs


class PooledBaseline:
    """What the export and the optimizer ask of a backbone, answered for the pooled baselines: no
    end-to-end encoder, no listing-only attention (so no listing table), every task a request task."""

    text_encoder = None
    image_encoder = None
    listing_only_attention = False
    listing_tasks = ()

    @property
    def request_tasks(self):
        return self.task_names


@keras.saving.register_keras_serializable(package="camenn")
class PooledInputs(keras.layers.Layer):
    """One vector per example: the listing text's cached tokens averaged, the image's patch embeddings
    averaged, each projected to `hidden_dim`, concatenated with an embedding of every id and integer
    feature and a projection of the numeric features.

    Where CameNN keeps every token and lets attention find their interactions, this pools first: what
    the classic ranking DNN sees.

    Args:
        vocabulary_sizes: dict from each of `features.ID_FEATURES` to its vocabulary size.
        num_text_tokens: int. Cached text tokens per listing.
        text_dim: int. Width of each text token.
        num_patches: int. Image patches per listing.
        patch_dim: int. Width of each patch embedding.
        hidden_dim: int. Width of each part of the output.
        **kwargs: base `keras.layers.Layer` arguments.

    Call args:
        inputs: dict of model inputs.

    Returns:
        [batch, (2 + len(ID_FEATURES) + len(INTEGER_FEATURES) + 1) * hidden_dim].

    Example:
    ```python
    import numpy as np
    from camenn.model import features

    layer = PooledInputs({name: 50 for name in features.ID_FEATURES}, num_text_tokens=2, text_dim=8,
                         num_patches=4, patch_dim=16, hidden_dim=8)
    batch = {name: np.zeros((2,), "int64") for name in (*features.ID_FEATURES, features.HOUR)}
    batch.update({name: np.zeros((2,), "float32") for name in features.NUMERIC_FEATURES})
    batch[features.TEXT_EMBEDDINGS] = np.zeros((2, 16), "float32")
    batch[features.PATCH_EMBEDDINGS] = np.zeros((2, 64), "float32")
    pooled = layer(batch)
    assert pooled.shape == (2, 72)  # 9 parts: text, image, 5 ids, the hour and the numbers, each 8 wide
    ```
    """

    def __init__(self, vocabulary_sizes, num_text_tokens, text_dim, num_patches, patch_dim, hidden_dim, **kwargs):
        super().__init__(**kwargs)
        self.vocabulary_sizes = {name: int(vocabulary_sizes[name]) for name in features.ID_FEATURES}
        self.num_text_tokens = num_text_tokens
        self.text_dim = text_dim
        self.num_patches = num_patches
        self.patch_dim = patch_dim
        self.hidden_dim = hidden_dim
        self.text_projection = keras.layers.Dense(hidden_dim, dtype=self.dtype_policy, name="text_projection")
        self.image_projection = keras.layers.Dense(hidden_dim, dtype=self.dtype_policy, name="image_projection")
        self.id_embeddings = {
            name: keras.layers.Embedding(size, hidden_dim, dtype=self.dtype_policy, name=f"{name}_embedding")
            for name, size in {**self.vocabulary_sizes, **features.INTEGER_FEATURES}.items()
        }
        self.numeric_projection = keras.layers.Dense(hidden_dim, dtype=self.dtype_policy, name="numeric_projection")

    def call(self, inputs):
        text = ops.reshape(inputs[features.TEXT_EMBEDDINGS], (-1, self.num_text_tokens, self.text_dim))
        patches = ops.reshape(inputs[features.PATCH_EMBEDDINGS], (-1, self.num_patches, self.patch_dim))
        parts = [self.text_projection(ops.mean(text, axis=1)), self.image_projection(ops.mean(patches, axis=1))]
        parts += [embed(inputs[name]) for name, embed in self.id_embeddings.items()]
        numeric = ops.stack([ops.cast(inputs[name], self.compute_dtype) for name in features.NUMERIC_FEATURES], -1)
        parts.append(self.numeric_projection(numeric))
        return ops.concatenate(parts, axis=-1)

    def compute_output_shape(self, inputs_shape):
        batch = inputs_shape[features.TEXT_EMBEDDINGS][0]
        return (batch, (3 + len(self.id_embeddings)) * self.hidden_dim)

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
            }
        )
        return config
