"""Serving test helpers: SavedModels with CameNN's signatures, a synthetic catalog, requests, stubs.

`export_camenn_model` writes a real CameNN export (`camenn.model.camenn.export.export_saved_model`) of the
tiny preset with random weights, behind a raw-feature transform that maps ids through real hash tables
with an OOV row, as tf.Transform's vocabularies do in the pipeline's export, with its listing table filled
from the catalog (`camenn.serving.listings`): what the tests of the protocol, the keras-free load and the
bundle run against.

`ToyCameNN` is a small tf.Module with the same serving signatures (`serving_default`, `dense`, and the
id-based `rank` and `listings` over a real `ListingTable`) whose alignment scores are a real (fixed,
untrained) image-text agreement: the cosine between a listing's mean text token and its mean patch
embedding. It loads in a second, for tests of mechanics that load many versions.

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
from camenn.model.listing_table import DISPLAY_COLUMNS, ListingTable, sorted_table

TEXT_TOKENS, TEXT_DIM = 2, 6
NUM_PATCHES, PATCH_DIM = 4, 6
CATEGORIES = ("apple", "banana", "carrot", "milk")
MERCHANTS = ("m_small", "m_medium", "m_large")
WITHOUT_KERAS = Path(__file__).with_name("without_keras.py")
REPO_ROOT = Path(__file__).resolve().parents[2]
REQUEST = (F.ITEM_ID, F.SHOPPER_ID, F.HOUR, F.DISTANCE_KM)


def category_vectors():
    """Each category's direction in the toy's text and image spaces (its own axis, plus fixed noise)."""
    table = np.random.default_rng(7).normal(scale=0.3, size=(len(CATEGORIES), PATCH_DIM))
    table[np.arange(len(CATEGORIES)), np.arange(len(CATEGORIES))] += 1.0
    return table.astype(np.float32)


class ToyCameNN(tf.Module):
    """CameNN's serving signatures over a tiny fixed model (see the module docstring)."""

    def __init__(self, items, cvr_bias):
        super().__init__()
        item_ids = [item[F.ITEM_ID] for item in items]
        self.item_index = tf.lookup.StaticHashTable(
            tf.lookup.KeyValueTensorInitializer(tf.constant(item_ids), tf.range(1, len(items) + 1, dtype=tf.int64)),
            default_value=0,
        )
        self.item_bias = tf.Variable(np.linspace(-1, 1, len(items) + 1).astype(np.float32))
        self.cvr_bias = tf.Variable(float(cvr_bias))
        columns = {
            "text": np.stack([i[F.TEXT_EMBEDDINGS].reshape(TEXT_TOKENS, TEXT_DIM).mean(0) for i in items]),
            "image": np.stack([i[F.PATCH_EMBEDDINGS].reshape(NUM_PATCHES, PATCH_DIM).mean(0) for i in items]),
            **{
                name: np.array([i[name] for i in items], dtype=object if dtype == tf.string else np.float32)
                for name, dtype in DISPLAY_COLUMNS.items()
            },
        }
        self.table = ListingTable(
            {
                "text": (tf.float32, (TEXT_DIM,)),
                "image": (tf.float32, (PATCH_DIM,)),
                **{name: (dtype, ()) for name, dtype in DISPLAY_COLUMNS.items()},
            }
        )
        ids, fingerprints, columns = sorted_table(item_ids, columns)
        self.table.item_ids.assign(ids.astype(bytes))
        self.table.fingerprints.assign(fingerprints)
        for name, value in columns.items():
            self.table.columns[name].assign(value.astype(bytes) if value.dtype == object else value)

    def _scores(self, item_ids, text, image, price, shopper_ids, hour, distance):
        agreement = tf.reduce_sum(tf.math.l2_normalize(text, -1) * tf.math.l2_normalize(image, -1), -1)
        context = (
            0.1 * tf.cast(hour, tf.float32) / 23.0
            - 0.2 * distance
            - 0.01 * price
            + tf.cast(tf.strings.length(shopper_ids) % 3, tf.float32) * 0.1
        )
        bias = tf.gather(self.item_bias, self.item_index.lookup(item_ids))
        return {
            F.CVR: tf.sigmoid(self.cvr_bias + bias + context + agreement),
            F.ITA: tf.sigmoid(4.0 * agreement),
            F.TIA: tf.sigmoid(4.0 * agreement - 0.5),
        }

    def _from_raw(self, raw):
        text = tf.reduce_mean(tf.reshape(raw[F.TEXT_EMBEDDINGS], [-1, TEXT_TOKENS, TEXT_DIM]), 1)
        image = tf.reduce_mean(tf.reshape(raw[F.PATCH_EMBEDDINGS], [-1, NUM_PATCHES, PATCH_DIM]), 1)
        return self._scores(
            raw[F.ITEM_ID], text, image, raw[F.PRICE], raw[F.SHOPPER_ID], raw[F.HOUR], raw[F.DISTANCE_KM]
        )

    @tf.function(
        input_signature=[
            {
                **{name: tf.TensorSpec([None], tf.string, name=name) for name in F.ID_FEATURES},
                F.PRICE: tf.TensorSpec([None], tf.float32, name=F.PRICE),
                F.DISTANCE_KM: tf.TensorSpec([None], tf.float32, name=F.DISTANCE_KM),
                F.HOUR: tf.TensorSpec([None], tf.int64, name=F.HOUR),
                F.TEXT_EMBEDDINGS: tf.TensorSpec([None, TEXT_TOKENS * TEXT_DIM], tf.float32, name=F.TEXT_EMBEDDINGS),
                F.PATCH_EMBEDDINGS: tf.TensorSpec([None, NUM_PATCHES * PATCH_DIM], tf.float32, name=F.PATCH_EMBEDDINGS),
            }
        ]
    )
    def dense(self, raw):
        return self._from_raw(raw)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="examples")])
    def serve_examples(self, examples):
        return self._from_raw(tf.io.parse_example(examples, RAW_FEATURE_SPEC))

    @tf.function(
        input_signature=[
            {
                F.ITEM_ID: tf.TensorSpec([None], tf.string, name=F.ITEM_ID),
                F.SHOPPER_ID: tf.TensorSpec([None], tf.string, name=F.SHOPPER_ID),
                F.HOUR: tf.TensorSpec([None], tf.int64, name=F.HOUR),
                F.DISTANCE_KM: tf.TensorSpec([None], tf.float32, name=F.DISTANCE_KM),
            }
        ]
    )
    def rank(self, request):
        listing = self.table.gather(self.table.rows(request[F.ITEM_ID]), ["text", "image", F.PRICE])
        return self._scores(
            request[F.ITEM_ID],
            listing["text"],
            listing["image"],
            listing[F.PRICE],
            request[F.SHOPPER_ID],
            request[F.HOUR],
            request[F.DISTANCE_KM],
        )

    @tf.function(input_signature=[{F.ITEM_ID: tf.TensorSpec([None], tf.string, name=F.ITEM_ID)}])
    def listings(self, request):
        return self.table.gather(self.table.rows(request[F.ITEM_ID]), list(DISPLAY_COLUMNS))


