"""Exports a trained `TwoTowerRetrieval` as a SavedModel that stock TensorFlow Serving loads.

Signatures, all on core TensorFlow ops (no Keras, tf_keras or TFRS is needed to load or call them):
- `serving_default`: `shopper_id` (string [batch]), `hour` (int64 [batch], 0..23) -> the top K listings per
  request from the version's index (`camenn.model.retrieval_index`): `item_id`, `score` [batch, K], the
  index's display columns `title`, `category`, `merchant_id`, `price`, the listing audit's `alignment`,
  `popularity` [batch, K], and `known_shopper` (bool [batch]). A shopper the vocabulary does not know
  (no click in the training split) has no trained vector: their top K are the most clicked listings,
  scored log(1 + clicks), and `known_shopper` says so.
- `query`: the same inputs -> `query_embedding` [batch, D] and `known_shopper`.
- `encode_candidates`: raw listing features [batch, ...] -> `candidate_embedding` [batch, D] and
  `popularity` (training clicks of the listing; 0 for one the vocabulary does not know): what the index
  holds per listing, so that any listing, new ones included, can be indexed without retraining.
K is min(`top_k`, listings in the index). The index is written empty here and filled from a catalog
afterwards (`camenn.serving.retrieval_index.write_index`, the pipeline's `RetrievalIndex` step).

With a `transform` (tf.Transform's `TransformFeaturesLayer`) the signatures take raw features and the
vocabularies run inside the graph, as in the ranker's export. An hour outside 0..23 is refused.
"""

import numpy as np
import tensorflow as tf

from camenn.model import features as F
from camenn.model.retrieval.retrieval_towers import CANDIDATE_FEATURES, QUERY_FEATURES
from camenn.model.retrieval_index import POPULARITY, RetrievalIndex

QUERY_SIGNATURE = "query"
ENCODE_CANDIDATES_SIGNATURE = "encode_candidates"
SCORE = "score"
KNOWN_SHOPPER = "known_shopper"
QUERY_EMBEDDING = "query_embedding"
CANDIDATE_EMBEDDING = "candidate_embedding"


def _dense_spec(feature, name):
    shape = [] if list(feature.shape) in ([], [1]) else list(feature.shape)
    dtype = tf.int64 if feature.dtype == tf.int64 else feature.dtype
    return tf.TensorSpec([None, *shape], dtype, name=name)


