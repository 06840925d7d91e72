"""Small layers that turn CameNN's non-text inputs into tokens of the model width."""

import keras
import numpy as np
import tensorflow as tf
from keras import ops


@keras.saving.register_keras_serializable(package="camenn")
class NumericFeatureEmbedding(keras.layers.Layer):
    """One token per numeric feature: a small per-feature MLP from the scalar to the model width.

    Args:
        hidden_dim: int. Width of each output token.
        intermediate_dim: int. Width of the per-feature hidden layer.
        **kwargs: base `keras.layers.Layer` arguments.

    Call args:
        inputs: float tensor [batch, num_features] (normalised numbers, one column per feature).

    Returns:
        [batch, num_features, hidden_dim] tokens.

    Example:
    ```python
    import numpy as np

    tokens = NumericFeatureEmbedding(hidden_dim=8)(np.array([[0.5, -1.0]], "float32"))  # price, distance
    assert tokens.shape == (1, 2, 8)
    ```
    """

    def __init__(self, hidden_dim, intermediate_dim=16, **kwargs):
        super().__init__(**kwargs)
        self.hidden_dim = hidden_dim
        self.intermediate_dim = intermediate_dim

    def build(self, inputs_shape):
        num_features = inputs_shape[-1]
        self.inner_kernel = self.add_weight(
            (num_features, self.intermediate_dim), name="inner_kernel", initializer="glorot_uniform"
        )
        self.inner_bias = self.add_weight((num_features, self.intermediate_dim), name="inner_bias", initializer="zeros")
        self.outer_kernel = self.add_weight(
            (num_features, self.intermediate_dim, self.hidden_dim), name="outer_kernel", initializer="glorot_uniform"
        )
        self.outer_bias = self.add_weight((num_features, self.hidden_dim), name="outer_bias", initializer="zeros")

    def call(self, inputs):
        hidden = ops.gelu(inputs[:, :, None] * self.inner_kernel + self.inner_bias)  # [B, F, I]
        # A batched matmul over the features ([F, B, I] x [F, I, H]): einsum's generic path took ~10x longer.
        outer = ops.matmul(ops.transpose(hidden, (1, 0, 2)), self.outer_kernel)
        return ops.transpose(outer, (1, 0, 2)) + self.outer_bias

    def compute_output_shape(self, inputs_shape):
        return (*inputs_shape, self.hidden_dim)

    def get_config(self):
        config = super().get_config()
        config.update({"hidden_dim": self.hidden_dim, "intermediate_dim": self.intermediate_dim})
        return config


@keras.saving.register_keras_serializable(package="camenn")
class TaskTokens(keras.layers.Layer):
    """One learned token per task, prepended to every example; each task's tower pools at its token.

    Args:
        num_tasks: int.
        hidden_dim: int.
        **kwargs: base `keras.layers.Layer` arguments.

    Call args:
        reference: any tensor whose first dimension is the batch.

    Returns:
        [batch, num_tasks, hidden_dim].

    Example:
    ```python
    import numpy as np

    tokens = TaskTokens(num_tasks=3, hidden_dim=8)(np.zeros((4, 5), "float32"))
    assert tokens.shape == (4, 3, 8)
    ```
    """

    def __init__(self, num_tasks, hidden_dim, **kwargs):
        super().__init__(**kwargs)
        self.num_tasks = num_tasks
        self.hidden_dim = hidden_dim

    def build(self, reference_shape):
        self.tokens = self.add_weight(
            (self.num_tasks, self.hidden_dim),
            name="tokens",
            initializer=keras.initializers.TruncatedNormal(stddev=0.02),
        )

    def call(self, reference):
        batch_size = ops.shape(reference)[0]
        return ops.broadcast_to(
            ops.cast(self.tokens, self.compute_dtype)[None], (batch_size, self.num_tasks, self.hidden_dim)
        )

    def compute_output_shape(self, reference_shape):
        return (reference_shape[0], self.num_tasks, self.hidden_dim)

    def get_config(self):
        config = super().get_config()
        config.update({"num_tasks": self.num_tasks, "hidden_dim": self.hidden_dim})
        return config


