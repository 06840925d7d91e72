"""A retrieval SavedModel's top-K index, filled from a catalog with the version's own candidate tower.

The Trainer exports the retrieval model with an empty index (`camenn.model.retrieval.export`). This
module runs its `encode_candidates` signature over listing features (`camenn preprocess`'s OUT/items),
puts every listing's vector, display columns and popularity into the index, adds each listing's
out-of-fold alignment from the listing audit where one is given, and writes the SavedModel again: the
pipeline's `RetrievalIndex` step. A listing never clicked in training is indexed like any other, from its
content (the candidate tower needs no clicks).

Only TensorFlow is imported: no Keras, tf_keras or TFRS, as where stock TensorFlow Serving runs.
"""

import logging
import os
import shutil
from typing import Dict, Mapping, Optional

import numpy as np
import tensorflow as tf

from camenn.model import features
from camenn.model.retrieval_index import ALIGNMENT, EMBEDDINGS, ITEM_IDS, POPULARITY, STRING_COLUMNS, fill

log = logging.getLogger(__name__)

ENCODE_CANDIDATES_SIGNATURE = "encode_candidates"
CANDIDATE_EMBEDDING = "candidate_embedding"
EXTRA_ASSETS = "assets.extra"
ENCODE_BATCH = 256


def encode_candidates(
    loaded, listings: Mapping[str, np.ndarray], batch_size: int = ENCODE_BATCH
) -> Dict[str, np.ndarray]:
    """Runs the version's `encode_candidates` over `listings` (arrays by feature name) in batches."""
    signature = loaded.signatures[ENCODE_CANDIDATES_SIGNATURE]
    specs = signature.structured_input_signature[1]
    missing = sorted(set(specs) - set(listings))
    if missing:
        raise KeyError(f"the model encodes listings from {sorted(specs)}; the listings lack {missing}")
    count = len(listings[features.ITEM_ID])
    parts: Dict[str, list] = {}
    for start in range(0, count, batch_size):
        batch = {
            name: tf.constant(np.asarray(listings[name])[start : start + batch_size], dtype=spec.dtype)
            for name, spec in specs.items()
        }
        for name, value in signature(**batch).items():
            parts.setdefault(name, []).append(value.numpy())
    return {name: np.concatenate(chunks) for name, chunks in parts.items()}


def write_index(
    saved_model_dir: str,
    listings: Mapping[str, np.ndarray],
    output_dir: str,
    alignment: Optional[Mapping[str, float]] = None,
) -> Dict[str, int]:
    """Writes `saved_model_dir` to `output_dir` with its index filled from `listings`.

    Args:
        saved_model_dir: a retrieval SavedModel (`camenn.model.retrieval.export`).
        listings: listing features by name (`camenn.serving.listings.read_listing_features`): the candidate
            tower's inputs and the item id, plus `title`, `category`, `merchant_id` where present.
        output_dir: where the SavedModel goes (must not exist yet; `assets.extra` is copied along).
        alignment: item id -> out-of-fold min(ITA, TIA) from the listing audit; listings it lacks get NaN.

    Returns:
        counts: `listings` (rows in the index), `audited` (rows with an alignment), `clicked` (rows with
        training clicks).
    """
    if tf.io.gfile.exists(output_dir):
        raise FileExistsError(f"{output_dir} exists: write the index into a new folder")
    loaded = tf.saved_model.load(saved_model_dir)
    encoded = encode_candidates(loaded, listings)
    item_ids = [
        i if isinstance(i, bytes) else str(i).encode() for i in np.asarray(listings[features.ITEM_ID]).reshape(-1)
    ]
    columns = {
        name: np.asarray(listings[name]).reshape(-1) for name in (*STRING_COLUMNS, features.PRICE) if name in listings
    }
    columns[POPULARITY] = encoded[POPULARITY]
    alignment = alignment or {}
    columns[ALIGNMENT] = np.array([alignment.get(i.decode(), np.nan) for i in item_ids], np.float32)
    fill(loaded.index, item_ids, encoded[CANDIDATE_EMBEDDING], columns)
    tf.saved_model.save(loaded, output_dir, signatures=dict(loaded.signatures))
    extra = os.path.join(saved_model_dir, EXTRA_ASSETS)
    if os.path.isdir(extra):
        shutil.copytree(extra, os.path.join(output_dir, EXTRA_ASSETS))
    return {
        "listings": len(item_ids),
        "audited": int(np.isfinite(columns[ALIGNMENT]).sum()),
        "clicked": int((columns[POPULARITY] > 0).sum()),
    }


def read_index(loaded) -> Dict[str, np.ndarray]:
    """What a loaded retrieval SavedModel's index holds: `item_ids`, `embeddings` and every column."""
    index = loaded.index
    return {
        ITEM_IDS: index.item_ids.numpy(),
        EMBEDDINGS: index.embeddings.numpy(),
        **{name: variable.numpy() for name, variable in index.columns.items()},
    }


def read_alignment(audit_csv: str) -> Dict[str, float]:
    """item id -> min(ITA, TIA) from a ListingAudit report (`camenn.serving.audit.REPORT_FILE`)."""
    from camenn.serving import audit

    return {a.item_id: a.alignment for a in audit.read_report(audit_csv)}