def export_toy_model(directory, items, cvr_bias=0.0):
    """Writes a toy SavedModel to `directory` (a version folder) and returns it."""
    module = ToyCameNN(items, cvr_bias)
    signatures = {
        "serving_default": module.serve_examples.get_concrete_function(),
        "dense": module.dense.get_concrete_function(),
        "rank": module.rank.get_concrete_function(),
        "listings": module.listings.get_concrete_function(),
    }
    tf.saved_model.save(module, str(directory), signatures=signatures)
    return Path(directory)


def _bytes(values):
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=[v.encode() for v in values]))


def _floats(values):
    return tf.train.Feature(float_list=tf.train.FloatList(value=list(values)))


def _ints(values):
    return tf.train.Feature(int64_list=tf.train.Int64List(value=list(values)))


def make_catalog(num_items=36, seed=3):
    """Synthetic listings (`camenn preprocess`'s item features) and which of them carry another category's text."""
    rng = np.random.default_rng(seed)
    table = category_vectors()
    items, truth = [], {}
    for i in range(num_items):
        category = i % len(CATEGORIES)
        inaccurate = i % 6 == 5
        shown = (category + 1 + rng.integers(len(CATEGORIES) - 1)) % len(CATEGORIES) if inaccurate else category
        text = table[shown][None, :] + rng.normal(scale=0.3, size=(TEXT_TOKENS, TEXT_DIM))
        patches = table[category][None, :] + rng.normal(scale=0.3, size=(NUM_PATCHES, PATCH_DIM))
        item_id = f"item_{i:03d}"
        items.append(
            {
                F.ITEM_ID: item_id,
                F.MERCHANT_ID: MERCHANTS[i % len(MERCHANTS)],
                F.CATEGORY: CATEGORIES[category],
                F.COARSE_CATEGORY: CATEGORIES[category][:3],
                F.MERCHANT_SIZE: MERCHANTS[i % len(MERCHANTS)][2:],
                F.PRICE: float(10 + i % 7),
                F.TITLE: f"{CATEGORIES[shown].title()} no. {i}",
                F.TEXT_EMBEDDINGS: text.astype(np.float32).ravel(),
                F.PATCH_EMBEDDINGS: patches.astype(np.float32).ravel(),
            }
        )
        truth[item_id] = "inaccurate_text" if inaccurate else "ok"
    return items, truth


