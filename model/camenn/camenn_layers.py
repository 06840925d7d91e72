"""Small layers that turn CameNN's non-text inputs into tokens of the model width."""
import keras
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
    tokens = NumericFeatureEmbedding(hidden_dim=8)(np.array([[0.5, -1.0]], "float32"))  # (1, 2, 8)
    ```
    """

    def __init__(self, hidden_dim, intermediate_dim=16, **kwargs):
        super().__init__(**kwargs)
        self.hidden_dim = hidden_dim
        self.intermediate_dim = intermediate_dim

    def build(self, inputs_shape):
        num_features = inputs_shape[-1]
        self.inner_kernel = self.add_weight((num_features, self.intermediate_dim), name="inner_kernel",
                                            initializer="glorot_uniform")
        self.inner_bias = self.add_weight((num_features, self.intermediate_dim), name="inner_bias",
                                          initializer="zeros")
        self.outer_kernel = self.add_weight((num_features, self.intermediate_dim, self.hidden_dim),
                                            name="outer_kernel", initializer="glorot_uniform")
        self.outer_bias = self.add_weight((num_features, self.hidden_dim), name="outer_bias", initializer="zeros")

    def call(self, inputs):
        hidden = ops.gelu(inputs[:, :, None] * self.inner_kernel + self.inner_bias)
        return ops.einsum("bfi,fih->bfh", hidden, self.outer_kernel) + self.outer_bias

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
    tokens = TaskTokens(num_tasks=3, hidden_dim=8)(np.zeros((4, 5), "float32"))  # (4, 3, 8)
    ```
    """

    def __init__(self, num_tasks, hidden_dim, **kwargs):
        super().__init__(**kwargs)
        self.num_tasks = num_tasks
        self.hidden_dim = hidden_dim

    def build(self, reference_shape):
        self.tokens = self.add_weight((self.num_tasks, self.hidden_dim), name="tokens",
                                      initializer=keras.initializers.TruncatedNormal(stddev=0.02))

    def call(self, reference):
        batch_size = ops.shape(reference)[0]
        return ops.broadcast_to(ops.cast(self.tokens, self.compute_dtype)[None],
                                (batch_size, self.num_tasks, self.hidden_dim))

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
    layer = ModalityEmbedding(segment_lengths=[3, 64, 4, 8])
    tokens = layer(np.zeros((2, 79, 16), "float32"))
    ```
    """

    def __init__(self, segment_lengths, **kwargs):
        super().__init__(**kwargs)
        self.segment_lengths = [int(n) for n in segment_lengths]

    def build(self, tokens_shape):
        if tokens_shape[1] is not None and tokens_shape[1] != sum(self.segment_lengths):
            raise ValueError(f"segment_lengths {self.segment_lengths} sum to {sum(self.segment_lengths)}, "
                             f"but the sequence has {tokens_shape[1]} tokens")
        self.embeddings = self.add_weight((len(self.segment_lengths), tokens_shape[-1]), name="embeddings",
                                          initializer=keras.initializers.TruncatedNormal(stddev=0.02))

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
    unique, index = UniqueRows()(np.array([[1, 2], [3, 4], [1, 2]]))  # [[1, 2], [3, 4]], [0, 1, 0]
    ```
    """

    def call(self, rows):
        unique = tf.raw_ops.UniqueV2(x=rows, axis=[0], out_idx=tf.int32)
        return unique.y, unique.idx

    def compute_output_spec(self, rows):
        return (keras.KerasTensor((None, rows.shape[1]), dtype=rows.dtype),
                keras.KerasTensor((rows.shape[0],), dtype="int32"))