class RetrievalServingModule(tf.Module):
    """The serving graph around a trained model's towers (see the module docstring).

    Only the towers' variables are tracked, not the tf_keras layers: the SavedModel's object graph holds
    variables, the transform's resources and the index, and its functions hold core ops.
    """

    def __init__(
        self, model, transform, raw_feature_spec, transform_trackables, known_shoppers, item_click_counts, top_k
    ):
        super().__init__(name="camenn_retrieval")
        # Not tracked (object.__setattr__ skips tf.Module's tracking): the tf_keras layers stay out of the
        # SavedModel's object graph; the functions capture their variables.
        object.__setattr__(self, "_model", model)
        self.transform_trackables = list(transform_trackables)
        self.tower_variables = list(model.query_tower.variables) + list(model.candidate_tower.variables)
        self.item_click_counts = tf.Variable(
            np.asarray(item_click_counts, np.float32), trainable=False, name="item_click_counts"
        )
        self.index = RetrievalIndex()
        self.known_shoppers = int(known_shoppers)
        self.top_k = int(top_k)
        self._transform = transform
        self._raw_spec = dict(raw_feature_spec)

    def _transformed(self, raw):
        checked = {name: tf.reshape(value, [-1, *self._raw_spec[name].shape]) for name, value in raw.items()}
        out = self._transform(checked) if self._transform is not None else checked
        return {
            name: (
                tf.reshape(out[name], [-1])
                if out[name].shape.rank == 2
                and out[name].shape[1] == 1
                and name not in (F.TEXT_EMBEDDINGS, F.PATCH_EMBEDDINGS)
                else out[name]
            )
            for name in raw
        }

    def _query(self, shopper_id, hour):
        check = tf.debugging.Assert(
            tf.reduce_all((hour >= 0) & (hour < F.INTEGER_FEATURES[F.HOUR])),
            ["feature 'hour' must lie in [0, 24); got values from", tf.reduce_min(hour), "to", tf.reduce_max(hour)],
        )
        with tf.control_dependencies([check]):
            inputs = self._transformed({F.SHOPPER_ID: shopper_id, F.HOUR: tf.identity(hour)})
        vectors = self._model.query_tower({name: inputs[name] for name in QUERY_FEATURES}, training=False)
        return vectors, inputs[F.SHOPPER_ID] < self.known_shoppers

    def query(self, shopper_id, hour):
        vectors, known = self._query(shopper_id, hour)
        return {QUERY_EMBEDDING: vectors, KNOWN_SHOPPER: known}

    def retrieve(self, shopper_id, hour):
        vectors, known = self._query(shopper_id, hour)
        scores, rows = self.index.top_k(vectors, known, self.top_k)
        return {SCORE: scores, KNOWN_SHOPPER: known, **self.index.gather(rows)}

    def encode_candidates(self, raw):
        inputs = self._transformed(raw)
        vectors = self._model.candidate_tower({name: inputs[name] for name in CANDIDATE_FEATURES}, training=False)
        return {CANDIDATE_EMBEDDING: vectors, POPULARITY: tf.gather(self.item_click_counts, inputs[F.ITEM_ID])}

    def signatures(self):
        request = [tf.TensorSpec([None], tf.string, name=F.SHOPPER_ID), tf.TensorSpec([None], tf.int64, name=F.HOUR)]
        listing = {name: _dense_spec(self._raw_spec[name], name) for name in CANDIDATE_FEATURES}
        retrieve = tf.function(self.retrieve, input_signature=request)
        query = tf.function(self.query, input_signature=request)
        encode = tf.function(self.encode_candidates, input_signature=[listing])
        return {
            "serving_default": retrieve.get_concrete_function(),
            QUERY_SIGNATURE: query.get_concrete_function(),
            ENCODE_CANDIDATES_SIGNATURE: encode.get_concrete_function(),
        }


def _build_towers(model):
    """Creates the towers' variables (one call on a zero row) if `fit` has not: an untrained model exports too."""
    tower = model.candidate_tower
    model.query_tower({F.SHOPPER_ID: tf.zeros([1], tf.int64), F.HOUR: tf.zeros([1], tf.int64)})
    tower(
        {
            **{name: tf.zeros([1], tf.int64) for name in (F.ITEM_ID, F.MERCHANT_ID, F.CATEGORY, F.COARSE_CATEGORY)},
            F.PRICE: tf.zeros([1]),
            F.TEXT_EMBEDDINGS: tf.zeros([1, tower.num_text_tokens * tower.text_dim]),
            F.PATCH_EMBEDDINGS: tf.zeros([1, tower.num_patches * tower.patch_dim]),
        }
    )


