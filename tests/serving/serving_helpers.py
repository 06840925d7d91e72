"""Serving test helpers: SavedModels with contract 6's signatures, a synthetic catalog, requests, stubs.

`export_camenn_model` writes a real CameNN export (`camenn.model.camenn.export.export_saved_model`) of the
tiny preset with random weights, behind a raw-feature transform that maps ids through real hash tables
with an OOV row, as tf.Transform's vocabularies do in the pipeline's export: what the tests of the
protocol, the keras-free load and the bundle run against.

`ToyCameNN` is a small tf.Module with exactly the same signatures whose alignment scores are a real
(fixed, untrained) image-text agreement: the cosine between a listing's mean token embedding and its
patch embeddings. The synthetic catalog plants inaccurate texts (another category's tokens), so an audit
over it must find them, which an untrained CameNN cannot show. It also loads in a second, for tests of
mechanics that load many versions.

(A module of its own, not conftest.py: `import conftest` is ambiguous across test folders.)
"""
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import tensorflow as tf

from camenn.model import features as F

MAX_TEXT_LENGTH = 8
NUM_PATCHES, PATCH_DIM = 4, 6
VOCABULARY = 64
CATEGORIES = ("apple", "banana", "carrot", "milk")
MERCHANTS = ("m_small", "m_medium", "m_large")
WITHOUT_KERAS = Path(__file__).with_name("without_keras.py")
REPO_ROOT = Path(__file__).resolve().parents[2]


def category_tokens(category_index):
    """Each category's words: 4 token ids of its own (ids from 4 up; 0 is [PAD])."""
    return 4 + 4 * category_index + np.arange(4)


def token_embeddings():
    """The toy's fixed word vectors: a category's words point along that category's own axis."""
    table = np.random.default_rng(7).normal(scale=0.3, size=(VOCABULARY, PATCH_DIM))
    for category in range(len(CATEGORIES)):
        table[category_tokens(category), category] += 1.0
    return table.astype(np.float32)


class ToyCameNN(tf.Module):
    """Contract 6's serving signatures over a tiny fixed model (see the module docstring)."""

    def __init__(self, item_ids, cvr_bias):
        super().__init__()
        keys = tf.constant(list(item_ids))
        self.item_index = tf.lookup.StaticHashTable(
            tf.lookup.KeyValueTensorInitializer(keys, tf.range(1, len(item_ids) + 1, dtype=tf.int64)), default_value=0)
        self.item_bias = tf.Variable(np.linspace(-1, 1, len(item_ids) + 1).astype(np.float32))
        self.tokens = tf.Variable(token_embeddings())
        self.cvr_bias = tf.Variable(float(cvr_bias))

    def _scores(self, raw):
        item = self.item_index.lookup(raw[F.ITEM_ID])
        mask = tf.cast(raw[F.TEXT_TOKEN_IDS] > 0, tf.float32)[..., None]
        text = tf.reduce_sum(tf.gather(self.tokens, raw[F.TEXT_TOKEN_IDS]) * mask, 1) / tf.reduce_sum(mask, 1)
        image = tf.reduce_mean(tf.reshape(raw[F.PATCH_EMBEDDINGS], [-1, NUM_PATCHES, PATCH_DIM]), 1)
        agreement = tf.reduce_sum(tf.math.l2_normalize(text, -1) * tf.math.l2_normalize(image, -1), -1)
        context = (0.1 * tf.cast(raw[F.HOUR], tf.float32) / 23.0 - 0.2 * raw[F.DISTANCE_KM]
                   - 0.01 * raw[F.PRICE] + tf.cast(tf.strings.length(raw[F.SHOPPER_ID]) % 3, tf.float32) * 0.1)
        return {
            F.CVR: tf.sigmoid(self.cvr_bias + tf.gather(self.item_bias, item) + context + agreement),
            F.ITA: tf.sigmoid(4.0 * agreement),
            F.TIA: tf.sigmoid(4.0 * agreement - 0.5),
        }

    @tf.function(input_signature=[{
        **{name: tf.TensorSpec([None], tf.string, name=name) for name in F.ID_FEATURES},
        F.PRICE: tf.TensorSpec([None], tf.float32, name=F.PRICE),
        F.DISTANCE_KM: tf.TensorSpec([None], tf.float32, name=F.DISTANCE_KM),
        F.HOUR: tf.TensorSpec([None], tf.int64, name=F.HOUR),
        F.TEXT_TOKEN_IDS: tf.TensorSpec([None, MAX_TEXT_LENGTH], tf.int64, name=F.TEXT_TOKEN_IDS),
        F.PATCH_EMBEDDINGS: tf.TensorSpec([None, NUM_PATCHES * PATCH_DIM], tf.float32, name=F.PATCH_EMBEDDINGS),
    }])
    def dense(self, raw):
        return self._scores(raw)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="examples")])
    def serve_examples(self, examples):
        spec = {name: tf.io.FixedLenFeature([], tf.string) for name in F.ID_FEATURES}
        spec.update({F.PRICE: tf.io.FixedLenFeature([], tf.float32),
                     F.DISTANCE_KM: tf.io.FixedLenFeature([], tf.float32),
                     F.HOUR: tf.io.FixedLenFeature([], tf.int64),
                     F.TEXT_TOKEN_IDS: tf.io.FixedLenFeature([MAX_TEXT_LENGTH], tf.int64),
                     F.PATCH_EMBEDDINGS: tf.io.FixedLenFeature([NUM_PATCHES * PATCH_DIM], tf.float32)})
        return self._scores(tf.io.parse_example(examples, spec))


