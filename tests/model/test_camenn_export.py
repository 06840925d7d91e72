"""export_saved_model: both signatures in a fresh process without Keras/CameNN, malformed inputs refused
with the feature named, no duplicated variables, a transform with a vocabulary asset in front."""
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

VOCABULARY = [f"id_{i}" for i in range(20)]  # the transform's table: index i, unknown -> 20
VOCABULARY_SIZES = {name: len(VOCABULARY) + 1 for name in F.ID_FEATURES}
NUM_PATCHES, PATCH_DIM = 2, 4

# Runs in a fresh interpreter where Keras, keras-hub, tensorflow_text and CameNN cannot be imported.
LOADER = textwrap.dedent("""
    import json, sys
    for blocked in ("keras", "keras_hub", "tensorflow_text", "camenn"):
        sys.modules[blocked] = None
    import numpy as np
    import tensorflow as tf

    plain_dir, transformed_dir, inputs_path, out_path = sys.argv[1:]
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
            results["outputs"][name] = {k: v.numpy().tolist() for k, v in out.items()}
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
    record("examples/short text", bad_example(text_token_ids=examples[0]["text_token_ids"][:10]))
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
    record("dense/short text", bad_dense("text_token_ids", tf.constant(batch["text_token_ids"][:, :10])))
    record("dense/price of rank 2", bad_dense("price", tf.constant(batch["price"][:, None])))
    record("dense/short batch", bad_dense("distance_km", tf.constant(batch["distance_km"][:2])))
    results["variables"] = len(tf.train.list_variables(plain_dir + "/variables/variables")) - 1
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
            self.vocabulary, tf.string, tf.lookup.TextFileIndex.WHOLE_LINE, tf.int64,
            tf.lookup.TextFileIndex.LINE_NUMBER)
        self.table = tf.lookup.StaticHashTable(initializer, default_value=len(VOCABULARY))

    def __call__(self, raw):
        inputs = {name: tf.squeeze(raw[name], axis=1) for name in (*F.INTEGER_FEATURES, *F.NUMERIC_FEATURES)}
        inputs.update({name: self.table.lookup(tf.squeeze(raw[name], axis=1)) for name in F.ID_FEATURES})
        inputs[F.TEXT_TOKEN_IDS] = raw[F.TEXT_TOKEN_IDS]
        inputs[F.PATCH_EMBEDDINGS] = raw[F.PATCH_EMBEDDINGS]
        return inputs


RAW_FEATURE_SPEC = {
    **{name: tf.io.FixedLenFeature([1], tf.string) for name in F.ID_FEATURES},
    F.HOUR: tf.io.FixedLenFeature([1], tf.int64),
    **{name: tf.io.FixedLenFeature([1], tf.float32) for name in F.NUMERIC_FEATURES},
    F.TEXT_TOKEN_IDS: tf.io.FixedLenFeature([64], tf.int64),
    F.PATCH_EMBEDDINGS: tf.io.FixedLenFeature([NUM_PATCHES * PATCH_DIM], tf.float32),
}


def raw_batch(n=4, seed=0):
    rng = np.random.default_rng(seed)
    raw = {name: np.array([f"id_{i}".encode() for i in rng.integers(0, 20, n)], dtype=object)
           for name in F.ID_FEATURES}
    raw[F.ITEM_ID][0] = b"never_seen"  # out of vocabulary: the table's default bucket
    raw[F.HOUR] = rng.integers(0, 24, n)
    raw.update({name: rng.normal(size=n).astype("float32") for name in F.NUMERIC_FEATURES})
    raw[F.TEXT_TOKEN_IDS] = rng.integers(1000, 2000, (n, 64))
    raw[F.PATCH_EMBEDDINGS] = rng.normal(size=(n, NUM_PATCHES * PATCH_DIM)).astype("float32")
    return raw


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    root = tmp_path_factory.mktemp("export")
    model = CameNNMultiTask.from_preset("camenn_tiny", vocabulary_sizes=VOCABULARY_SIZES, num_patches=NUM_PATCHES,
                                        patch_dim=PATCH_DIM, compile=False)
    vocabulary_file = root / "source" / "ids.txt"
    vocabulary_file.parent.mkdir()
    vocabulary_file.write_text("\n".join(VOCABULARY) + "\n")
    transform = VocabularyTransform(str(vocabulary_file))
    export_saved_model(model, root / "plain")
    export_saved_model(model, root / "transformed", transform=transform, raw_feature_spec=RAW_FEATURE_SPEC,
                       transform_trackables=[transform])
    vocabulary_file.unlink()  # the export must carry its own copy

    raw = raw_batch()
    model_inputs = {name: value.numpy() for name, value in
                    transform({k: tf.constant(v[:, None] if v.ndim == 1 else v) for k, v in raw.items()}).items()}
    expected = {"plain": model(model_inputs, training=False),
                "transformed": model(model_inputs, training=False)}
    inputs_path = root / "inputs.npz"
    np.savez(inputs_path, **{f"model/{k}": v for k, v in model_inputs.items()},
             **{f"raw/{k}": v for k, v in raw.items()})
    out_path = root / "results.json"
    script = root / "load.py"
    script.write_text(LOADER)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    done = subprocess.run([sys.executable, str(script), str(root / "plain"), str(root / "transformed"),
                           str(inputs_path), str(out_path)], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return model, expected, json.loads(out_path.read_text())


@pytest.mark.parametrize("export", ["plain", "transformed"])
@pytest.mark.parametrize("signature", ["examples", "dense"])
def test_both_signatures_reproduce_the_model_in_a_process_without_keras(exported, export, signature):
    _, expected, results = exported
    name = f"{export}/{signature}"
    assert name in results["outputs"], results["errors"].get(name)
    got = results["outputs"][name]
    assert set(got) == set(F.TASKS)
    for task in F.TASKS:
        np.testing.assert_allclose(got[task], expected[export][task].numpy(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("case,words", [
    ("examples/missing price", ["price", "required"]),
    ("examples/int price", ["price", "Data types don't match"]),
    ("examples/short text", ["text_token_ids", "Values size: 10"]),
    ("examples/unknown item index", ["'item_id' must lie in [0, 21)", "[99]"]),
    ("examples/nan distance", ["'distance_km' holds a NaN"]),
    ("examples/hour 24", ["'hour' must lie in [0, 24)"]),
    ("dense/missing hour", ["missing a required argument: 'hour'"]),
    ("dense/short text", ["'text_token_ids' must have shape [batch, 64]", "[4 10]"]),
    ("dense/price of rank 2", ["'price' must have shape [batch]", "[4 1]"]),
    ("dense/short batch", ["'distance_km' has a batch of", "[2]"]),
])
def test_malformed_inputs_are_refused_with_an_error_naming_the_feature(exported, case, words):
    _, _, results = exported
    assert case not in results["outputs"], f"{case} was served"
    message = results["errors"][case].replace("\\'", "'")
    for word in words:
        assert word in message, message[:2000]


def test_a_wrong_dtype_in_the_dense_signature_is_refused(exported):
    # TensorFlow checks a signature's dtypes before the graph runs, and names the input by position.
    _, _, results = exported
    assert "dense/float64 price" not in results["outputs"]
    assert "expected to be a float tensor but is a double tensor" in results["errors"]["dense/float64 price"]


def test_the_savedmodel_holds_each_model_variable_once(exported):
    model, _, results = exported
    assert results["variables"] == len(model.weights)
