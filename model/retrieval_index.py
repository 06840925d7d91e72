"""The top-K index inside a retrieval SavedModel: every listing's candidate vector and what a client shows.

It computes what `tfrs.layers.factorized_top_k.BruteForce` computes (every candidate scored by a dot
product with the query, then `tf.math.top_k`), in core TensorFlow ops over variables of unknown shape, so
that the index of a loaded SavedModel can be refilled with any number of listings (new listings scored by
the model's candidate tower, without retraining) and saved again, and stock TensorFlow Serving loads it.
A test checks that it returns what TFRS's BruteForce returns.

TensorFlow only: the serving side (`camenn.serving.retrieval_index`) fills and reads it without Keras.
"""

import numpy as np
import tensorflow as tf

from camenn.model import features

# What the index holds per listing besides its vector: display columns, how often the listing was clicked
# in the training split (the fallback ranking for a shopper the model does not know), and its out-of-fold
# alignment min(ITA, TIA) from the listing audit (NaN where the listing was not audited).
POPULARITY = "popularity"
ALIGNMENT = "alignment"
EMBEDDINGS = "embeddings"
ITEM_IDS = "item_ids"
STRING_COLUMNS = (features.TITLE, features.CATEGORY, features.MERCHANT_ID)
FLOAT_COLUMNS = (features.PRICE, POPULARITY, ALIGNMENT)


class RetrievalIndex(tf.Module):
    """Listings' candidate vectors and columns, scored against query vectors (see the module docstring).

    Rows are kept in item id order, so that ties (e.g. equal popularity) always break the same way.

    Example:
    ```python
    import numpy as np
    import tensorflow as tf

    index = RetrievalIndex()
    index.assign(["item_b", "item_a", "item_c"], np.eye(3, 4, dtype="float32"),  # numpy, one row per listing
                 {"title": ["B", "A", "C"], "popularity": [5.0, 1.0, 0.0]})     # a missing column: '' or NaN
    queries = tf.constant([[0.0, 1.0, 0.5, 0.0], [1.0, 0.0, 0.0, 0.0]])
    scores, rows = index.top_k(queries, known=tf.constant([True, False]), k=2)
    found = index.gather(rows)
    assert found["item_id"].numpy().tolist() == [[b"item_a", b"item_c"],  # by dot product
                                                 [b"item_b", b"item_a"]]  # unknown shopper: by popularity
    assert found["title"].numpy().tolist()[0] == [b"A", b"C"] and scores.shape == (2, 2)
    ```
    """

    def __init__(self, name="retrieval_index"):
        super().__init__(name=name)
        self.item_ids = tf.Variable(
            tf.zeros([0], tf.string), shape=tf.TensorShape(None), trainable=False, name=ITEM_IDS
        )
        self.embeddings = tf.Variable(
            tf.zeros([0, 0], tf.float32), shape=tf.TensorShape(None), trainable=False, name=EMBEDDINGS
        )
        self.columns = {
            name: tf.Variable(tf.zeros([0], tf.string), shape=tf.TensorShape(None), trainable=False, name=name)
            for name in STRING_COLUMNS
        }
        self.columns.update(
            {
                name: tf.Variable(tf.zeros([0], tf.float32), shape=tf.TensorShape(None), trainable=False, name=name)
                for name in FLOAT_COLUMNS
            }
        )

    def top_k(self, queries, known, k):
        """(scores [B, k'], rows [B, k']) with k' = min(k, listings): the dot product of each query with
        every candidate, or for a row whose `known` is False the listing's log(1 + clicks) (popularity)."""
        embeddings = tf.ensure_shape(self.embeddings, [None, None])
        scores = tf.matmul(queries, embeddings, transpose_b=True)
        popular = tf.math.log1p(tf.ensure_shape(self.columns[POPULARITY], [None]))[tf.newaxis, :]
        scores = tf.where(known[:, tf.newaxis], scores, popular + tf.zeros_like(scores))
        k = tf.minimum(tf.cast(k, tf.int32), tf.shape(embeddings)[0])
        return tf.math.top_k(scores, k=k, sorted=True)

    def gather(self, rows):
        """Item ids and columns of the rows `top_k` returned."""
        return {
            features.ITEM_ID: tf.gather(self.item_ids, rows),
            **{name: tf.gather(value, rows) for name, value in self.columns.items()},
        }

    def assign(self, item_ids, embeddings, columns):
        """Fills the index (eagerly, numpy in): see `fill`."""
        fill(self, item_ids, embeddings, columns)


def fill(index, item_ids, embeddings, columns):
    """Fills a `RetrievalIndex`, or the same object restored from a SavedModel (whose Python methods are
    not restored, only its variables), eagerly from numpy: rows sorted by item id; a column missing from
    `columns` gets '' or NaN."""
    ids = np.asarray(
        [i.encode() if isinstance(i, str) else bytes(i) for i in np.asarray(item_ids).reshape(-1)], dtype=object
    )
    if len(set(ids)) != len(ids):
        raise ValueError("the retrieval index needs unique item ids")
    order = np.argsort(ids, kind="stable")
    index.item_ids.assign(ids[order].astype(bytes))
    index.embeddings.assign(np.asarray(embeddings, np.float32).reshape(len(ids), -1)[order])
    for name in (*STRING_COLUMNS, *FLOAT_COLUMNS):
        variable = index.columns[name]
        if name in columns:
            value = np.asarray(columns[name]).reshape(-1)[order]
        elif name in STRING_COLUMNS:
            value = np.full(len(ids), b"", dtype=object)
        else:
            value = np.full(len(ids), np.nan, dtype=np.float32)
        variable.assign(value.astype(bytes) if name in STRING_COLUMNS else value.astype(np.float32))
