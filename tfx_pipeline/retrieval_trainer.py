"""The retrieval Trainer's `run_fn`: trains `TwoTowerRetrieval` (Keras 2 and TensorFlow Recommenders) on
the same Transform output as the ranker and exports it with the Transform graph in front.

- Data: the training split's clicks, read once into memory with each distinct listing held once
  (`training_data.ClickData`, as the ranker's Trainer does); every click is a positive (shopper, hour) ->
  listing pair, the other clicks' listings of its batch its negatives.
- The export takes raw `shopper_id` and `hour` and returns the top K listings of its index
  (`camenn.model.retrieval.export`); the index is filled from the catalog by the `RetrievalIndex` step.
  The training split's clicks per listing go into the export: the popularity the model falls back on for a
  shopper it does not know.
- Reproducible: seeded, deterministic ops, content-ordered data.
"""

import json
import logging
import os
import time

import numpy as np
import tensorflow as tf

from camenn.model import features as F
from camenn.tfx_pipeline.training_data import LISTING_ROW, ClickData, read_split, vocabulary_sizes

logger = logging.getLogger(__name__)


def add_sampling_probability(data: ClickData) -> ClickData:
    """Adds each click's listing's share of the split's clicks (`SAMPLING_PROBABILITY`), for the logQ
    correction: how likely that listing is to be another click's in-batch negative."""
    from camenn.model.retrieval.retrieval_model import SAMPLING_PROBABILITY

    rows = data.clicks[LISTING_ROW]
    counts = np.bincount(rows, minlength=len(data.listings[F.ITEM_ID]))
    data.clicks[SAMPLING_PROBABILITY] = (counts[rows] / len(rows)).astype(np.float32)
    return data


def item_click_counts(data: ClickData, item_vocabulary_size: int) -> np.ndarray:
    """Clicks per item vocabulary index in the split (OOV buckets get 0: nothing in training is OOV)."""
    items = data.listings[F.ITEM_ID][data.clicks[LISTING_ROW]]
    return np.bincount(items, minlength=item_vocabulary_size).astype(np.float32)


def training_batches(data: ClickData, batch_size: int, seed: int) -> tf.data.Dataset:
    """Shuffled batches (reshuffled each epoch) of what the towers and the loss read."""
    from camenn.model.retrieval.retrieval_model import SAMPLING_PROBABILITY
    from camenn.model.retrieval.retrieval_towers import CANDIDATE_FEATURES, QUERY_FEATURES

    names = (*QUERY_FEATURES, *CANDIDATE_FEATURES, SAMPLING_PROBABILITY)
    return data.dataset(batch_size, seed=seed).map(lambda batch: {name: batch[name] for name in names})


def train(config, data: ClickData, sizes, num_patches, num_text_tokens, model_run_dir=None):
    """Builds and fits the model of `config["preset"]`; returns (model, history dict, seconds of fit)."""
    import tf_keras

    from camenn.model.retrieval import TwoTowerRetrieval

    tf_keras.utils.set_random_seed(config["seed"])
    listings = data.listings
    options = {"learning_rate": config["learning_rate"]} if config.get("learning_rate") else {}
    model = TwoTowerRetrieval.from_preset(
        config["preset"],
        vocabulary_sizes=sizes,
        num_text_tokens=num_text_tokens,
        text_dim=listings[F.TEXT_EMBEDDINGS].shape[1] // num_text_tokens,
        num_patches=num_patches,
        patch_dim=listings[F.PATCH_EMBEDDINGS].shape[1] // num_patches,
        **options,
    )
    model.compile()
    callbacks = [tf_keras.callbacks.TensorBoard(model_run_dir)] if model_run_dir else []
    started = time.perf_counter()
    history = model.fit(
        training_batches(add_sampling_probability(data), config["batch_size"], config["seed"]),
        epochs=config["epochs"],
        callbacks=callbacks,
        verbose=0,
    )
    return model, {k: [float(x) for x in v] for k, v in history.history.items()}, time.perf_counter() - started


def run_fn(fn_args):
    """TFX Trainer entry point (`custom_config` from configs.PipelineConfig, see pipeline.py)."""
    import tensorflow_transform as tft

    from camenn.model.retrieval.export import export_retrieval_model
    from camenn.model.retrieval.retrieval_towers import CANDIDATE_FEATURES, QUERY_FEATURES

    config = fn_args.custom_config
    tf.config.experimental.enable_op_determinism()
    tft_output = tft.TFTransformOutput(fn_args.transform_output)
    data = read_split(fn_args, tft_output, fn_args.train_files)
    sizes = vocabulary_sizes(tft_output, config["num_oov_buckets"])
    model, history, seconds = train(
        config, data, sizes, config["num_patches"], config["num_text_tokens"], fn_args.model_run_dir
    )
    logger.info(
        "retrieval model %s: %d epochs over %d clicks in %.1f s, loss %.4f -> %.4f",
        config["preset"],
        config["epochs"],
        data.num_clicks,
        seconds,
        history["loss"][0],
        history["loss"][-1],
    )
    with tf.io.gfile.GFile(os.path.join(fn_args.model_run_dir, "history.json"), "w") as f:
        json.dump({"fit_seconds": seconds, "clicks": data.num_clicks, "history": history}, f)

    raw_spec = tft_output.raw_feature_spec()
    tft_layer = tft_output.transform_features_layer()
    export_retrieval_model(
        model,
        fn_args.serving_model_dir,
        transform=tft_layer,
        transform_trackables=[tft_layer],
        raw_feature_spec={name: raw_spec[name] for name in (*QUERY_FEATURES, *CANDIDATE_FEATURES)},
        known_shoppers=sizes[F.SHOPPER_ID] - config["num_oov_buckets"],
        item_click_counts=item_click_counts(data, sizes[F.ITEM_ID]),
        top_k=config["top_k"],
    )
    logger.info("exported the retrieval model to %s", fn_args.serving_model_dir)
