"""The baselines' input layer: CameNN's inputs (contract 5) pooled into one vector per example."""
import keras
from keras import ops

from camenn.model import features
from camenn.model.camenn.camenn_layers import UniqueRows


def model_inputs(max_text_length, num_patches, patch_dim):
    """`keras.Input`s of contract 5, the same names, dtypes and shapes as `CameNNBackbone` takes."""
    inputs = {name: keras.Input(shape=(), dtype="int64", name=name)
              for name in (*features.ID_FEATURES, *features.INTEGER_FEATURES)}
    inputs.update({name: keras.Input(shape=(), dtype="float32", name=name) for name in features.NUMERIC_FEATURES})
    inputs[features.TEXT_TOKEN_IDS] = keras.Input(shape=(max_text_length,), dtype="int64",
                                                  name=features.TEXT_TOKEN_IDS)
    inputs[features.PATCH_EMBEDDINGS] = keras.Input(shape=(num_patches * patch_dim,), dtype="float32",
                                                    name=features.PATCH_EMBEDDINGS)
    return inputs


@keras.saving.register_keras_serializable(package="camenn")
class PooledInputs(keras.layers.Layer):
    """One vector per example: the text's BERT token embeddings averaged over its non-padding tokens, the
    image's patch embeddings averaged over its patches, each projected to `hidden_dim`, concatenated
    with an embedding of every id and integer feature and a projection of the numeric features.

    Where CameNN keeps every token and lets attention find their interactions, this pools first: what
    the classic ranking DNN sees.

    Args:
        text_encoder: a `keras_hub.models.BertBackbone`, fine-tuned unless `freeze_text_encoder`.
        vocabulary_sizes: dict from each of `features.ID_FEATURES` to its vocabulary size.
        num_patches: int. Image patches per listing.
        patch_dim: int. Width of each patch embedding.
        hidden_dim: int. Width of each part of the output.
        freeze_text_encoder: bool.
        **kwargs: base `keras.layers.Layer` arguments.

    Call args:
        inputs: dict of model inputs (contract 5).

    Returns:
        [batch, (2 + len(ID_FEATURES) + len(INTEGER_FEATURES) + 1) * hidden_dim].

    Example:
    ```python
    import numpy as np
    from camenn.model import features
    from camenn.model.camenn import load_text_encoder

    layer = PooledInputs(load_text_encoder("bert_tiny", load_weights=False),
                         {name: 50 for name in features.ID_FEATURES}, num_patches=4, patch_dim=16, hidden_dim=8)
    batch = {name: np.zeros((2,), "int64") for name in (*features.ID_FEATURES, features.HOUR)}
    batch.update({name: np.zeros((2,), "float32") for name in features.NUMERIC_FEATURES})
    batch[features.TEXT_TOKEN_IDS] = np.full((2, 16), 101)
    batch[features.PATCH_EMBEDDINGS] = np.zeros((2, 64), "float32")
    pooled = layer(batch)  # (2, 72)
    ```
    """

    def __init__(self, text_encoder, vocabulary_sizes, num_patches, patch_dim, hidden_dim,
                 freeze_text_encoder=False, **kwargs):
        super().__init__(**kwargs)
        self.text_encoder = text_encoder
        self.text_encoder.trainable = not freeze_text_encoder
        self.text_encoder.get_layer("pooled_dense").trainable = False
        self.vocabulary_sizes = {name: int(vocabulary_sizes[name]) for name in features.ID_FEATURES}
        self.num_patches = num_patches
        self.patch_dim = patch_dim
        self.hidden_dim = hidden_dim
        self.freeze_text_encoder = freeze_text_encoder
        self.unique_texts = UniqueRows(name="unique_texts")
        self.text_projection = keras.layers.Dense(hidden_dim, dtype=self.dtype_policy, name="text_projection")
        self.image_projection = keras.layers.Dense(hidden_dim, dtype=self.dtype_policy, name="image_projection")
        self.id_embeddings = {name: keras.layers.Embedding(size, hidden_dim, dtype=self.dtype_policy,
                                                           name=f"{name}_embedding")
                              for name, size in {**self.vocabulary_sizes, **features.INTEGER_FEATURES}.items()}
        self.numeric_projection = keras.layers.Dense(hidden_dim, dtype=self.dtype_policy, name="numeric_projection")

    def call(self, inputs):
        token_ids = ops.cast(inputs[features.TEXT_TOKEN_IDS], "int32")
        unique_ids, rows = self.unique_texts(token_ids)
        encoding = self.text_encoder(
            {"token_ids": unique_ids, "segment_ids": ops.zeros_like(unique_ids),
             "padding_mask": ops.cast(ops.not_equal(unique_ids, 0), "int32")},
            training=False if self.freeze_text_encoder else None)["sequence_output"]
        encoding = ops.take(encoding, rows, axis=0)
        mask = ops.cast(ops.not_equal(token_ids, 0), encoding.dtype)[:, :, None]
        text = ops.sum(encoding * mask, axis=1) / ops.maximum(ops.sum(mask, axis=1), 1.0)
        patches = ops.reshape(inputs[features.PATCH_EMBEDDINGS], (-1, self.num_patches, self.patch_dim))
        parts = [self.text_projection(text), self.image_projection(ops.mean(patches, axis=1))]
        parts += [embed(inputs[name]) for name, embed in self.id_embeddings.items()]
        numeric = ops.stack([ops.cast(inputs[name], self.compute_dtype) for name in features.NUMERIC_FEATURES], -1)
        parts.append(self.numeric_projection(numeric))
        return ops.concatenate(parts, axis=-1)

    def compute_output_shape(self, inputs_shape):
        batch = inputs_shape[features.TEXT_TOKEN_IDS][0]
        return (batch, (3 + len(self.id_embeddings)) * self.hidden_dim)

    def get_config(self):
        config = super().get_config()
        config.update({"text_encoder": keras.layers.serialize(self.text_encoder),
                       "vocabulary_sizes": self.vocabulary_sizes, "num_patches": self.num_patches,
                       "patch_dim": self.patch_dim, "hidden_dim": self.hidden_dim,
                       "freeze_text_encoder": self.freeze_text_encoder})
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["text_encoder"] = keras.layers.deserialize(config["text_encoder"])
        return cls(**config)
