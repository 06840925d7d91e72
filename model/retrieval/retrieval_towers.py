"""The two towers of the retrieval model (Keras 2, `tf_keras`): a shopper's request and a listing, each to
one vector of the same width; their dot product is the retrieval score.

Both towers take Transform's outputs (vocabulary indices for ids, the hour 0..23, the z-scored log price,
the cached text and patch encodings), as the ranker does.
"""

import math

import tensorflow as tf
import tf_keras

from camenn.model import features as F

# What each tower reads.
QUERY_FEATURES = (F.SHOPPER_ID, F.HOUR)
CANDIDATE_FEATURES = (
    F.ITEM_ID,
    F.MERCHANT_ID,
    F.CATEGORY,
    F.COARSE_CATEGORY,
    F.PRICE,
    F.TEXT_EMBEDDINGS,
    F.PATCH_EMBEDDINGS,
)
_CANDIDATE_IDS = (F.ITEM_ID, F.MERCHANT_ID, F.CATEGORY, F.COARSE_CATEGORY)


def _mlp(hidden_dims, output_dim, dropout, name):
    layers = []
    for i, width in enumerate(hidden_dims):
        layers.append(tf_keras.layers.Dense(width, activation="relu", name=f"{name}_hidden_{i}"))
        if dropout:
            layers.append(tf_keras.layers.Dropout(dropout))
    layers.append(tf_keras.layers.Dense(output_dim, name=f"{name}_output"))
    return tf_keras.Sequential(layers, name=name)


