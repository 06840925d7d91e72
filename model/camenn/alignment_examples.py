"""The tf.data step that turns batches of true (image, text) pairs into CameNN's three training tasks."""

import tensorflow as tf

from camenn.model import features

# How much a hard negative (same coarse category) outranks any other: above every uniform draw.
_HARD_NEGATIVE_BONUS = 2.0
# What an ITA negative borrows from its partner (the text) and what a TIA negative borrows (the image),
# in whichever form the batch holds them: cached encodings, or token ids and pixels end to end.
TEXT_FEATURES = (features.TEXT_EMBEDDINGS, features.TEXT_TOKEN_IDS)
IMAGE_FEATURES = (features.PATCH_EMBEDDINGS, features.IMAGE)


def _partners(batch, seed, hard_negatives):
    """For each example, another example of the batch to borrow one modality from, and whether any fits.

    A partner never shares the example's fine category (`features.CATEGORY`) or item
    (`features.ITEM_ID`) when those features are present, and is never the example itself; among the
    allowed, one of the same coarse category (`features.COARSE_CATEGORY`) is preferred when
    `hard_negatives`, and the choice is otherwise uniform.
    """
    size = tf.shape(batch[features.ITEM_ID])[0]
    allowed = tf.logical_not(tf.eye(size, dtype=tf.bool))
    for name in (features.CATEGORY, features.ITEM_ID):
        if name in batch:
            values = tf.reshape(batch[name], [size])
            allowed &= tf.not_equal(values[:, None], values[None, :])
    score = tf.random.stateless_uniform([size, size], seed=seed)
    if hard_negatives and features.COARSE_CATEGORY in batch:
        coarse = tf.reshape(batch[features.COARSE_CATEGORY], [size])
        score += _HARD_NEGATIVE_BONUS * tf.cast(tf.equal(coarse[:, None], coarse[None, :]), tf.float32)
    partner = tf.argmax(tf.where(allowed, score, -1.0), axis=1, output_type=tf.int32)
    return partner, tf.reduce_any(allowed, axis=1)


def alignment_batch(batch, label, seed, hard_negatives=True):
    """One batch of N true pairs -> (x, y, sample_weight) with 3N rows, for `CameNNMultiTask.fit`.

    `batch` holds model inputs ([N] or [N, ...] tensors, `features.ITEM_ID` among them); `x` holds those
    of `features.MODEL_INPUTS` and `features.IMAGE` the batch has.

    Rows 0..N-1 are the true pairs (labels: `cvr` = the order label, `ita` = `tia` = 1). Rows N..2N-1
    are ITA negatives: each keeps its listing's image and every other feature but takes another
    listing's text. Rows 2N..3N-1 are TIA negatives: each keeps its text (and other features) but takes
    another listing's image. Negatives are labelled 0. Sample weights route each row to its tasks:
    `cvr` trains on the true pairs only, `ita` on the true pairs and ITA negatives, `tia` on the true
    pairs and TIA negatives; a negative for which the batch holds no allowed partner gets weight 0.
    """
    batch = dict(batch)
    size = tf.shape(batch[features.ITEM_ID])[0]
    ita_partner, ita_found = _partners(batch, seed[0], hard_negatives)
    tia_partner, tia_found = _partners(batch, seed[1], hard_negatives)
    ita_negatives, tia_negatives = dict(batch), dict(batch)
    for name in TEXT_FEATURES:
        if name in batch:
            ita_negatives[name] = tf.gather(batch[name], ita_partner)
    for name in IMAGE_FEATURES:
        if name in batch:
            tia_negatives[name] = tf.gather(batch[name], tia_partner)
    names = [name for name in (*features.MODEL_INPUTS, features.IMAGE) if name in batch]
    x = {name: tf.concat([batch[name], ita_negatives[name], tia_negatives[name]], axis=0) for name in names}

    ones, zeros = tf.ones([size]), tf.zeros([size])
    label = tf.cast(tf.reshape(label, [size]), tf.float32)
    y = {
        features.CVR: tf.concat([label, zeros, zeros], 0),
        features.ITA: tf.concat([ones, zeros, zeros], 0),
        features.TIA: tf.concat([ones, zeros, zeros], 0),
    }
    sample_weight = {
        features.CVR: tf.concat([ones, zeros, zeros], 0),
        features.ITA: tf.concat([ones, tf.cast(ita_found, tf.float32), zeros], 0),
        features.TIA: tf.concat([ones, zeros, tf.cast(tia_found, tf.float32)], 0),
    }
    return x, y, sample_weight


def make_alignment_examples(dataset, *, seed=None, hard_negatives=True, label_key=features.LABEL):
    """Maps a batched dataset of true (image, text) pairs to CameNN's training examples with negatives.

    Each element of `dataset` is a batch: a dict of model inputs holding `label_key`, or
    a `(features, label)` tuple. The result yields `(x, y, sample_weight)` with three times the rows
    (see `alignment_batch`), ready for `CameNNMultiTask.fit`. Negatives come from the same batch, so
    larger, shuffled batches give more and harder negatives. `x` keeps only the model's inputs.

    Args:
        dataset: a batched `tf.data.Dataset`.
        seed: int or None. Seeds the choice of negatives (None: a different choice every run).
        hard_negatives: bool. Prefer negatives of the same coarse category when that feature is there.
        label_key: str. The label's key when elements are dicts.

    Example:
    ```python
    import numpy as np
    import tensorflow as tf
    from camenn.model import features

    # 8 clicks as Transform makes them (8 listings of 8 categories), with their order labels.
    rng = np.random.default_rng(0)
    clicks = {name: np.arange(8) for name in features.ID_FEATURES}
    clicks[features.HOUR] = rng.integers(0, 24, 8)
    clicks.update({name: rng.normal(size=8).astype("float32") for name in features.NUMERIC_FEATURES})
    clicks[features.TEXT_EMBEDDINGS] = rng.normal(size=(8, 64)).astype("float32")
    clicks[features.PATCH_EMBEDDINGS] = rng.normal(size=(8, 64)).astype("float32")
    clicks[features.LABEL] = rng.integers(0, 2, 8)

    train = make_alignment_examples(tf.data.Dataset.from_tensor_slices(clicks).shuffle(8).batch(8), seed=0)
    x, y, sample_weight = next(iter(train))
    assert x[features.ITEM_ID].shape == (24,)  # the true pairs, then ITA negatives, then TIA negatives
    assert y["ita"].numpy().tolist() == [1.0] * 8 + [0.0] * 16
    assert sample_weight["cvr"].numpy().tolist() == [1.0] * 8 + [0.0] * 16  # CVR learns on true pairs only
    # model.fit(train, epochs=3) trains a CameNNMultiTask (see its example).
    ```
    """

    def split(element):
        if isinstance(element, (tuple, list)):
            return dict(element[0]), element[1]
        element = dict(element)
        if label_key not in element:
            raise ValueError(
                f"dataset elements lack the label {label_key!r}: give dicts holding it, or (features, label) tuples"
            )
        label = element.pop(label_key)
        return element, label

    def to_examples(element, seed_pair):
        batch, label = split(element)
        seeds = tf.reshape(tf.random.experimental.stateless_split(seed_pair, num=2), [2, 2])
        return alignment_batch(batch, label, (seeds[0], seeds[1]), hard_negatives)

    seeds = tf.data.Dataset.random(seed=seed).batch(2)
    return tf.data.Dataset.zip((dataset, seeds)).map(to_examples, num_parallel_calls=tf.data.AUTOTUNE)