@keras.saving.register_keras_serializable(package="camenn")
class ModalityEmbedding(keras.layers.Layer):
    """Adds a learned embedding per modality (a run of consecutive tokens) to a token sequence.

    Args:
        segment_lengths: list of int. Token count of each modality, in sequence order; they must sum to
            the sequence length.
        **kwargs: base `keras.layers.Layer` arguments.

    Call args:
        tokens: [batch, sum(segment_lengths), hidden_dim].

    Returns:
        The tokens plus their modality's embedding.

    Example:
    ```python
    import numpy as np

    layer = ModalityEmbedding(segment_lengths=[3, 64, 4, 8])  # e.g. tasks, text, image, other features
    tokens = layer(np.zeros((2, 79, 16), "float32"))
    assert tokens.shape == (2, 79, 16)
    ```
    """

    def __init__(self, segment_lengths, **kwargs):
        super().__init__(**kwargs)
        self.segment_lengths = [int(n) for n in segment_lengths]

    def build(self, tokens_shape):
        if tokens_shape[1] is not None and tokens_shape[1] != sum(self.segment_lengths):
            raise ValueError(
                f"segment_lengths {self.segment_lengths} sum to {sum(self.segment_lengths)}, "
                f"but the sequence has {tokens_shape[1]} tokens"
            )
        self.embeddings = self.add_weight(
            (len(self.segment_lengths), tokens_shape[-1]),
            name="embeddings",
            initializer=keras.initializers.TruncatedNormal(stddev=0.02),
        )

    def call(self, tokens):
        modality_ids = [m for m, n in enumerate(self.segment_lengths) for _ in range(n)]
        return tokens + ops.cast(ops.take(self.embeddings, modality_ids, axis=0), tokens.dtype)[None]

    def compute_output_shape(self, tokens_shape):
        return tokens_shape

    def get_config(self):
        config = super().get_config()
        config.update({"segment_lengths": self.segment_lengths})
        return config


@keras.saving.register_keras_serializable(package="camenn")
class UniqueRows(keras.layers.Layer):
    """The distinct rows of an integer matrix, in order of first appearance, and for each input row the
    index of its distinct row (TensorFlow only).

    CameNN encodes each distinct listing text once: a training batch holds every text three times (its
    true pair, an ITA negative of another listing, its TIA negative), a ranking request often repeats one.

    Call args:
        rows: integer tensor [batch, length].

    Returns:
        (distinct rows [distinct, length], index [batch] into them).

    Example:
    ```python
    import numpy as np

    unique, index = UniqueRows()(np.array([[1, 2], [3, 4], [1, 2]]))
    assert unique.numpy().tolist() == [[1, 2], [3, 4]] and index.numpy().tolist() == [0, 1, 0]
    ```
    """

    def call(self, rows):
        unique = tf.raw_ops.UniqueV2(x=rows, axis=[0], out_idx=tf.int32)
        return unique.y, unique.idx

    def compute_output_spec(self, rows):
        return (
            keras.KerasTensor((None, rows.shape[1]), dtype=rows.dtype),
            keras.KerasTensor((rows.shape[0],), dtype="int32"),
        )


@keras.saving.register_keras_serializable(package="camenn")
class SideAttentionMask(keras.layers.Layer):
    """Who may attend to whom in CameNN's token sequence, whose first `listing_length` tokens depend only on
    the listing and whose last `request_length` tokens on the shopper and context.

    With `listing_only=True`, a listing token attends only to listing tokens, so its state in every
    layer is a function of the listing alone (computed once per listing and model version), while a
    request token attends to every token. With `listing_only=False` every token attends to every token.

    Call args:
        tokens: [batch, listing_length + request_length, hidden_dim].

    Returns:
        (attention mask int32 [batch, T, T], listing mask int32 [batch, T]: 1 on the listing tokens).

    Example:
    ```python
    import numpy as np

    mask, listing = SideAttentionMask(2, 1)(np.zeros((1, 3, 4), "float32"))  # 2 listing tokens, 1 request token
    assert np.asarray(mask[0]).tolist() == [[1, 1, 0], [1, 1, 0], [1, 1, 1]]
    assert np.asarray(listing[0]).tolist() == [1, 1, 0]
    ```
    """

    def __init__(self, listing_length, request_length, listing_only=True, **kwargs):
        super().__init__(**kwargs)
        self.listing_length = int(listing_length)
        self.request_length = int(request_length)
        self.listing_only = bool(listing_only)
        total = self.listing_length + self.request_length
        listing = np.arange(total) < self.listing_length
        allowed = listing[None, :] | ~listing[:, None] if self.listing_only else np.ones((total, total), bool)
        self._mask = allowed.astype("int32")
        self._listing = listing.astype("int32")

    def call(self, tokens):
        batch_size = ops.shape(tokens)[0]
        total = self.listing_length + self.request_length
        mask = ops.broadcast_to(ops.convert_to_tensor(self._mask)[None], (batch_size, total, total))
        listing = ops.broadcast_to(ops.convert_to_tensor(self._listing)[None], (batch_size, total))
        return mask, listing

    def compute_output_spec(self, tokens):
        total = self.listing_length + self.request_length
        return (
            keras.KerasTensor((tokens.shape[0], total, total), dtype="int32"),
            keras.KerasTensor((tokens.shape[0], total), dtype="int32"),
        )

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "listing_length": self.listing_length,
                "request_length": self.request_length,
                "listing_only": self.listing_only,
            }
        )
        return config


