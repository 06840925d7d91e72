"""make_alignment_examples: positives, ITA negatives (other text), TIA negatives (other image), weights."""

import numpy as np
import pytest
import tensorflow as tf

from camenn.model import features as F
from camenn.model.camenn import make_alignment_examples


def batch_of(categories, coarse, seed=0):
    """One batch; example i's text and image both encode i, so swaps are traceable."""
    n = len(categories)
    rng = np.random.default_rng(seed)
    batch = {name: rng.integers(0, 50, n) for name in F.ID_FEATURES}
    batch[F.CATEGORY] = np.array(categories)
    batch[F.COARSE_CATEGORY] = np.array(coarse)
    batch[F.ITEM_ID] = np.arange(n) + 100
    batch[F.HOUR] = rng.integers(0, 24, n)
    batch.update({name: rng.normal(size=n).astype("float32") for name in F.NUMERIC_FEATURES})
    batch[F.TEXT_TOKEN_IDS] = np.repeat(np.arange(n)[:, None], 6, axis=1) + 1000
    batch[F.TEXT_EMBEDDINGS] = np.repeat(np.arange(n)[:, None], 8, axis=1).astype("float32")
    batch[F.PATCH_EMBEDDINGS] = np.repeat(np.arange(n)[:, None], 4, axis=1).astype("float32")
    batch[F.LABEL] = rng.integers(0, 2, n)
    batch["request_id"] = np.array([b"r"] * n)  # not a model input: dropped
    return batch


def one_step(batch, **kwargs):
    dataset = tf.data.Dataset.from_tensors(batch)
    x, y, w = next(iter(make_alignment_examples(dataset, **kwargs)))
    return (
        {k: v.numpy() for k, v in x.items()},
        {k: v.numpy() for k, v in y.items()},
        {k: v.numpy() for k, v in w.items()},
    )


def text_source(x):
    # Both forms of the text travel together: the cached tokens and the token ids.
    np.testing.assert_array_equal(x[F.TEXT_EMBEDDINGS][:, 0].astype(int), x[F.TEXT_TOKEN_IDS][:, 0] - 1000)
    return x[F.TEXT_TOKEN_IDS][:, 0] - 1000


def image_source(x):
    return x[F.PATCH_EMBEDDINGS][:, 0].astype(int)


def test_rows_hold_positives_then_ita_then_tia_negatives_with_per_task_weights():
    categories = [0, 1, 2, 3, 4, 5]
    batch = batch_of(categories, [0, 0, 1, 1, 2, 2])
    x, y, w = one_step(batch, seed=0)
    n = len(categories)
    assert set(x) == set(F.MODEL_INPUTS)
    assert all(v.shape[0] == 3 * n for v in x.values())
    anchors = np.arange(n)
    # Positives: the true pairs, with the order label for CVR.
    np.testing.assert_array_equal(text_source(x)[:n], anchors)
    np.testing.assert_array_equal(image_source(x)[:n], anchors)
    np.testing.assert_array_equal(y[F.CVR][:n], batch[F.LABEL])
    # ITA negatives keep the image (and the listing's other features) and take another text.
    np.testing.assert_array_equal(image_source(x)[n : 2 * n], anchors)
    np.testing.assert_array_equal(x[F.ITEM_ID][n : 2 * n], batch[F.ITEM_ID])
    assert np.all(text_source(x)[n : 2 * n] != anchors)
    # TIA negatives keep the text and take another image.
    np.testing.assert_array_equal(text_source(x)[2 * n :], anchors)
    assert np.all(image_source(x)[2 * n :] != anchors)
    ones, zeros = np.ones(n), np.zeros(n)
    np.testing.assert_array_equal(y[F.ITA], np.concatenate([ones, zeros, zeros]))
    np.testing.assert_array_equal(y[F.TIA], np.concatenate([ones, zeros, zeros]))
    np.testing.assert_array_equal(w[F.CVR], np.concatenate([ones, zeros, zeros]))
    np.testing.assert_array_equal(w[F.ITA], np.concatenate([ones, ones, zeros]))
    np.testing.assert_array_equal(w[F.TIA], np.concatenate([ones, zeros, ones]))