def export_toy_model(directory, item_ids, cvr_bias=0.0):
    """Writes a toy SavedModel to `directory` (a version folder) and returns it."""
    module = ToyCameNN(item_ids, cvr_bias)
    signatures = {"serving_default": module.serve_examples.get_concrete_function(),
                  "dense": module.dense.get_concrete_function()}
    tf.saved_model.save(module, str(directory), signatures=signatures)
    return Path(directory)


def _bytes(values):
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=[v.encode() for v in values]))


def _floats(values):
    return tf.train.Feature(float_list=tf.train.FloatList(value=list(values)))


def _ints(values):
    return tf.train.Feature(int64_list=tf.train.Int64List(value=list(values)))


def make_catalog(num_items=36, seed=3):
    """Synthetic listings (contract 2's item features) and which of them carry another category's text."""
    rng = np.random.default_rng(seed)
    table = token_embeddings()
    items, truth = [], {}
    for i in range(num_items):
        category = i % len(CATEGORIES)
        inaccurate = i % 6 == 5
        shown = (category + 1 + rng.integers(len(CATEGORIES) - 1)) % len(CATEGORIES) if inaccurate else category
        words = category_tokens(shown)
        tokens = np.zeros(MAX_TEXT_LENGTH, np.int64)
        tokens[:6] = [1, *rng.choice(words, 4), 2]  # [CLS] ... [SEP]-like
        image = table[category_tokens(category)].mean(0)
        patches = image[None, :] + rng.normal(scale=0.3, size=(NUM_PATCHES, PATCH_DIM))
        item_id = f"item_{i:03d}"
        items.append({
            F.ITEM_ID: item_id, F.MERCHANT_ID: MERCHANTS[i % len(MERCHANTS)],
            F.CATEGORY: CATEGORIES[category], F.COARSE_CATEGORY: CATEGORIES[category][:3],
            F.MERCHANT_SIZE: MERCHANTS[i % len(MERCHANTS)][2:], F.PRICE: float(10 + i % 7),
            F.TEXT_TOKEN_IDS: tokens, F.PATCH_EMBEDDINGS: patches.astype(np.float32).ravel(),
        })
        truth[item_id] = "inaccurate_text" if inaccurate else "ok"
    return items, truth


def item_example(item, **event):
    """A raw tf.Example of contract 2: the item's features, plus event features when given."""
    feature = {
        F.ITEM_ID: _bytes([item[F.ITEM_ID]]), F.MERCHANT_ID: _bytes([item[F.MERCHANT_ID]]),
        F.CATEGORY: _bytes([item[F.CATEGORY]]), F.COARSE_CATEGORY: _bytes([item[F.COARSE_CATEGORY]]),
        F.MERCHANT_SIZE: _bytes([item[F.MERCHANT_SIZE]]), F.PRICE: _floats([item[F.PRICE]]),
        F.TEXT_TOKEN_IDS: _ints(item[F.TEXT_TOKEN_IDS]), F.PATCH_EMBEDDINGS: _floats(item[F.PATCH_EMBEDDINGS]),
    }
    if event:
        feature.update({F.SHOPPER_ID: _bytes([event["shopper_id"]]), F.HOUR: _ints([event["hour"]]),
                        F.DISTANCE_KM: _floats([event["distance_km"]]), F.LABEL: _ints([event.get("converted", 0)])})
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


def event_examples(items, count=8):
    """Raw event tf.Examples (as OUT/examples/eval holds) for warmup requests."""
    return [item_example(items[i % len(items)], shopper_id=f"shopper_{i}", hour=(8 + i) % 24, distance_km=0.5 + i)
            for i in range(count)]


class RawToModelInputs(tf.Module):
    """Raw features -> model inputs (contract 5): ids through hash tables, unknown ids to a last OOV row."""

    def __init__(self, vocabularies):
        super().__init__()
        self.tables = {
            name: tf.lookup.StaticHashTable(tf.lookup.KeyValueTensorInitializer(
                tf.constant(values), tf.range(len(values), dtype=tf.int64)), default_value=len(values))
            for name, values in vocabularies.items()}

    def __call__(self, raw):
        return {**raw, **{name: table.lookup(raw[name]) for name, table in self.tables.items()}}