@keras.saving.register_keras_serializable(package="camenn")
class TaskTower(keras.layers.Layer):
    """One task's transformer tower, read out at the task's own token.

    The same computation as a pre-layer-norm `keras_hub.layers.TransformerEncoder` layer (layer norm,
    multi-head self-attention, residual; layer norm, GELU feed-forward, residual; the same sublayer
    names), evaluated only at position `token_index`: the task's token is the query and every token
    supplies keys and values. Only that token's state is read out, so computing the others would be
    wasted (a third of the layer's cost on CameNN's sequences).

    Args:
        token_index: int. The position of the task's token.
        intermediate_dim: int. Feed-forward width.
        num_heads: int.
        dropout: float. On the attention probabilities and both residual branches.
        activation: str. Feed-forward activation.
        layer_norm_epsilon: float.
        kernel_initializer: str or initializer.
        **kwargs: base `keras.layers.Layer` arguments.

    Call args:
        sequence: [batch, length, hidden_dim].
        attention_mask: optional int/bool [batch, length, length]; only row `token_index` is used.
        training: bool.

    Returns:
        [batch, hidden_dim]: the task token's state after the layer.

    Example:
    ```python
    import numpy as np

    tower = TaskTower(token_index=0, intermediate_dim=16, num_heads=2)
    assert tower(np.random.normal(size=(3, 5, 8)).astype("float32")).shape == (3, 8)
    ```
    """

    def __init__(
        self,
        token_index,
        intermediate_dim,
        num_heads,
        dropout=0.0,
        activation="gelu",
        layer_norm_epsilon=1e-6,
        kernel_initializer="glorot_uniform",
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.token_index = int(token_index)
        self.intermediate_dim = intermediate_dim
        self.num_heads = num_heads
        self.dropout = dropout
        self.activation = activation
        self.layer_norm_epsilon = layer_norm_epsilon
        self.kernel_initializer = keras.initializers.get(kernel_initializer)

    def _initializer(self):
        return keras.initializers.get(keras.initializers.serialize(self.kernel_initializer))

    def build(self, sequence_shape, attention_mask_shape=None):
        hidden_dim = sequence_shape[-1]
        query_shape = (sequence_shape[0], 1, hidden_dim)
        self._self_attention_layer_norm = keras.layers.LayerNormalization(
            epsilon=self.layer_norm_epsilon, dtype=self.dtype_policy, name="self_attention_layer_norm"
        )
        self._self_attention_layer_norm.build(sequence_shape)
        self._self_attention_layer = keras.layers.MultiHeadAttention(
            num_heads=self.num_heads,
            key_dim=hidden_dim // self.num_heads,
            dropout=self.dropout,
            kernel_initializer=self._initializer(),
            dtype=self.dtype_policy,
            name="self_attention_layer",
        )
        self._self_attention_layer.build(query_shape=query_shape, value_shape=sequence_shape)
        self._self_attention_dropout = keras.layers.Dropout(
            self.dropout, dtype=self.dtype_policy, name="self_attention_dropout"
        )
        self._feedforward_layer_norm = keras.layers.LayerNormalization(
            epsilon=self.layer_norm_epsilon, dtype=self.dtype_policy, name="feedforward_layer_norm"
        )
        self._feedforward_layer_norm.build(query_shape)
        self._feedforward_intermediate_dense = keras.layers.Dense(
            self.intermediate_dim,
            activation=self.activation,
            kernel_initializer=self._initializer(),
            dtype=self.dtype_policy,
            name="feedforward_intermediate_dense",
        )
        self._feedforward_intermediate_dense.build(query_shape)
        self._feedforward_output_dense = keras.layers.Dense(
            hidden_dim, kernel_initializer=self._initializer(), dtype=self.dtype_policy, name="feedforward_output_dense"
        )
        self._feedforward_output_dense.build((*query_shape[:2], self.intermediate_dim))
        self._feedforward_dropout = keras.layers.Dropout(
            self.dropout, dtype=self.dtype_policy, name="feedforward_dropout"
        )
        self.built = True

    def call(self, sequence, attention_mask=None, training=None):
        i = self.token_index
        normed = self._self_attention_layer_norm(sequence)
        mask = None if attention_mask is None else attention_mask[:, i : i + 1, :]
        attended = self._self_attention_layer(
            query=normed[:, i : i + 1], value=normed, key=normed, attention_mask=mask, training=training
        )
        x = sequence[:, i : i + 1] + self._self_attention_dropout(attended, training=training)
        y = self._feedforward_output_dense(self._feedforward_intermediate_dense(self._feedforward_layer_norm(x)))
        x = x + self._feedforward_dropout(y, training=training)
        return x[:, 0]

    def compute_output_shape(self, sequence_shape, attention_mask_shape=None):
        return (sequence_shape[0], sequence_shape[-1])

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "token_index": self.token_index,
                "intermediate_dim": self.intermediate_dim,
                "num_heads": self.num_heads,
                "dropout": self.dropout,
                "activation": self.activation,
                "layer_norm_epsilon": self.layer_norm_epsilon,
                "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
            }
        )
        return config