def test_negatives_prefer_the_same_coarse_category_and_never_share_the_fine_category():
    # Fine categories 0,0,1,2 share coarse 7; fine 3,4 are coarse 8; fine 5 is alone in coarse 9.
    categories = np.array([0, 0, 1, 2, 3, 4, 5])
    coarse = np.array([7, 7, 7, 7, 8, 8, 9])
    batch = batch_of(categories, coarse)
    n = len(categories)
    for seed in range(5):
        x, _, w = one_step(batch, seed=seed)
        for start, source in ((n, text_source), (2 * n, image_source)):
            partners = source(x)[start : start + n]
            assert np.all(categories[partners] != categories), "a negative of the same fine category"
            hard = coarse[partners] == coarse
            # Everyone but the lone coarse-9 example has a same-coarse candidate and must get one.
            np.testing.assert_array_equal(hard[:6], True)
        assert np.all(w[F.ITA][n : 2 * n] == 1) and np.all(w[F.TIA][2 * n :] == 1)


def test_without_hard_negatives_partners_are_drawn_from_every_other_category():
    categories = np.arange(12)
    coarse = np.repeat([0, 1], 6)
    batch = batch_of(categories, coarse)
    n = len(categories)
    same_coarse = []
    for seed in range(4):
        x, _, _ = one_step(batch, seed=seed, hard_negatives=False)
        same_coarse.append(coarse[text_source(x)[n : 2 * n]] == coarse)
    assert 0.2 < np.mean(same_coarse) < 0.8  # about 5/11 when drawn uniformly


def test_a_batch_of_one_fine_category_has_no_valid_negatives_and_weighs_them_zero():
    batch = batch_of([3, 3, 3, 3], [1, 1, 1, 1])
    x, _, w = one_step(batch, seed=0)
    np.testing.assert_array_equal(w[F.ITA], [1] * 4 + [0] * 8)
    np.testing.assert_array_equal(w[F.TIA], [1] * 4 + [0] * 8)


def test_takes_feature_label_tuples_and_is_deterministic_with_a_seed():
    batch = batch_of(list(range(8)), [0, 0, 1, 1, 2, 2, 3, 3])
    label = batch.pop(F.LABEL)
    dataset = tf.data.Dataset.from_tensors((batch, label)).repeat(2)
    runs = [[x[F.TEXT_TOKEN_IDS].numpy() for x, _, _ in make_alignment_examples(dataset, seed=4)] for _ in range(2)]
    np.testing.assert_array_equal(runs[0][0], runs[1][0])
    np.testing.assert_array_equal(runs[0][1], runs[1][1])


def test_dicts_without_the_label_are_refused():
    batch = batch_of([0, 1], [0, 0])
    del batch[F.LABEL]
    with pytest.raises(ValueError, match=F.LABEL):
        make_alignment_examples(tf.data.Dataset.from_tensors(batch))


def test_end_to_end_batches_swap_the_pixels():
    batch = batch_of(list(range(4)), [0, 0, 1, 1])
    batch[F.IMAGE] = np.repeat(np.arange(4)[:, None, None, None], 3, axis=3).astype("uint8") * np.ones(
        (1, 2, 2, 1), "uint8"
    )
    del batch[F.PATCH_EMBEDDINGS]
    x, _, _ = one_step(batch, seed=0)
    assert F.IMAGE in x and F.PATCH_EMBEDDINGS not in x
    pixels = x[F.IMAGE][:, 0, 0, 0].astype(int)
    np.testing.assert_array_equal(pixels[:8], [0, 1, 2, 3, 0, 1, 2, 3])
    assert np.all(pixels[8:] != np.arange(4))
