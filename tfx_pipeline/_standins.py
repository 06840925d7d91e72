"""TEMPORARY stand-ins for parts other helpers are building (issue 3 preprocess, issue 5 model).

Deleted once the real parts land; nothing here may remain.
"""
import json
import os

import numpy as np

from camenn.model import features as F


def preprocess(dataset_dir, output_dir, image_encoder, image_preset, grid, max_text_length, beam_args,
               cache_dir, num_events=600, seed=0):
    """Writes synthetic data in contract 2's layout (stand-in for camenn.preprocessing's entry point)."""
    import tensorflow as tf
    rng = np.random.default_rng(seed)
    num_patches, patch_dim = grid[0] * grid[1], 8
    num_items, num_shoppers = 40, 30
    cats = [f"cat{i}" for i in range(6)]
    items = []
    for i in range(num_items):
        c = i % len(cats)
        topic = rng.normal(size=(patch_dim,))
        items.append(dict(
            item_id=f"item{i}", merchant_id=f"m{i % 7}", category=f"{cats[c]}-{i % 3}", coarse_category=cats[c],
            merchant_size=["small", "medium", "large"][i % 3], price=float(rng.uniform(1, 20)),
            text=np.concatenate([[101], 1000 + c * 10 + rng.integers(0, 5, max_text_length - 2), [102]]),
            patches=np.tile(topic + c, num_patches) + rng.normal(scale=0.1, size=num_patches * patch_dim)))

    def example(it, ev=None):
        f = {
            F.ITEM_ID: [it["item_id"].encode()], F.MERCHANT_ID: [it["merchant_id"].encode()],
            F.CATEGORY: [it["category"].encode()], F.COARSE_CATEGORY: [it["coarse_category"].encode()],
            F.MERCHANT_SIZE: [it["merchant_size"].encode()], F.PRICE: [it["price"]],
            F.TEXT_TOKEN_IDS: it["text"].tolist(), F.PATCH_EMBEDDINGS: it["patches"].tolist()}
        if ev:
            f.update(ev)
        feat = {}
        for k, v in f.items():
            if isinstance(v[0], bytes):
                feat[k] = tf.train.Feature(bytes_list=tf.train.BytesList(value=v))
            elif isinstance(v[0], float):
                feat[k] = tf.train.Feature(float_list=tf.train.FloatList(value=v))
            else:
                feat[k] = tf.train.Feature(int64_list=tf.train.Int64List(value=[int(x) for x in v]))
        return tf.train.Example(features=tf.train.Features(feature=feat)).SerializeToString()

    def write(path, records):
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with tf.io.TFRecordWriter(path, options="GZIP") as w:
            for r in records:
                w.write(r)

    events = []
    for e in range(num_events):
        it = items[rng.integers(num_items)]
        shopper = int(rng.integers(num_shoppers))
        dist = float(rng.uniform(0, 10))
        p = 1 / (1 + np.exp(-(1.5 * ((shopper % 6) == int(it["coarse_category"][3:])) - 0.2 * dist + 0.3)))
        events.append((1_700_000_000 + e * 60, dict(
            request_id=[f"r{e}".encode()], shopper_id=[f"s{shopper}".encode()], timestamp=[1_700_000_000 + e * 60],
            hour=[e % 24], distance_km=[dist], converted=[int(rng.random() < p)]), it))
    cut = int(num_events * 0.8)
    write(os.path.join(output_dir, "examples/train/part-0.tfrecord.gz"), [example(it, ev) for _, ev, it in events[:cut]])
    write(os.path.join(output_dir, "examples/eval/part-0.tfrecord.gz"), [example(it, ev) for _, ev, it in events[cut:]])
    write(os.path.join(output_dir, "items/part-0.tfrecord.gz"), [example(it) for it in items])
    os.makedirs(os.path.join(output_dir, "quarantine"), exist_ok=True)
    with open(os.path.join(output_dir, "quarantine/events.csv"), "w") as f:
        f.write("row,reason\n")
    summary = {"rows_in": {"items": num_items, "events": num_events}, "rows_out": {"train": cut, "eval": num_events - cut},
               "quarantined": {}, "num_patches": num_patches, "patch_dim": patch_dim, "max_text_length": max_text_length}
    with open(os.path.join(output_dir, "summary.json"), "w") as f:
        json.dump(summary, f)
    return summary


