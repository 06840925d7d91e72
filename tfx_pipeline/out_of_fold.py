"""Out-of-fold alignment scores: every listing's ITA and TIA from a CameNN that never trained on it.

A model trained on every listing's own (photo, text) pair as a positive learns the flawed pairs too, and
then finds them aligned: it grades its own homework. As confident learning does for label errors, the
listings are split into `num_folds` folds; for each fold a CameNN with the alignment heads alone is
trained on the other folds' listings (each listing's true pair and its in-batch ITA and TIA negatives,
as in the main training) and scores the held-out fold's true pairs. The item id, which would let a
model memorise a listing rather than judge its photo against its text, is hidden from these models.
"""

import hashlib
import logging
import time
from typing import Callable, Dict, Mapping, Sequence

import numpy as np

from camenn.model import features as F

logger = logging.getLogger(__name__)

# What the fold models score: the listing's own pair on the two alignment heads.
AUDIT_TASKS = (F.ITA, F.TIA)
Scorer = Callable[[np.ndarray], Dict[str, np.ndarray]]


def assign_folds(item_ids: Sequence[bytes], num_folds: int, seed: int) -> np.ndarray:
    """A fold per listing: the listings in a seeded order (a hash of seed and id), dealt out in turn, so
    folds differ in size by at most one and an id's fold does not depend on the other ids' order."""
    if num_folds < 2:
        raise ValueError(f"num_folds must be at least 2, got {num_folds}")
    keys = [hashlib.sha256(f"{seed}/".encode() + bytes(i)).digest() for i in item_ids]
    folds = np.empty(len(keys), np.int64)
    folds[np.argsort(np.array(keys, dtype=object), kind="stable")] = np.arange(len(keys)) % num_folds
    return folds


def out_of_fold_scores(
    num_listings: int, folds: np.ndarray, fit: Callable[[np.ndarray], Scorer]
) -> Dict[str, np.ndarray]:
    """Scores each listing with the model fitted on the other folds.

    Args:
        num_listings: rows 0..num_listings-1.
        folds: [num_listings] fold of each row.
        fit: rows to train on -> a scorer (rows -> {task: [len(rows)] scores}).

    Returns:
        {task: [num_listings] out-of-fold scores}.
    """
    scores: Dict[str, np.ndarray] = {}
    for fold in np.unique(folds):
        held_out = np.flatnonzero(folds == fold)
        training = np.flatnonzero(folds != fold)
        started = time.time()
        scorer = fit(training)
        for task, values in scorer(held_out).items():
            scores.setdefault(task, np.full(num_listings, np.nan, np.float32))[held_out] = values
        logger.info(
            "audit fold %d/%d: trained on %d listings, scored %d (%.0f s)",
            fold + 1,
            len(np.unique(folds)),
            len(training),
            len(held_out),
            time.time() - started,
        )
    return scores


def fit_alignment_model(
    listings: Mapping[str, np.ndarray],
    build_model: Callable[[], object],
    epochs: int,
    batch_size: int,
    seed: int,
    learning_rate: float = 0.0,
) -> Callable[[np.ndarray], Scorer]:
    """A `fit` for `out_of_fold_scores`: trains an alignment-only CameNN on the given listing rows.

    Args:
        listings: model inputs of every listing (listing features, transformed), [N, ...] each.
        build_model: returns a fresh compiled-to-be `CameNNMultiTask` with `task_names=AUDIT_TASKS`.
        epochs: passes over the training listings.
        batch_size: listings per step (each brings its ITA and TIA negative).
        seed: seeds the weights, the order and the negatives.
        learning_rate: peak learning rate; 0 keeps the model's default.
    """
    import keras
    import tensorflow as tf

    from camenn.model.camenn import make_alignment_examples

    def hidden_ids(x):
        return {**x, F.ITEM_ID: tf.zeros_like(x[F.ITEM_ID])}

    # One model, traced once, whose weights and optimizer state go back to the same start for every fold:
    # a fresh model per fold spent more time tracing than training.
    state = {}
    steps = max(1, -(-len(next(iter(listings.values()))) // batch_size))

    def fresh_model():
        if not state:
            keras.utils.set_random_seed(seed)
            model = build_model()
            model.compile(total_steps=epochs * steps, **({"learning_rate": learning_rate} if learning_rate else {}))
            state.update(model=model, weights=model.get_weights())
        model = state["model"]
        model.set_weights(state["weights"])
        if model.optimizer.built:
            for variable in model.optimizer.variables:
                variable.assign(tf.zeros_like(variable))
        return model

    def fit(rows: np.ndarray) -> Scorer:
        model = fresh_model()
        inputs = list(model.input)
        batch = {name: value[rows] for name, value in listings.items()}
        batch[F.LABEL] = np.zeros(len(rows), np.int64)  # no conversion task: a placeholder the step drops
        dataset = (
            tf.data.Dataset.from_tensor_slices(batch)
            .shuffle(len(rows), seed=seed, reshuffle_each_iteration=True)
            .repeat()
            .batch(batch_size)
        )
        train = make_alignment_examples(dataset, seed=seed).map(
            lambda x, y, w: (
                {k: v for k, v in hidden_ids(x).items() if k in inputs},
                {t: y[t] for t in AUDIT_TASKS},
                {t: w[t] for t in AUDIT_TASKS},
            )
        )
        model.fit(train, epochs=epochs, steps_per_epoch=max(1, -(-len(rows) // batch_size)), verbose=0)

        # Scored now, before the next fold resets the weights.
        def score(held_out: np.ndarray) -> Dict[str, np.ndarray]:
            x = hidden_ids({name: tf.constant(listings[name][held_out]) for name in inputs})
            predicted = model.predict(x, batch_size=256, verbose=0)
            return {task: np.asarray(predicted[task], np.float32) for task in AUDIT_TASKS}

        return score

    return fit