def item_example(item, **event):
    """A raw tf.Example as `camenn preprocess` writes it: the item's features (and title), plus event
    features when given (events carry no title)."""
    feature = {
        F.ITEM_ID: _bytes([item[F.ITEM_ID]]),
        F.MERCHANT_ID: _bytes([item[F.MERCHANT_ID]]),
        F.CATEGORY: _bytes([item[F.CATEGORY]]),
        F.COARSE_CATEGORY: _bytes([item[F.COARSE_CATEGORY]]),
        F.MERCHANT_SIZE: _bytes([item[F.MERCHANT_SIZE]]),
        F.PRICE: _floats([item[F.PRICE]]),
        F.TEXT_EMBEDDINGS: _floats(item[F.TEXT_EMBEDDINGS]),
        F.PATCH_EMBEDDINGS: _floats(item[F.PATCH_EMBEDDINGS]),
    }
    if event:
        feature.update(
            {
                F.SHOPPER_ID: _bytes([event["shopper_id"]]),
                F.HOUR: _ints([event["hour"]]),
                F.DISTANCE_KM: _floats([event["distance_km"]]),
                F.LABEL: _ints([event.get("converted", 0)]),
            }
        )
    else:
        feature[F.TITLE] = _bytes([item[F.TITLE]])
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


def event_examples(items, count=8):
    """Raw event tf.Examples (as OUT/examples/eval holds) for warmup requests."""
    return [
        item_example(items[i % len(items)], shopper_id=f"shopper_{i}", hour=(8 + i) % 24, distance_km=0.5 + i)
        for i in range(count)
    ]


class RawToModelInputs(tf.Module):
    """Raw features -> model inputs: ids through hash tables, unknown ids to a last OOV row; transforms the
    listing's or the request's features alone, as tf.Transform's layer does."""

    def __init__(self, vocabularies):
        super().__init__()
        self.tables = {
            name: tf.lookup.StaticHashTable(
                tf.lookup.KeyValueTensorInitializer(tf.constant(values), tf.range(len(values), dtype=tf.int64)),
                default_value=len(values),
            )
            for name, values in vocabularies.items()
        }

    def __call__(self, raw):
        return {**raw, **{name: table.lookup(raw[name]) for name, table in self.tables.items() if name in raw}}


RAW_FEATURE_SPEC = {
    **{name: tf.io.FixedLenFeature([], tf.string) for name in F.ID_FEATURES},
    F.PRICE: tf.io.FixedLenFeature([], tf.float32),
    F.DISTANCE_KM: tf.io.FixedLenFeature([], tf.float32),
    F.HOUR: tf.io.FixedLenFeature([], tf.int64),
    F.TEXT_EMBEDDINGS: tf.io.FixedLenFeature([TEXT_TOKENS * TEXT_DIM], tf.float32),
    F.PATCH_EMBEDDINGS: tf.io.FixedLenFeature([NUM_PATCHES * PATCH_DIM], tf.float32),
}


