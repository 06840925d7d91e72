"""Out-of-fold audit scores: each listing is scored by a model that never trained on it, and the fold models
cannot recognise a listing by its id."""

import numpy as np
import pytest

from camenn.model import features as F
from camenn.tfx_pipeline import out_of_fold


def test_folds_are_balanced_and_an_ids_fold_does_not_depend_on_the_others():
    ids = [f"i{k:03d}".encode() for k in range(103)]
    folds = out_of_fold.assign_folds(ids, 5, seed=0)
    assert sorted(np.bincount(folds)) == [20, 20, 21, 21, 21]
    shuffled = list(reversed(ids))
    again = dict(zip(shuffled, out_of_fold.assign_folds(shuffled, 5, seed=0)))
    assert [again[i] for i in ids] == folds.tolist()
    assert out_of_fold.assign_folds(ids, 5, seed=1).tolist() != folds.tolist()
    with pytest.raises(ValueError, match="at least 2"):
        out_of_fold.assign_folds(ids, 1, seed=0)


def test_every_score_comes_from_a_model_that_did_not_train_on_the_listing():
    folds = out_of_fold.assign_folds([f"i{k}".encode() for k in range(40)], 4, seed=3)
    trained_on = []

    def fit(rows):
        trained_on.append(set(rows.tolist()))
        # A model that has seen a listing recognises it (score 1); one that has not, cannot (score 0).
        return lambda held_out: {
            task: np.array([float(r in trained_on[-1]) for r in held_out]) for task in out_of_fold.AUDIT_TASKS
        }

    scores = out_of_fold.out_of_fold_scores(40, folds, fit)
    assert len(trained_on) == 4
    for task in out_of_fold.AUDIT_TASKS:
        np.testing.assert_array_equal(scores[task], np.zeros(40))  # never scored by a model that saw it
    for fold, rows in enumerate(trained_on):
        assert rows == set(np.flatnonzero(folds != fold).tolist())  # and each trained on all the others


def synthetic_listings(n, seed=0):
    rng = np.random.default_rng(seed)
    category = rng.integers(0, 6, n)
    prototypes = np.random.default_rng(99).normal(size=(6, 16))
    return {
        F.ITEM_ID: np.arange(n),
        F.MERCHANT_ID: rng.integers(0, 4, n),
        F.CATEGORY: category,
        F.COARSE_CATEGORY: category // 2,
        F.PRICE: rng.normal(size=n).astype("float32"),
        F.TEXT_EMBEDDINGS: (prototypes[category] + 0.3 * rng.normal(size=(n, 16))).astype("float32"),
        F.PATCH_EMBEDDINGS: (prototypes[category] + 0.3 * rng.normal(size=(n, 16))).astype("float32"),
    }


def test_fold_models_learn_alignment_without_the_item_id():
    from camenn.model.camenn import CameNNMultiTask

    listings = synthetic_listings(48)

    def build():
        return CameNNMultiTask.from_preset(
            "camenn_tiny",
            vocabulary_sizes={name: 64 for name in F.ID_FEATURES},
            num_text_tokens=2,
            text_dim=8,
            num_patches=2,
            patch_dim=8,
            task_names=out_of_fold.AUDIT_TASKS,
            compile=False,
        )

    fit = out_of_fold.fit_alignment_model(listings, build, epochs=3, batch_size=16, seed=0)
    score = fit(np.arange(32))
    first = score(np.arange(32, 48))
    assert set(first) == set(out_of_fold.AUDIT_TASKS) and all(v.shape == (16,) for v in first.values())
    listings[F.ITEM_ID][32:] = 7  # other ids, the same listings: the same scores
    second = score(np.arange(32, 48))
    for task in out_of_fold.AUDIT_TASKS:
        np.testing.assert_array_equal(first[task], second[task])
