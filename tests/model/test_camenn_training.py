"""A short fit of the tiny preset on a synthetic task: ITA and TIA learn to match text and image, CVR learns
a planted effect, and fit logs carry the routing metrics."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from camenn.model import features as F
from camenn.model.camenn import CameNNMultiTask, make_alignment_examples

NUM_PATCHES, PATCH_DIM, TEXT_TOKENS, TEXT_DIM = 4, 16, 4, 12
NUM_FINE, FINE_PER_COARSE = 8, 2  # hard negatives: the other fine category of the same coarse one


def synthetic_events(n, seed):
    """Each listing's fine category decides both its text tokens and its image (per-category prototypes
    plus noise); conversion follows the price: P = sigmoid(2.5 * price)."""
    rng = np.random.default_rng(seed)
    prototypes = np.random.default_rng(1234).normal(size=(NUM_FINE, NUM_PATCHES * PATCH_DIM))
    texts = np.random.default_rng(4321).normal(size=(NUM_FINE, TEXT_TOKENS * TEXT_DIM))
    fine = rng.integers(0, NUM_FINE, n)
    price = rng.normal(size=n).astype("float32")

    def noisy(table):
        return (table[fine] + 0.5 * rng.normal(size=(n, table.shape[1]))).astype("float32")

    return {
        F.SHOPPER_ID: rng.integers(0, 20, n),
        F.ITEM_ID: fine * 10 + rng.integers(0, 3, n),
        F.MERCHANT_ID: rng.integers(0, 5, n),
        F.CATEGORY: fine,
        F.COARSE_CATEGORY: fine // FINE_PER_COARSE,
        F.HOUR: rng.integers(0, 24, n),
        F.PRICE: price,
        F.DISTANCE_KM: rng.normal(size=n).astype("float32"),
        F.TEXT_EMBEDDINGS: noisy(texts),
        F.PATCH_EMBEDDINGS: noisy(prototypes),
        F.LABEL: (rng.random(n) < 1 / (1 + np.exp(-2.5 * price))).astype("int64"),
    }


def text_and_image_only(x, y, w):
    """Hides the ids once negatives are chosen, so alignment can only come from the text and the image."""
    x = dict(x)
    for name in F.ID_FEATURES:
        x[name] = tf.zeros_like(x[name])
    return x, y, w


def alignment_dataset(n, seed, batch_size, shuffle):
    dataset = tf.data.Dataset.from_tensor_slices(synthetic_events(n, seed))
    if shuffle:
        dataset = dataset.shuffle(n, seed=seed)
    dataset = dataset.batch(batch_size, drop_remainder=shuffle)
    return make_alignment_examples(dataset, seed=seed).map(text_and_image_only)


def auc(labels, scores):
    order = np.argsort(scores)
    ranks = np.empty(len(scores))
    ranks[order] = np.arange(1, len(scores) + 1)
    positives = labels == 1
    n_pos, n_neg = positives.sum(), (~positives).sum()
    return (ranks[positives].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)


@pytest.fixture(scope="module")
def trained():
    keras.utils.set_random_seed(0)
    model = CameNNMultiTask.from_preset(
        "camenn_tiny",
        vocabulary_sizes={name: 64 for name in F.ID_FEATURES},
        num_text_tokens=TEXT_TOKENS,
        text_dim=TEXT_DIM,
        num_patches=NUM_PATCHES,
        patch_dim=PATCH_DIM,
        dropout=0.0,
    )
    epochs, steps_per_epoch = 3, 24
    model.compile(total_steps=epochs * steps_per_epoch, learning_rate=6e-3)
    history = model.fit(alignment_dataset(steps_per_epoch * 32, 0, 32, shuffle=True), epochs=epochs, verbose=0)
    scores = {task: [] for task in F.TASKS}
    labels = {task: [] for task in F.TASKS}
    for x, y, w in alignment_dataset(512, 1, 128, shuffle=False):
        predicted = model(x, training=False)
        for task in F.TASKS:
            kept = w[task].numpy() > 0
            scores[task].append(predicted[task].numpy()[kept])
            labels[task].append(y[task].numpy()[kept])
    held_out_auc = {task: auc(np.concatenate(labels[task]), np.concatenate(scores[task])) for task in F.TASKS}
    return history.history, held_out_auc


@pytest.mark.slow
def test_ita_and_tia_learn_to_match_text_and_image(trained):
    _, held_out_auc = trained
    assert held_out_auc[F.ITA] > 0.9, held_out_auc
    assert held_out_auc[F.TIA] > 0.9, held_out_auc


@pytest.mark.slow
def test_cvr_learns_the_planted_price_effect(trained):
    _, held_out_auc = trained
    assert held_out_auc[F.CVR] > 0.75, held_out_auc


@pytest.mark.slow
def test_fit_logs_losses_aucs_and_routing_per_task(trained):
    history, _ = trained
    for task in F.TASKS:
        assert history[f"{task}_loss"][-1] < history[f"{task}_loss"][0]
        assert f"{task}_auc" in history and f"{task}_gate_entropy" in history
        loads = [history[f"{task}_expert_{e}_load"][-1] for e in range(4)]
        assert sum(loads) == pytest.approx(1.0, abs=1e-4)
    assert 0.0 <= history["expert_overflow"][-1] < 1.0


def test_a_tiny_model_overfits_one_batch_on_every_task():
    """The capacity check of every task's pathway: 16 clicks (48 rows with their negatives), seen 150 times,
    are learned by heart: labels the model could not predict from any general rule (random conversions)."""
    keras.utils.set_random_seed(3)
    batch = synthetic_events(16, seed=7)
    batch[F.LABEL] = np.random.default_rng(0).permutation([0, 1] * 8)  # unrelated to any feature
    # Capacity for every routed example: one fixed batch routes the same way every step, and an example
    # that overflows an expert in training would meet it only at inference.
    model = CameNNMultiTask.from_preset(
        "camenn_tiny",
        vocabulary_sizes={name: 100 for name in F.ID_FEATURES},
        num_text_tokens=TEXT_TOKENS,
        text_dim=TEXT_DIM,
        num_patches=NUM_PATCHES,
        patch_dim=PATCH_DIM,
        dropout=0.0,
        capacity_factor=4.0,
    )
    model.compile(learning_rate=3e-3)
    one_batch = make_alignment_examples(tf.data.Dataset.from_tensors(batch).repeat(), seed=0).take(1).cache().repeat()
    history = model.fit(one_batch, steps_per_epoch=150, epochs=1, verbose=0).history
    x, y, w = next(iter(one_batch))
    predicted = model(x, training=False)
    for task in F.TASKS:
        kept = w[task].numpy() > 0
        assert auc(y[task].numpy()[kept], predicted[task].numpy()[kept]) == 1.0, task
        assert history[f"{task}_loss"][-1] < 0.1, (task, history[f"{task}_loss"][-1])