def build_model(vocabulary_sizes, max_text_length, patch_features, preset="camenn_tiny"):
    """Stand-in for camenn.model.camenn's task model: same inputs and outputs (contract 5)."""
    import keras
    width = 16
    inputs, tokens = {}, []
    for name, size in vocabulary_sizes.items():
        inputs[name] = keras.Input((), dtype="int64", name=name)
        tokens.append(keras.layers.Embedding(size, width)(inputs[name]))
    for name, size in F.INTEGER_FEATURES.items():
        inputs[name] = keras.Input((), dtype="int64", name=name)
        tokens.append(keras.layers.Embedding(size, width)(inputs[name]))
    for name in F.NUMERIC_FEATURES:
        inputs[name] = keras.Input((), dtype="float32", name=name)
        tokens.append(keras.layers.Dense(width)(keras.layers.Reshape((1,))(inputs[name])))
    inputs[F.TEXT_TOKEN_IDS] = keras.Input((max_text_length,), dtype="int64", name=F.TEXT_TOKEN_IDS)
    text = keras.layers.GlobalAveragePooling1D()(keras.layers.Embedding(30522, width)(inputs[F.TEXT_TOKEN_IDS]))
    inputs[F.PATCH_EMBEDDINGS] = keras.Input((patch_features,), dtype="float32", name=F.PATCH_EMBEDDINGS)
    image = keras.layers.Dense(width)(inputs[F.PATCH_EMBEDDINGS])
    pair = keras.layers.Dense(width, activation="relu")(keras.layers.Concatenate()([text, image, text * image]))
    hidden = keras.layers.Dense(width, activation="relu")(keras.layers.Concatenate()(tokens + [pair]))
    outputs = {
        F.CVR: keras.layers.Reshape(())(keras.layers.Dense(1, activation="sigmoid", dtype="float32", name="cvr_head")(hidden)),
        F.ITA: keras.layers.Reshape(())(keras.layers.Dense(1, activation="sigmoid", dtype="float32", name="ita_head")(pair)),
        F.TIA: keras.layers.Reshape(())(keras.layers.Dense(1, activation="sigmoid", dtype="float32", name="tia_head")(pair)),
    }
    return keras.Model(inputs, outputs)


def alignment_batches(features, hard_negatives=True):
    """Stand-in for the model's tf.data negatives step: true pairs, ITA negatives (other text), TIA
    negatives (other image); labels and per-task sample weights."""
    import tensorflow as tf
    label = tf.cast(features.pop(F.LABEL), tf.float32)
    n = tf.shape(label)[0]
    perm = tf.roll(tf.range(n), 1, 0)
    ita_neg = dict(features)
    ita_neg[F.TEXT_TOKEN_IDS] = tf.gather(features[F.TEXT_TOKEN_IDS], perm)
    tia_neg = dict(features)
    tia_neg[F.PATCH_EMBEDDINGS] = tf.gather(features[F.PATCH_EMBEDDINGS], perm)
    x = {k: tf.concat([features[k], ita_neg[k], tia_neg[k]], 0) for k in features}
    ones, zeros = tf.ones_like(label), tf.zeros_like(label)
    y = {F.CVR: tf.concat([label, zeros, zeros], 0), F.ITA: tf.concat([ones, zeros, ones], 0),
         F.TIA: tf.concat([ones, ones, zeros], 0)}
    w = {F.CVR: tf.concat([ones, zeros, zeros], 0), F.ITA: tf.concat([ones, ones, zeros], 0),
         F.TIA: tf.concat([ones, zeros, ones], 0)}
    return x, y, w