def catalog_columns(items):
    """The catalog as `camenn.serving.listings.read_listing_features` returns it: one array per feature."""
    return {
        name: np.array(
            [item[name].encode() if isinstance(item[name], str) else item[name] for item in items],
            dtype=object if isinstance(items[0][name], str) else None,
        )
        for name in items[0]
    }


def export_camenn_model(directory, items, seed=0):
    """The tiny CameNN preset (random weights) exported by camenn.model.camenn.export to `directory`, its
    listing table filled with `items`."""
    import shutil

    import keras

    from camenn.model.camenn import CameNNMultiTask
    from camenn.model.camenn.export import export_saved_model
    from camenn.serving.listings import write_listing_table

    vocabularies = {
        F.SHOPPER_ID: [f"shopper_{i}" for i in range(10)],
        F.ITEM_ID: [item[F.ITEM_ID] for item in items],
        F.MERCHANT_ID: list(MERCHANTS),
        F.CATEGORY: list(CATEGORIES),
        F.COARSE_CATEGORY: sorted({item[F.COARSE_CATEGORY] for item in items}),
    }
    keras.utils.set_random_seed(seed)
    model = CameNNMultiTask.from_preset(
        "camenn_tiny",
        vocabulary_sizes={name: len(values) + 1 for name, values in vocabularies.items()},
        num_text_tokens=TEXT_TOKENS,
        text_dim=TEXT_DIM,
        num_patches=NUM_PATCHES,
        patch_dim=PATCH_DIM,
    )
    lookup = RawToModelInputs(vocabularies)
    empty = Path(str(directory) + ".empty-table")
    export_saved_model(
        model, str(empty), transform=lookup, raw_feature_spec=RAW_FEATURE_SPEC, transform_trackables=[lookup]
    )
    write_listing_table(str(empty), catalog_columns(items), str(directory))
    shutil.rmtree(empty)
    return Path(directory)


def start_server_process(args, env=None, timeout=120):
    """`python -m camenn.serving.server ARGS` with keras & co. unimportable; returns (process, port) once it serves."""
    command = [sys.executable, str(WITHOUT_KERAS), "-m", "camenn.serving.server", "--port", "0", *args]
    process = subprocess.Popen(
        command,
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", **(env or {})},
    )
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
    arrays = {
        name: np.array([r[name].encode() for r in rows], dtype=object)
        for name in (F.ITEM_ID, F.MERCHANT_ID, F.CATEGORY, F.COARSE_CATEGORY)
    }
    arrays[F.SHOPPER_ID] = np.array([shopper.encode()] * n, dtype=object)
    arrays[F.PRICE] = np.array([r[F.PRICE] for r in rows], np.float32)
    arrays[F.DISTANCE_KM] = np.linspace(0.5, 3.0, n).astype(np.float32)
    arrays[F.HOUR] = np.arange(n, dtype=np.int64) % 24
    arrays[F.TEXT_EMBEDDINGS] = np.stack([r[F.TEXT_EMBEDDINGS] for r in rows])
    arrays[F.PATCH_EMBEDDINGS] = np.stack([r[F.PATCH_EMBEDDINGS] for r in rows])
    return arrays


def rank_inputs(items, n=5, shopper="shopper_1"):
    """The `rank` signature's inputs (item ids and the request) for the same rows as `dense_inputs`."""
    return {name: value for name, value in dense_inputs(items, n, shopper).items() if name in REQUEST}


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

        self.channel = grpc.insecure_channel(f"127.0.0.1:{port}", options=[("grpc.max_send_message_length", 256 << 20)])
        self.predict = prediction_service_pb2_grpc.PredictionServiceStub(self.channel)
        self.model = model_service_pb2_grpc.ModelServiceStub(self.channel)

    def status(self, model="camenn"):
        from tensorflow_serving.apis import get_model_status_pb2

        request = get_model_status_pb2.GetModelStatusRequest()
        request.model_spec.name = model
        return {s.version: s for s in self.model.GetModelStatus(request, timeout=10).model_version_status}
