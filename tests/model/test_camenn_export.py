"""export_saved_model: every signature in a fresh process without Keras/CameNN (the id-based `rank` and
`listings` once the listing table is filled), malformed inputs and unknown item ids refused with what is
wrong named, no duplicated variables, a transform with a vocabulary asset in front."""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow as tf

from camenn.model import features as F
from camenn.model.camenn import CameNNMultiTask
from camenn.model.camenn.export import export_saved_model
from camenn.model.listing_table import DISPLAY_COLUMNS
from camenn.serving.listings import write_listing_table

VOCABULARY = [f"id_{i}" for i in range(20)]  # the transform's table: index i, unknown -> 20
VOCABULARY_SIZES = {name: len(VOCABULARY) + 1 for name in F.ID_FEATURES}
NUM_PATCHES, PATCH_DIM, TEXT_TOKENS, TEXT_DIM = 2, 4, 2, 6

# Runs in a fresh interpreter where Keras, keras-hub, tensorflow_text and CameNN cannot be imported.
LOADER = textwrap.dedent("""
    import json, sys
    for blocked in ("keras", "keras_hub", "tensorflow_text", "camenn"):
        sys.modules[blocked] = None
    import numpy as np
    import tensorflow as tf

    plain_dir, transformed_dir, table_dir, inputs_path, out_path = sys.argv[1:]
    arrays = dict(np.load(inputs_path, allow_pickle=True))
    results = {"outputs": {}, "errors": {}}

    def features_of(row, spec):
        feature = {}
        for name, value in row.items():
            value = np.atleast_1d(value)
            if value.dtype.kind in "SO":
                feature[name] = tf.train.Feature(bytes_list=tf.train.BytesList(value=list(value)))
            elif value.dtype.kind == "f":
                feature[name] = tf.train.Feature(float_list=tf.train.FloatList(value=value))
            else:
                feature[name] = tf.train.Feature(int64_list=tf.train.Int64List(value=value))
        return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()

    def rows(prefix):
        batch = {k[len(prefix):]: v for k, v in arrays.items() if k.startswith(prefix)}
        n = len(next(iter(batch.values())))
        return batch, [{k: v[i] for k, v in batch.items()} for i in range(n)]

    def record(name, call):
        try:
            out = call()
            results["outputs"][name] = {k: [x.decode() if isinstance(x, bytes) else x for x in v.numpy().tolist()]
                                        for k, v in out.items()}
        except Exception as error:  # the message is what the test checks
            results["errors"][name] = f"{type(error).__name__}: {error}"

    for label, directory, prefix in (("plain", plain_dir, "model/"), ("transformed", transformed_dir, "raw/")):
        loaded = tf.saved_model.load(directory)
        serve, dense = loaded.signatures["serving_default"], loaded.signatures["dense"]
        batch, examples = rows(prefix)
        record(f"{label}/examples", lambda: serve(examples=tf.constant([features_of(r, None) for r in examples])))
        record(f"{label}/dense", lambda: dense(**{k: tf.constant(v) for k, v in batch.items()}))

    # Malformed inputs, on the export without a transform.
    loaded = tf.saved_model.load(plain_dir)
    serve, dense = loaded.signatures["serving_default"], loaded.signatures["dense"]
    batch, examples = rows("model/")
    def bad_example(**changes):
        row = dict(examples[0])
        for name, value in changes.items():
            if value is None:
                del row[name]
            else:
                row[name] = value
        return lambda: serve(examples=tf.constant([features_of(row, None)]))
    record("examples/missing price", bad_example(price=None))
    record("examples/int price", bad_example(price=np.array([3])))
    record("examples/short text", bad_example(text_embeddings=examples[0]["text_embeddings"][:5]))
    record("examples/unknown item index", bad_example(item_id=np.array([99])))
    record("examples/nan distance", bad_example(distance_km=np.array([np.nan], "float32")))
    record("examples/hour 24", bad_example(hour=np.array([24])))
    def bad_dense(name, value):
        tensors = {k: tf.constant(v) for k, v in batch.items()}
        if value is None:
            del tensors[name]
        else:
            tensors[name] = value
        return lambda: dense(**tensors)
    record("dense/missing hour", bad_dense("hour", None))
    record("dense/float64 price", bad_dense("price", tf.constant(batch["price"], tf.float64)))
    record("dense/short text", bad_dense("text_embeddings", tf.constant(batch["text_embeddings"][:, :5])))
    record("dense/price of rank 2", bad_dense("price", tf.constant(batch["price"][:, None])))
    record("dense/short batch", bad_dense("distance_km", tf.constant(batch["distance_km"][:2])))
    results["variables"] = len(tf.train.list_variables(plain_dir + "/variables/variables")) - 1

    # The listing table: ranking by item id, the listings' display columns, unknown ids named.
    loaded = tf.saved_model.load(table_dir)
    batch, _ = rows("raw/")
    request = {name: tf.constant(batch[name]) for name in ("item_id", "shopper_id", "hour", "distance_km")}
    record("table/rank", lambda: loaded.signatures["rank"](**request))
    record("table/listings", lambda: loaded.signatures["listings"](item_id=request["item_id"]))
    known = list(batch["item_id"])
    record("table/unknown ids", lambda: loaded.signatures["rank"](**{
        **request, "item_id": tf.constant([known[1], b"no_such_item", b"nor_this", known[2]])}))
    with open(out_path, "w") as f:
        json.dump(results, f)
""")


