"""Frozen text encoders for listing texts: WordPiece ids -> a few pooled token states per text.

A listing text ("[CLS] title [SEP] description [SEP]", `camenn.preprocessing.text`) runs once through a
BERT preset (`camenn.model.bert`); its non-pad token states are split into `num_tokens` contiguous
segments of near-equal length and each segment is averaged (`segment_mean_pool`), so a text becomes
`num_tokens` vectors of the encoder's width whatever its length. With one token this is the
mean-pooled sentence embedding all-MiniLM-L6-v2 was trained to produce; more tokens keep the order of
what the title and the description say. `camenn preprocess` stores them per listing (computed once per
distinct text, cached by content), and CameNN reads them as its text tokens; in the end-to-end mode the
same pooling runs inside the model over a fine-tuned encoder.

| preset | output_dim |
| --- | --- |
| `all_minilm_l6_v2` | 384 |
| `bert_tiny` (tests) | 32 |
"""

import numpy as np

TEXT_ENCODER_PRESETS = ("all_minilm_l6_v2", "bert_tiny")


def segment_mean_pool(sequence, padding_mask, num_segments):
    """Averages the non-pad tokens of each row over `num_segments` contiguous segments (Keras ops).

    Row b's `n_b` non-pad tokens (a right-padded prefix) are split at `floor(i * n_b / num_segments)`; a
    segment left empty because `n_b < num_segments` takes the token at its start instead.

    Args:
        sequence: float [batch, length, dim] token states.
        padding_mask: bool or int [batch, length]; 1 for a real token.
        num_segments: int.

    Returns:
        float [batch, num_segments, dim].

    Example:
    ```python
    import numpy as np

    states = np.arange(8, dtype="float32").reshape(1, 4, 2)  # one row of 4 tokens, the last one padding
    pooled = segment_mean_pool(states, np.array([[1, 1, 1, 0]]), 2)
    assert np.asarray(pooled).tolist() == [[[1, 2], [4, 5]]]  # tokens 0-1, then token 2
    ```
    """
    from keras import ops

    mask = ops.cast(padding_mask, "float32")
    length = ops.maximum(ops.sum(mask, axis=1, keepdims=True), 1.0)  # [B, 1]
    positions = ops.cast(ops.arange(ops.shape(mask)[1]), "float32")[None, :]  # [1, L]
    segments = ops.cast(ops.arange(num_segments), "float32")[None, None, :]  # [1, 1, K]
    segment_of = ops.floor(positions * num_segments / length)[:, :, None]  # [B, L, 1]
    member = ops.cast(ops.equal(segment_of, segments), "float32") * mask[:, :, None]  # [B, L, K]
    empty = ops.cast(ops.equal(ops.sum(member, axis=1), 0.0), "float32")[:, None, :]  # [B, 1, K]
    start = ops.minimum(ops.floor(segments * length[:, :, None] / num_segments), length[:, :, None] - 1.0)
    fallback = ops.cast(ops.equal(positions[:, :, None], start), "float32") * empty
    weights = member + fallback
    weights = weights / ops.sum(weights, axis=1, keepdims=True)
    return ops.einsum("blk,bld->bkd", weights, ops.cast(sequence, "float32"))


class TextEncoder:
    """A frozen BERT: `encoder(token_ids)` maps int [N, length] ids to float32 [N, num_tokens, output_dim].

    Args:
        backbone: a `keras_hub.models.BertBackbone`.
        num_tokens: pooled tokens per text (`segment_mean_pool`).
        batch_size: texts per forward pass.

    Example:
    ```python
    import numpy as np

    encoder = load_text_encoder("bert_tiny", num_tokens=4)
    assert encoder(np.array([[101, 2000, 2001, 102, 102, 0]])).shape == (1, 4, 32)
    ```
    """

    def __init__(self, backbone, num_tokens, batch_size=64):
        import tensorflow as tf

        if num_tokens < 1 or batch_size < 1:
            raise ValueError(f"num_tokens and batch_size must be positive, got {num_tokens}, {batch_size}")
        self.backbone = backbone
        self.num_tokens = num_tokens
        self.batch_size = batch_size
        self.output_dim = int(backbone.hidden_dim)

        def encode(token_ids):
            mask = tf.not_equal(token_ids, 0)
            states = backbone(
                {"token_ids": token_ids, "segment_ids": tf.zeros_like(token_ids), "padding_mask": mask}, training=False
            )["sequence_output"]
            return segment_mean_pool(states, mask, num_tokens)

        self._encode = tf.function(encode, input_signature=[tf.TensorSpec([None, None], tf.int32)])

    def __call__(self, token_ids) -> np.ndarray:
        token_ids = np.asarray(token_ids)
        if token_ids.ndim != 2 or not np.issubdtype(token_ids.dtype, np.integer):
            raise ValueError(f"token_ids must be an integer [N, length] array, got {token_ids.dtype} {token_ids.shape}")
        if len(token_ids) == 0:
            return np.zeros((0, self.num_tokens, self.output_dim), np.float32)
        if (token_ids[:, 0] == 0).any():
            raise ValueError("a text has no tokens (its first id is [PAD])")
        ids = token_ids.astype(np.int32)
        return np.concatenate(
            [self._encode(ids[i : i + self.batch_size]).numpy() for i in range(0, len(ids), self.batch_size)]
        )


def load_text_encoder(preset: str, num_tokens: int, batch_size: int = 64) -> TextEncoder:
    """The frozen text encoder of BERT preset `preset` (TEXT_ENCODER_PRESETS, or a keras-hub preset folder
    holding a BertBackbone), pooling each text into `num_tokens` tokens; loads offline.

    Example:
    ```python
    import numpy as np
    from camenn.model.text_encoders import load_text_encoder

    encoder = load_text_encoder("all_minilm_l6_v2", num_tokens=4)
    token_ids = np.zeros((2, 64), "int64")  # as `camenn preprocess` writes them: right-padded with [PAD] = 0
    token_ids[:, :5] = [101, 7592, 2088, 999, 102]  # [CLS] hello world ! [SEP]
    embeddings = encoder(token_ids)
    assert embeddings.shape == (2, 4, 384) and embeddings.dtype == np.float32
    ```
    """
    import keras_hub

    from camenn.model import bert

    folder = bert.preset_dir(preset) if preset in bert.PRESETS else preset
    return TextEncoder(keras_hub.models.BertBackbone.from_preset(folder), num_tokens, batch_size=batch_size)