class QueryTower(tf_keras.layers.Layer):
    """A request (shopper and local hour) to its query vector.

    The shopper's embedding carries their tastes; the hour, as an embedding and as a point on the 24-hour
    circle (so that 23h and 0h are neighbours), what people buy at that time of day.

    Args:
        shopper_vocabulary_size: int. Transform's shopper vocabulary plus its OOV buckets.
        embedding_dim: int. Width of the query (and candidate) vector.
        id_dim: int. Width of the shopper embedding (the hour's is half of it).
        hidden_dims: tuple of int. Hidden layers of the MLP over the concatenated features.
        dropout: float. Dropout after each hidden layer.
        normalize: bool. L2-normalise the output (the score is then a cosine).

    Example:
    ```python
    import numpy as np
    import tensorflow as tf

    tower = QueryTower(shopper_vocabulary_size=208, embedding_dim=16, id_dim=8, hidden_dims=(32,))
    vectors = tower({"shopper_id": tf.constant([0, 3]), "hour": tf.constant([8, 18])})  # vocabulary indices
    assert vectors.shape == (2, 16)
    assert np.allclose(tf.norm(vectors, axis=-1), 1.0)  # L2-normalised (`normalize`): the score is a cosine
    ```
    """

    def __init__(
        self,
        shopper_vocabulary_size,
        embedding_dim=64,
        id_dim=32,
        hidden_dims=(128,),
        dropout=0.0,
        normalize=True,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.shopper_vocabulary_size = shopper_vocabulary_size
        self.embedding_dim, self.id_dim, self.hidden_dims = embedding_dim, id_dim, tuple(hidden_dims)
        self.dropout, self.normalize = dropout, normalize
        self.shopper_embedding = tf_keras.layers.Embedding(
            shopper_vocabulary_size,
            id_dim,
            embeddings_initializer=tf_keras.initializers.RandomNormal(stddev=0.05),
            name="shopper_embedding",
        )
        self.hour_embedding = tf_keras.layers.Embedding(
            F.INTEGER_FEATURES[F.HOUR], max(1, id_dim // 2), name="hour_embedding"
        )
        self.mlp = _mlp(self.hidden_dims, embedding_dim, dropout, "query_mlp")

    def call(self, inputs, training=False):
        shopper = self.shopper_embedding(inputs[F.SHOPPER_ID])
        hour = tf.cast(inputs[F.HOUR], tf.int64)
        angle = tf.cast(hour, tf.float32) * (2.0 * math.pi / 24.0)
        parts = [shopper, self.hour_embedding(hour), tf.stack([tf.sin(angle), tf.cos(angle)], axis=-1)]
        vector = self.mlp(tf.concat(parts, axis=-1), training=training)
        return tf.math.l2_normalize(vector, axis=-1) if self.normalize else vector

    def get_config(self):
        return {
            **super().get_config(),
            "shopper_vocabulary_size": self.shopper_vocabulary_size,
            "embedding_dim": self.embedding_dim,
            "id_dim": self.id_dim,
            "hidden_dims": self.hidden_dims,
            "dropout": self.dropout,
            "normalize": self.normalize,
        }


class CandidateTower(tf_keras.layers.Layer):
    """A listing to its candidate vector, from its ids, price and cached text and image encodings.

    The id embeddings start at zero, and in training the item's own embedding is dropped for
    `item_id_dropout` of the rows: a listing the vocabulary does not know (new, never clicked in the
    training split: an OOV bucket, never trained, stays zero) still gets a vector from its category,
    merchant, price, text and photo, which the tower has learned to use on its own.

    Args:
        vocabulary_sizes: dict. Transform's vocabulary plus OOV buckets for item, merchant, category and
            coarse category.
        num_text_tokens, text_dim: the cached text encoding's layout ([num_text_tokens * text_dim] floats).
        num_patches, patch_dim: the cached patch embeddings' layout.
        embedding_dim, id_dim, hidden_dims, dropout, normalize: as `QueryTower`.
        item_id_dropout: float. Share of training rows whose item embedding is zeroed.

    Example:
    ```python
    import numpy as np

    tower = CandidateTower({"item_id": 60, "merchant_id": 16, "category": 20, "coarse_category": 12},
                           num_text_tokens=4, text_dim=32, num_patches=4, patch_dim=192, embedding_dim=16)
    rng = np.random.default_rng(0)
    listings = {"item_id": np.array([0, 59]), "merchant_id": np.array([1, 2]), "category": np.array([3, 4]),
                "coarse_category": np.array([5, 6]), "price": np.array([0.3, -1.2], "float32"),  # z-scored log
                "text_embeddings": rng.normal(size=(2, 4 * 32)).astype("float32"),    # 4 tokens of 32
                "patch_embeddings": rng.normal(size=(2, 4 * 192)).astype("float32")}  # 4 patches of 192
    vectors = tower(listings)
    assert vectors.shape == (2, 16)
    # The id embeddings start at zero: untrained, a listing's vector comes from its content alone.
    assert np.allclose(tower({**listings, "item_id": np.array([7, 8])}), vectors)
    ```
    """

    def __init__(
        self,
        vocabulary_sizes,
        num_text_tokens,
        text_dim,
        num_patches,
        patch_dim,
        embedding_dim=64,
        id_dim=32,
        hidden_dims=(128,),
        dropout=0.0,
        normalize=True,
        item_id_dropout=0.5,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.vocabulary_sizes = {name: int(vocabulary_sizes[name]) for name in _CANDIDATE_IDS}
        self.num_text_tokens, self.text_dim = num_text_tokens, text_dim
        self.num_patches, self.patch_dim = num_patches, patch_dim
        self.embedding_dim, self.id_dim, self.hidden_dims = embedding_dim, id_dim, tuple(hidden_dims)
        self.dropout, self.normalize, self.item_id_dropout = dropout, normalize, item_id_dropout
        self.id_embeddings = {
            name: tf_keras.layers.Embedding(size, id_dim, embeddings_initializer="zeros", name=f"{name}_embedding")
            for name, size in self.vocabulary_sizes.items()
        }
        self.text_projection = tf_keras.layers.Dense(embedding_dim, name="text_projection")
        self.image_projection = tf_keras.layers.Dense(embedding_dim, name="image_projection")
        self.mlp = _mlp(self.hidden_dims, embedding_dim, dropout, "candidate_mlp")

    def call(self, inputs, training=False):
        ids = {name: layer(inputs[name]) for name, layer in self.id_embeddings.items()}
        if training and self.item_id_dropout:
            keep = tf.cast(tf.random.uniform(tf.shape(ids[F.ITEM_ID])[:1]) >= self.item_id_dropout, tf.float32)
            ids[F.ITEM_ID] = ids[F.ITEM_ID] * keep[:, None]
        text = tf.reduce_mean(tf.reshape(inputs[F.TEXT_EMBEDDINGS], [-1, self.num_text_tokens, self.text_dim]), 1)
        image = tf.reduce_mean(tf.reshape(inputs[F.PATCH_EMBEDDINGS], [-1, self.num_patches, self.patch_dim]), 1)
        price = tf.reshape(tf.cast(inputs[F.PRICE], tf.float32), [-1, 1])
        parts = [ids[name] for name in _CANDIDATE_IDS] + [
            price,
            self.text_projection(tf.math.l2_normalize(text, -1)),
            self.image_projection(tf.math.l2_normalize(image, -1)),
        ]
        vector = self.mlp(tf.concat(parts, axis=-1), training=training)
        return tf.math.l2_normalize(vector, axis=-1) if self.normalize else vector

    def get_config(self):
        return {
            **super().get_config(),
            "vocabulary_sizes": self.vocabulary_sizes,
            "num_text_tokens": self.num_text_tokens,
            "text_dim": self.text_dim,
            "num_patches": self.num_patches,
            "patch_dim": self.patch_dim,
            "embedding_dim": self.embedding_dim,
            "id_dim": self.id_dim,
            "hidden_dims": self.hidden_dims,
            "dropout": self.dropout,
            "normalize": self.normalize,
            "item_id_dropout": self.item_id_dropout,
        }