def export_retrieval_model(
    model,
    export_dir,
    *,
    raw_feature_spec,
    known_shoppers,
    item_click_counts,
    top_k=100,
    transform=None,
    transform_trackables=(),
):
    """Writes the retrieval SavedModel (module docstring) with an empty index.

    Args:
        model: a trained `TwoTowerRetrieval`.
        export_dir: the SavedModel folder to write.
        raw_feature_spec: tf.io feature spec of every raw input the signatures take (`shopper_id`, `hour`
            and the candidate tower's listing features).
        known_shoppers: shopper vocabulary indices below this are shoppers the model trained on (Transform's
            vocabulary size, OOV buckets excluded).
        item_click_counts: float [item vocabulary size]: training clicks per item index (the popularity).
        top_k: listings `serving_default` returns per request.
        transform: raw features -> model inputs (tf.Transform's layer); None: the inputs are indices already.
        transform_trackables: objects that own the transform's tables and files, saved with the model.

    Example:
    ```python
    import numpy as np
    import tensorflow as tf
    from camenn.model import features as F
    from camenn.model.retrieval import TwoTowerRetrieval
    from camenn.serving.retrieval_index import write_index

    # Raw ids -> vocabulary indices, an unknown id -> the OOV index: tf.Transform's layer in the pipeline.
    class ToIndices(tf.Module):
        def __init__(self, vocabulary):
            super().__init__()
            self.table = tf.lookup.StaticHashTable(tf.lookup.KeyValueTensorInitializer(
                tf.constant(vocabulary), tf.range(len(vocabulary), dtype=tf.int64)), default_value=len(vocabulary))

        def __call__(self, raw):
            return {name: self.table.lookup(v) if v.dtype == tf.string else v for name, v in raw.items()}

    ids = ["a", "b", "c", "d"]  # for brevity, the vocabulary of every id feature (shoppers, items, merchants, ...)
    lookup = ToIndices(ids)
    model = TwoTowerRetrieval.from_preset(  # `fit` it first (TwoTowerRetrieval); untrained, it exports too
        "retrieval_tiny", vocabulary_sizes={name: len(ids) + 1 for name in F.ID_FEATURES},
        num_text_tokens=2, text_dim=4, num_patches=2, patch_dim=4)
    spec = {**{name: tf.io.FixedLenFeature([], tf.string) for name in F.ID_FEATURES},
            F.HOUR: tf.io.FixedLenFeature([], tf.int64), F.PRICE: tf.io.FixedLenFeature([], tf.float32),
            F.TEXT_EMBEDDINGS: tf.io.FixedLenFeature([2 * 4], tf.float32),
            F.PATCH_EMBEDDINGS: tf.io.FixedLenFeature([2 * 4], tf.float32)}
    export_retrieval_model(model, "outputs/retrieval_empty_index", raw_feature_spec=spec, known_shoppers=len(ids),
                           item_click_counts=np.array([3, 1, 0, 2, 0], np.float32),  # a, b, c, d, OOV
                           top_k=2, transform=lookup, transform_trackables=[lookup])

    # Fill the index from the catalog with the version's own candidate tower (the RetrievalIndex step).
    rng = np.random.default_rng(0)
    catalog = {F.ITEM_ID: np.array(ids, object), F.TITLE: np.array(["A", "B", "C", "D"], object),
               F.MERCHANT_ID: np.array(["a", "a", "b", "b"], object), F.CATEGORY: np.array(ids, object),
               F.COARSE_CATEGORY: np.array(["a", "a", "b", "b"], object), F.PRICE: rng.normal(size=4).astype("float32"),
               F.TEXT_EMBEDDINGS: rng.normal(size=(4, 8)).astype("float32"),
               F.PATCH_EMBEDDINGS: rng.normal(size=(4, 8)).astype("float32")}
    write_index("outputs/retrieval_empty_index", catalog, "outputs/serving_model/camenn_retrieval/1")

    retrieve = tf.saved_model.load("outputs/serving_model/camenn_retrieval/1").signatures["serving_default"]
    found = retrieve(shopper_id=tf.constant(["b", "zoe"]), hour=tf.constant([9, 21], tf.int64))
    assert found["item_id"].shape == (2, 2) and found["known_shopper"].numpy().tolist() == [True, False]
    assert found["item_id"][1].numpy().tolist() == [b"a", b"d"]  # an unknown shopper: the most clicked listings
    ```
    """
    _build_towers(model)
    module = RetrievalServingModule(
        model, transform, raw_feature_spec, transform_trackables, known_shoppers, item_click_counts, top_k
    )
    tf.saved_model.save(module, str(export_dir), signatures=module.signatures())
    return export_dir
