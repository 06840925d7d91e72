"""A retrieval SavedModel over the serving tests' synthetic catalog (serving_helpers.make_catalog): the
tiny `TwoTowerRetrieval` trained for a few steps on synthetic clicks (each shopper clicks the listings of
one category), exported with a hash-table transform in front, its index filled from the catalog."""

import shutil
from pathlib import Path

import numpy as np
from serving_helpers import (
    CATEGORIES,
    MERCHANTS,
    NUM_PATCHES,
    PATCH_DIM,
    RAW_FEATURE_SPEC,
    TEXT_DIM,
    TEXT_TOKENS,
    RawToModelInputs,
    catalog_columns,
)

from camenn.model import features as F

SHOPPERS = [f"shopper_{i}" for i in range(8)]


def synthetic_clicks(items, count=400, seed=0):
    """Raw clicks: shopper i clicks listings of category i % 4, more often the lower-numbered ones."""
    rng = np.random.default_rng(seed)
    by_category = {c: [item for item in items if item[F.CATEGORY] == c] for c in CATEGORIES}
    rows = []
    for _ in range(count):
        s = int(rng.integers(len(SHOPPERS)))
        pool = by_category[CATEGORIES[s % len(CATEGORIES)]]
        weights = 1.0 / np.arange(1, len(pool) + 1)
        item = pool[rng.choice(len(pool), p=weights / weights.sum())]
        rows.append((SHOPPERS[s], int(rng.integers(24)), item))
    return rows


def vocabularies(items):
    return {
        F.SHOPPER_ID: list(SHOPPERS),
        F.ITEM_ID: [item[F.ITEM_ID] for item in items],
        F.MERCHANT_ID: list(MERCHANTS),
        F.CATEGORY: list(CATEGORIES),
        F.COARSE_CATEGORY: sorted({item[F.COARSE_CATEGORY] for item in items}),
    }


def export_retrieval(directory, items, epochs=3, seed=0, top_k=10):
    """Trains the tiny preset on synthetic clicks and writes the SavedModel with its index filled to `directory`."""
    import tensorflow as tf
    import tf_keras

    from camenn.model.retrieval import TwoTowerRetrieval
    from camenn.model.retrieval.export import export_retrieval_model
    from camenn.model.retrieval.retrieval_model import SAMPLING_PROBABILITY
    from camenn.serving.retrieval_index import write_index

    vocab = vocabularies(items)
    lookup = RawToModelInputs(vocab)
    clicks = synthetic_clicks(items, seed=seed)
    index = {name: {v: i for i, v in enumerate(values)} for name, values in vocab.items()}
    columns = {F.SHOPPER_ID: [index[F.SHOPPER_ID][s] for s, _, _ in clicks], F.HOUR: [h for _, h, _ in clicks]}
    for name in (F.ITEM_ID, F.MERCHANT_ID, F.CATEGORY, F.COARSE_CATEGORY):
        columns[name] = [index[name][item[name]] for _, _, item in clicks]
    columns[F.PRICE] = [item[F.PRICE] for _, _, item in clicks]
    columns[F.TEXT_EMBEDDINGS] = [item[F.TEXT_EMBEDDINGS] for _, _, item in clicks]
    columns[F.PATCH_EMBEDDINGS] = [item[F.PATCH_EMBEDDINGS] for _, _, item in clicks]
    counts = np.bincount(columns[F.ITEM_ID], minlength=len(items) + 1).astype(np.float32)
    columns[SAMPLING_PROBABILITY] = counts[columns[F.ITEM_ID]] / len(clicks)
    data = {
        k: np.asarray(
            v, np.float32 if k in (F.PRICE, SAMPLING_PROBABILITY, F.TEXT_EMBEDDINGS, F.PATCH_EMBEDDINGS) else np.int64
        )
        for k, v in columns.items()
    }
    tf_keras.utils.set_random_seed(seed)
    model = TwoTowerRetrieval.from_preset(
        "retrieval_tiny",
        vocabulary_sizes={name: len(values) + 1 for name, values in vocab.items()},
        num_text_tokens=TEXT_TOKENS,
        text_dim=TEXT_DIM,
        num_patches=NUM_PATCHES,
        patch_dim=PATCH_DIM,
    )
    model.compile()
    history = model.fit(
        tf.data.Dataset.from_tensor_slices(data).shuffle(len(clicks), seed=seed).batch(32), epochs=epochs, verbose=0
    )
    empty = Path(str(directory) + ".empty-index")
    export_retrieval_model(
        model,
        str(empty),
        transform=lookup,
        transform_trackables=[lookup],
        raw_feature_spec=RAW_FEATURE_SPEC,
        known_shoppers=len(SHOPPERS),
        item_click_counts=counts,
        top_k=top_k,
    )
    write_index(str(empty), catalog_columns(items), str(directory))
    shutil.rmtree(empty)
    return Path(directory), model, history.history["loss"]
