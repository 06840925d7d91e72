"""`TwoTowerRetrieval`: the query and candidate towers trained on click events with
`tfrs.tasks.Retrieval` (in-batch softmax: each click's listing against the other clicks' listings).
"""

import copy

import tensorflow as tf
import tf_keras

from camenn.model import features as F
from camenn.model.retrieval.retrieval_presets import retrieval_presets
from camenn.model.retrieval.retrieval_towers import CANDIDATE_FEATURES, QUERY_FEATURES, CandidateTower, QueryTower

# Per click: the share of training clicks that went to its listing (the chance it appears as an in-batch
# negative), for the logQ correction of the sampled softmax.
SAMPLING_PROBABILITY = "sampling_probability"


def check_keras_2():
    """Raises ImportError unless `tf.keras` is Keras 2, which TensorFlow Recommenders needs."""
    version = getattr(tf.keras, "version", lambda: "2")()  # Keras 2's tf.keras has no version()
    if version.startswith("3"):
        raise ImportError(
            f"tf.keras is Keras {version} in this process: something used tf.keras before "
            "camenn.model.retrieval set TF_USE_LEGACY_KERAS=1. Import camenn.model.retrieval (or "
            "tensorflow_transform) first, or set TF_USE_LEGACY_KERAS=1 in the environment."
        )


check_keras_2()
import tensorflow_recommenders as tfrs  # noqa: E402  (after the check: it fails obscurely on Keras 3)


class TwoTowerRetrieval(tfrs.models.Model):
    """Two towers and TFRS's retrieval task; `fit` on click batches trains both.

    The loss is TFRS's sampled softmax over the batch: each click's request must score its own listing
    above the other listings of the batch. Two corrections: the other clicks of the same listing are not
    counted as negatives (`remove_accidental_hits`), and each candidate's logit is lowered by the log of
    how often it is clicked (`sampling_correction`, the logQ correction), since a popular listing is a
    negative in many batches; without it the model learns to rank popular listings down.

    Args:
        vocabulary_sizes: dict. Transform's vocabulary sizes plus OOV buckets, per id feature.
        num_text_tokens, text_dim, num_patches, patch_dim: the cached encodings' layout.
        embedding_dim, id_dim, hidden_dims, dropout, item_id_dropout: the towers' (see `QueryTower`,
            `CandidateTower`).
        temperature: float. Divides the cosine scores in the loss.
        remove_accidental_hits, sampling_correction: bool. See above.
        learning_rate: float. Adam's, used by `compile()` without arguments.

    Example:
    ```python
    import numpy as np
    import tensorflow as tf
    from camenn.model import features as F
    from camenn.model.retrieval.retrieval_model import SAMPLING_PROBABILITY
    from camenn.model.retrieval.retrieval_towers import CANDIDATE_FEATURES

    model = TwoTowerRetrieval.from_preset(
        "retrieval_tiny", vocabulary_sizes={name: 50 for name in F.ID_FEATURES},
        num_text_tokens=4, text_dim=32, num_patches=4, patch_dim=192)

    rng = np.random.default_rng(0)
    n = 64
    clicks = {name: rng.integers(0, 50, n) for name in F.ID_FEATURES}  # indices, as Transform makes them
    clicks[F.HOUR] = rng.integers(0, 24, n)
    clicks[F.PRICE] = rng.normal(size=n).astype("float32")
    clicks[F.TEXT_EMBEDDINGS] = rng.normal(size=(n, 4 * 32)).astype("float32")
    clicks[F.PATCH_EMBEDDINGS] = rng.normal(size=(n, 4 * 192)).astype("float32")
    clicks[SAMPLING_PROBABILITY] = np.full(n, 1 / 50, "float32")  # share of the clicks that went to the listing

    model.compile()
    history = model.fit(tf.data.Dataset.from_tensor_slices(clicks).batch(16), epochs=2, verbose=0)
    queries = model.query_tower({F.SHOPPER_ID: clicks[F.SHOPPER_ID][:2], F.HOUR: clicks[F.HOUR][:2]})
    listings = model.candidate_tower({name: clicks[name][:3] for name in CANDIDATE_FEATURES})
    scores = tf.matmul(queries, listings, transpose_b=True)  # 2 requests x 3 listings
    assert len(history.history["loss"]) == 2 and scores.shape == (2, 3)
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
        item_id_dropout=0.5,
        temperature=0.25,
        remove_accidental_hits=True,
        sampling_correction=True,
        learning_rate=0.01,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self._config = dict(
            vocabulary_sizes={k: int(v) for k, v in vocabulary_sizes.items()},
            num_text_tokens=num_text_tokens,
            text_dim=text_dim,
            num_patches=num_patches,
            patch_dim=patch_dim,
            embedding_dim=embedding_dim,
            id_dim=id_dim,
            hidden_dims=tuple(hidden_dims),
            dropout=dropout,
            item_id_dropout=item_id_dropout,
            temperature=temperature,
            remove_accidental_hits=remove_accidental_hits,
            sampling_correction=sampling_correction,
            learning_rate=learning_rate,
        )
        self.query_tower = QueryTower(
            vocabulary_sizes[F.SHOPPER_ID], embedding_dim, id_dim, hidden_dims, dropout, name="query_tower"
        )
        self.candidate_tower = CandidateTower(
            vocabulary_sizes,
            num_text_tokens,
            text_dim,
            num_patches,
            patch_dim,
            embedding_dim,
            id_dim,
            hidden_dims,
            dropout,
            item_id_dropout=item_id_dropout,
            name="candidate_tower",
        )
        self.task = tfrs.tasks.Retrieval(temperature=temperature, remove_accidental_hits=remove_accidental_hits)
        self.sampling_correction = sampling_correction
        self.learning_rate = learning_rate

    @classmethod
    def from_preset(cls, preset, **kwargs):
        """A preset's architecture (`retrieval_presets`) with the data's arguments and any overrides."""
        if preset not in retrieval_presets:
            raise ValueError(f"unknown retrieval preset {preset!r}; choose one of {sorted(retrieval_presets)}")
        return cls(**{**copy.deepcopy(retrieval_presets[preset]["config"]), **kwargs})

    def get_config(self):
        return dict(self._config)

    def compile(self, optimizer=None, **kwargs):
        super().compile(optimizer=optimizer or tf_keras.optimizers.Adam(self.learning_rate), **kwargs)

    def compute_loss(self, inputs, training=False):
        queries = self.query_tower({name: inputs[name] for name in QUERY_FEATURES}, training=training)
        candidates = self.candidate_tower({name: inputs[name] for name in CANDIDATE_FEATURES}, training=training)
        probability = inputs.get(SAMPLING_PROBABILITY) if self.sampling_correction else None
        return self.task(
            queries,
            candidates,
            candidate_sampling_probability=probability,
            candidate_ids=inputs[F.ITEM_ID],
            compute_metrics=False,
        )