class VocabularyTransform(tf.Module):
    """Raw string ids -> indices through a table read from a vocabulary file (an asset), as tf.Transform
    does; scalar raw features come as [batch, 1], as tf.Transform's raw feature spec has them."""

    def __init__(self, vocabulary_file):
        super().__init__()
        self.vocabulary = tf.saved_model.Asset(vocabulary_file)
        initializer = tf.lookup.TextFileInitializer(
            self.vocabulary,
            tf.string,
            tf.lookup.TextFileIndex.WHOLE_LINE,
            tf.int64,
            tf.lookup.TextFileIndex.LINE_NUMBER,
        )
        self.table = tf.lookup.StaticHashTable(initializer, default_value=len(VOCABULARY))

    def __call__(self, raw):
        """Transforms what `raw` holds (the listing's or the request's features alone, or both)."""
        inputs = {
            name: tf.squeeze(raw[name], axis=1) for name in (*F.INTEGER_FEATURES, *F.NUMERIC_FEATURES) if name in raw
        }
        inputs.update({name: self.table.lookup(tf.squeeze(raw[name], axis=1)) for name in F.ID_FEATURES if name in raw})
        inputs.update({name: raw[name] for name in (F.TEXT_EMBEDDINGS, F.PATCH_EMBEDDINGS) if name in raw})
        return inputs


RAW_FEATURE_SPEC = {
    **{name: tf.io.FixedLenFeature([1], tf.string) for name in F.ID_FEATURES},
    F.HOUR: tf.io.FixedLenFeature([1], tf.int64),
    **{name: tf.io.FixedLenFeature([1], tf.float32) for name in F.NUMERIC_FEATURES},
    F.TEXT_EMBEDDINGS: tf.io.FixedLenFeature([TEXT_TOKENS * TEXT_DIM], tf.float32),
    F.PATCH_EMBEDDINGS: tf.io.FixedLenFeature([NUM_PATCHES * PATCH_DIM], tf.float32),
}