RAW_FEATURE_SPEC = {
    **{name: tf.io.FixedLenFeature([], tf.string) for name in F.ID_FEATURES},
    F.PRICE: tf.io.FixedLenFeature([], tf.float32),
    F.DISTANCE_KM: tf.io.FixedLenFeature([], tf.float32),
    F.HOUR: tf.io.FixedLenFeature([], tf.int64),
    F.TEXT_TOKEN_IDS: tf.io.FixedLenFeature([MAX_TEXT_LENGTH], tf.int64),
    F.PATCH_EMBEDDINGS: tf.io.FixedLenFeature([NUM_PATCHES * PATCH_DIM], tf.float32),
}


def export_camenn_model(directory, items, seed=0):
    """The tiny CameNN preset (random weights) exported by camenn.model.camenn.export to `directory`."""
    import keras
    from camenn.model.camenn import CameNNMultiTask
    from camenn.model.camenn.export import export_saved_model

    vocabularies = {
        F.SHOPPER_ID: [f"shopper_{i}" for i in range(10)],
        F.ITEM_ID: [item[F.ITEM_ID] for item in items],
        F.MERCHANT_ID: list(MERCHANTS),
        F.CATEGORY: list(CATEGORIES),
        F.COARSE_CATEGORY: sorted({item[F.COARSE_CATEGORY] for item in items}),
    }
    keras.utils.set_random_seed(seed)
    model = CameNNMultiTask.from_preset(
        "camenn_tiny", vocabulary_sizes={name: len(values) + 1 for name, values in vocabularies.items()},
        num_patches=NUM_PATCHES, patch_dim=PATCH_DIM, max_text_length=MAX_TEXT_LENGTH)
    lookup = RawToModelInputs(vocabularies)
    export_saved_model(model, str(directory), transform=lookup, raw_feature_spec=RAW_FEATURE_SPEC,
                       transform_trackables=[lookup])
    return Path(directory)


def start_server_process(args, env=None, timeout=120):
    """`python -m camenn.serving.server ARGS` with keras & co. unimportable; returns (process, port) once it serves."""
    command = [sys.executable, str(WITHOUT_KERAS), "-m", "camenn.serving.server", "--port", "0", *args]
    process = subprocess.Popen(command, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", **(env or {})})
    deadline = time.monotonic() + timeout
    lines = []
    for line in process.stdout:
        lines.append(line)
        if "serving gRPC on" in line:
            return process, int(line.rsplit(":", 1)[1].split()[0]), lines
        if time.monotonic() > deadline:
            break
    process.kill()
    raise AssertionError("server did not start:\n" + "".join(lines))


def dense_inputs(items, n=5, shopper="shopper_1"):
    """The `dense` signature's inputs for the first n catalog items, as numpy arrays."""
    rows = [items[i % len(items)] for i in range(n)]
    arrays = {name: np.array([r[name].encode() for r in rows], dtype=object)
              for name in (F.ITEM_ID, F.MERCHANT_ID, F.CATEGORY, F.COARSE_CATEGORY)}
    arrays[F.SHOPPER_ID] = np.array([shopper.encode()] * n, dtype=object)
    arrays[F.PRICE] = np.array([r[F.PRICE] for r in rows], np.float32)
    arrays[F.DISTANCE_KM] = np.linspace(0.5, 3.0, n).astype(np.float32)
    arrays[F.HOUR] = np.arange(n, dtype=np.int64) % 24
    arrays[F.TEXT_TOKEN_IDS] = np.stack([r[F.TEXT_TOKEN_IDS] for r in rows])
    arrays[F.PATCH_EMBEDDINGS] = np.stack([r[F.PATCH_EMBEDDINGS] for r in rows])
    return arrays


def predict_request(arrays, signature="dense", model="camenn", version=None):
    from tensorflow_serving.apis import predict_pb2

    request = predict_pb2.PredictRequest()
    request.model_spec.name = model
    request.model_spec.signature_name = signature
    if version is not None:
        request.model_spec.version.value = version
    for name, value in arrays.items():
        request.inputs[name].CopyFrom(tf.make_tensor_proto(value))
    return request


class Stubs:
    """PredictionService and ModelService stubs on one channel to localhost:port."""

    def __init__(self, port):
        import grpc
        from tensorflow_serving.apis import model_service_pb2_grpc, prediction_service_pb2_grpc

        self.channel = grpc.insecure_channel(f"127.0.0.1:{port}",
                                             options=[("grpc.max_send_message_length", 256 << 20)])
        self.predict = prediction_service_pb2_grpc.PredictionServiceStub(self.channel)
        self.model = model_service_pb2_grpc.ModelServiceStub(self.channel)

    def status(self, model="camenn"):
        from tensorflow_serving.apis import get_model_status_pb2

        request = get_model_status_pb2.GetModelStatusRequest()
        request.model_spec.name = model
        return {s.version: s for s in self.model.GetModelStatus(request, timeout=10).model_version_status}