def raw_batch(n=4, seed=0):
    rng = np.random.default_rng(seed)
    raw = {name: np.array([f"id_{i}".encode() for i in rng.integers(0, 20, n)], dtype=object) for name in F.ID_FEATURES}
    raw[F.ITEM_ID] = np.array([f"id_{i}".encode() for i in rng.permutation(20)[:n]], dtype=object)  # one row each
    raw[F.ITEM_ID][0] = b"never_seen"  # out of vocabulary: the table's default bucket
    raw[F.HOUR] = rng.integers(0, 24, n)
    raw.update({name: rng.normal(size=n).astype("float32") for name in F.NUMERIC_FEATURES})
    raw[F.TEXT_EMBEDDINGS] = rng.normal(size=(n, TEXT_TOKENS * TEXT_DIM)).astype("float32")
    raw[F.PATCH_EMBEDDINGS] = rng.normal(size=(n, NUM_PATCHES * PATCH_DIM)).astype("float32")
    return raw


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    root = tmp_path_factory.mktemp("export")
    model = CameNNMultiTask.from_preset(
        "camenn_tiny",
        vocabulary_sizes=VOCABULARY_SIZES,
        num_patches=NUM_PATCHES,
        patch_dim=PATCH_DIM,
        num_text_tokens=TEXT_TOKENS,
        text_dim=TEXT_DIM,
        compile=False,
    )
    vocabulary_file = root / "source" / "ids.txt"
    vocabulary_file.parent.mkdir()
    vocabulary_file.write_text("\n".join(VOCABULARY) + "\n")
    transform = VocabularyTransform(str(vocabulary_file))
    export_saved_model(model, root / "plain")
    export_saved_model(
        model,
        root / "transformed",
        transform=transform,
        raw_feature_spec=RAW_FEATURE_SPEC,
        transform_trackables=[transform],
    )
    raw = raw_batch()
    # The catalog: the batch's listings (one per item id) under display titles.
    _, first = np.unique(raw[F.ITEM_ID], return_index=True)
    listings = {
        name: raw[name][first]
        for name in (*F.ID_FEATURES, F.PRICE, F.TEXT_EMBEDDINGS, F.PATCH_EMBEDDINGS)
        if name != F.SHOPPER_ID
    }
    listings[F.TITLE] = np.array([b"title of " + i for i in listings[F.ITEM_ID]], dtype=object)
    write_listing_table(str(root / "transformed"), listings, str(root / "table"))
    vocabulary_file.unlink()  # the export must carry its own copy

    model_inputs = {
        name: value.numpy()
        for name, value in transform({k: tf.constant(v[:, None] if v.ndim == 1 else v) for k, v in raw.items()}).items()
    }
    expected = {"plain": model(model_inputs, training=False), "transformed": model(model_inputs, training=False)}
    inputs_path = root / "inputs.npz"
    np.savez(
        inputs_path, **{f"model/{k}": v for k, v in model_inputs.items()}, **{f"raw/{k}": v for k, v in raw.items()}
    )
    out_path = root / "results.json"
    script = root / "load.py"
    script.write_text(LOADER)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    done = subprocess.run(
        [
            sys.executable,
            str(script),
            str(root / "plain"),
            str(root / "transformed"),
            str(root / "table"),
            str(inputs_path),
            str(out_path),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return model, expected, json.loads(out_path.read_text()), raw


@pytest.mark.parametrize("export", ["plain", "transformed"])
@pytest.mark.parametrize("signature", ["examples", "dense"])
def test_both_signatures_reproduce_the_model_in_a_process_without_keras(exported, export, signature):
    _, expected, results, _ = exported
    name = f"{export}/{signature}"
    assert name in results["outputs"], results["errors"].get(name)
    got = results["outputs"][name]
    assert set(got) == set(F.TASKS)
    for task in F.TASKS:
        np.testing.assert_allclose(got[task], expected[export][task].numpy(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    "case,words",
    [
        ("examples/missing price", ["price", "required"]),
        ("examples/int price", ["price", "Data types don't match"]),
        ("examples/short text", ["text_embeddings", "Values size: 5"]),
        ("examples/unknown item index", ["'item_id' must lie in [0, 21)", "[99]"]),
        ("examples/nan distance", ["'distance_km' holds a NaN"]),
        ("examples/hour 24", ["'hour' must lie in [0, 24)"]),
        ("dense/missing hour", ["missing a required argument: 'hour'"]),
        ("dense/short text", ["'text_embeddings' must have shape [batch, 12]", "[4 5]"]),
        ("dense/price of rank 2", ["'price' must have shape [batch]", "[4 1]"]),
        ("dense/short batch", ["'distance_km' has a batch of", "[2]"]),
    ],
)
def test_malformed_inputs_are_refused_with_an_error_naming_the_feature(exported, case, words):
    _, _, results, _ = exported
    assert case not in results["outputs"], f"{case} was served"
    message = results["errors"][case].replace("\\'", "'")
    for word in words:
        assert word in message, message[:2000]


def test_a_wrong_dtype_in_the_dense_signature_is_refused(exported):
    # TensorFlow checks a signature's dtypes before the graph runs, and names the input by position.
    _, _, results, _ = exported
    assert "dense/float64 price" not in results["outputs"]
    assert "expected to be a float tensor but is a double tensor" in results["errors"]["dense/float64 price"]


def test_the_savedmodel_holds_each_model_variable_once(exported):
    model, _, results, _ = exported
    # The model's weights once each, and the listing table: item ids, fingerprints and one variable per column.
    states = {
        "shared_0_keys",
        "shared_0_values",
        "experts",
        "expert_weights",
        "expert_keys",
        "expert_values",
        "tower_keys",
        "tower_values",
        F.ITA,
        F.TIA,
    }
    assert results["variables"] == len(model.weights) + 2 + len(states) + len(DISPLAY_COLUMNS)


def test_rank_by_item_id_gives_the_full_models_scores_and_the_listings_their_titles(exported):
    _, expected, results, raw = exported
    assert "table/rank" in results["outputs"], results["errors"].get("table/rank")
    for task in F.TASKS:
        np.testing.assert_allclose(
            results["outputs"]["table/rank"][task], expected["transformed"][task].numpy(), rtol=1e-5, atol=1e-6
        )
    listings = results["outputs"]["table/listings"]
    assert listings[F.TITLE] == [f"title of {i.decode()}" for i in raw[F.ITEM_ID]]
    np.testing.assert_allclose(listings[F.PRICE], raw[F.PRICE], rtol=1e-6)


def test_unknown_item_ids_are_refused_with_every_unknown_id_named(exported):
    _, _, results, _ = exported
    assert "table/unknown ids" not in results["outputs"]
    message = results["errors"]["table/unknown ids"]
    assert "InvalidArgumentError" in message and "unknown item ids:] [no_such_item,nor_this]" in message
