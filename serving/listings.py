"""A served model version's listing table: filled from a catalog, extended with new or edited listings.

A CameNN SavedModel with listing-only attention carries a listing table (`camenn.model.camenn.export`):
every listing's states, computed once per model version, looked up by item id at request time. This
module fills it from listing features (`camenn preprocess`'s OUT/items, one tf.Example per listing) with
the version's own `encode_listings` signature, and writes the result as a SavedModel again: the
pipeline's `ListingTable` step does this for every trained model, `camenn listings add` to add or
replace listings in a pushed version without retraining (written as the next version, which a server
picks up as it does any push).

Only TensorFlow is imported: no Keras and no CameNN model code, as where stock TensorFlow Serving runs.
"""

import json
import logging
import os
import shutil
import time
from typing import Dict, Mapping, Tuple

import numpy as np
import tensorflow as tf

from camenn.model import features
from camenn.model.listing_table import DISPLAY_COLUMNS, sorted_table
from camenn.serving import examples

log = logging.getLogger(__name__)

ENCODE_LISTINGS_SIGNATURE = "encode_listings"
TABLE_COLLECTION = "listing_table"
EXTRA_ASSETS = "assets.extra"
# How the version's listings were encoded before the model (`camenn preprocess` settings), so that new
# listings are encoded the same way; the Trainer writes it beside the SavedModel.
ENCODING_FILE = os.path.join(EXTRA_ASSETS, "camenn_encoding.json")
ENCODE_BATCH = 256


def _variable_name(variable) -> str:
    return variable.name.split(":")[0].split("/")[-1]


def table_variables(loaded) -> Dict[str, tf.Variable]:
    """The listing table's variables of a loaded SavedModel, by column name (`item_ids`, `fingerprints`, ...)."""
    collection = getattr(loaded, TABLE_COLLECTION, None)
    if collection is None:
        raise ValueError(
            "the SavedModel has no listing table (a model without listing-only attention, or "
            "exported before listing tables existed): nothing to fill"
        )
    return {_variable_name(v): v for v in collection}


def has_listing_table(saved_model_dir: str) -> bool:
    """Whether the SavedModel has the signature that fills a listing table (read off its MetaGraph)."""
    from camenn.serving.servables import read_meta_graph

    return ENCODE_LISTINGS_SIGNATURE in read_meta_graph(saved_model_dir).signature_def


def read_table(loaded) -> Dict[str, np.ndarray]:
    """The rows a loaded SavedModel's listing table holds, as arrays (item ids as bytes)."""
    return {name: v.numpy() for name, v in table_variables(loaded).items()}


def read_listing_features(folder: str) -> Dict[str, np.ndarray]:
    """Listing features from `camenn preprocess`'s OUT/items (or OUT) as one array per feature."""
    if os.path.isdir(os.path.join(folder, "items")):
        folder = os.path.join(folder, "items")
    return examples.parse_columns(examples.read_tfrecords(examples.tfrecord_pattern(folder)))


def encode(loaded, listings: Mapping[str, np.ndarray], batch_size: int = ENCODE_BATCH) -> Dict[str, np.ndarray]:
    """Runs the version's `encode_listings` signature over `listings` (arrays by feature name) in batches."""
    signature = loaded.signatures[ENCODE_LISTINGS_SIGNATURE]
    specs = signature.structured_input_signature[1]
    names = sorted(specs)
    missing = [name for name in names if name not in listings]
    if missing:
        raise KeyError(f"the model encodes listings from {names}; the listings lack {missing}")
    count = len(listings[features.ITEM_ID])
    parts: Dict[str, list] = {}
    started = time.time()
    for start in range(0, count, batch_size):
        batch = {
            name: tf.constant(np.asarray(listings[name])[start : start + batch_size], dtype=specs[name].dtype)
            for name in names
        }
        for name, value in signature(**batch).items():
            parts.setdefault(name, []).append(value.numpy())
    log.info("encoded %d listings in %.1f s", count, time.time() - started)
    return {name: np.concatenate(chunks) for name, chunks in parts.items()}


def _display_columns(listings: Mapping[str, np.ndarray]) -> Dict[str, np.ndarray]:
    columns = {}
    for name, dtype in DISPLAY_COLUMNS.items():
        value = np.asarray(listings[name]) if name in listings else None
        if value is None:
            value = np.full(
                len(listings[features.ITEM_ID]),
                b"" if dtype == tf.string else np.nan,
                dtype=object if dtype == tf.string else np.float32,
            )
        columns[name] = value.reshape(-1).astype(object if dtype == tf.string else dtype.as_numpy_dtype)
    return columns


def write_listing_table(
    saved_model_dir: str, listings: Mapping[str, np.ndarray], output_dir: str, keep_existing: bool = False
) -> Dict[str, int]:
    """Writes `saved_model_dir` to `output_dir` with its listing table filled from `listings`.

    Args:
        saved_model_dir: a CameNN SavedModel with a listing table.
        listings: listing features by name (`read_listing_features`): the model's listing inputs, the
            item id, and the display columns (`title`, `merchant_id`, `category`, `price`) where present.
        output_dir: where the SavedModel goes (must not exist yet; `assets.extra` is copied along).
        keep_existing: keep the rows already in the table, replacing those whose item id `listings`
            names again (an edited listing) and adding the others; else the table holds `listings` only.

    Returns:
        counts: `listings` (rows in the written table), `added`, `replaced`.
    """
    if tf.io.gfile.exists(output_dir):
        raise FileExistsError(f"{output_dir} exists: write the table into a new folder")
    loaded = tf.saved_model.load(saved_model_dir)
    variables = table_variables(loaded)
    item_ids = [
        bytes(i) if not isinstance(i, str) else i.encode() for i in np.asarray(listings[features.ITEM_ID]).reshape(-1)
    ]
    rows = {**encode(loaded, listings), **_display_columns(listings)}
    replaced = 0
    if keep_existing:
        old = read_table(loaded)
        named = set(item_ids)
        keep = [i for i, item_id in enumerate(old["item_ids"]) if item_id not in named]
        replaced = len(old["item_ids"]) - len(keep)
        item_ids = [old["item_ids"][i] for i in keep] + item_ids
        rows = {name: np.concatenate([old[name][keep], value]) for name, value in rows.items()}
    ids, fingerprints, columns = sorted_table(item_ids, rows)
    unexpected = set(variables) - {"item_ids", "fingerprints"} - set(columns)
    if unexpected:
        raise ValueError(f"the model's table has columns {sorted(unexpected)} that the encoding did not produce")
    variables["item_ids"].assign(ids.astype(bytes))
    variables["fingerprints"].assign(fingerprints)
    for name, value in columns.items():
        variables[name].assign(value)
    tf.saved_model.save(loaded, output_dir, signatures=dict(loaded.signatures))
    extra = os.path.join(saved_model_dir, EXTRA_ASSETS)
    if os.path.isdir(extra):
        shutil.copytree(extra, os.path.join(output_dir, EXTRA_ASSETS))
    return {"listings": len(ids), "added": len(listings[features.ITEM_ID]) - replaced, "replaced": replaced}


def write_encoding(saved_model_dir: str, encoding: Mapping[str, object]) -> str:
    """Records the preprocessing settings (`text_encoder`, `num_text_tokens`, `image_encoder`,
    `image_preset`, `grid`, `max_text_length`) in the version (`ENCODING_FILE`)."""
    path = os.path.join(saved_model_dir, ENCODING_FILE)
    tf.io.gfile.makedirs(os.path.dirname(path))
    with tf.io.gfile.GFile(path, "w") as f:
        f.write(json.dumps(dict(encoding), indent=2, sort_keys=True))
    return path


def read_encoding(saved_model_dir: str) -> Dict[str, object]:
    path = os.path.join(saved_model_dir, ENCODING_FILE)
    if not tf.io.gfile.exists(path):
        raise FileNotFoundError(
            f"{path} is missing: the version does not say how its listings were encoded "
            "(preprocess the new listings with the model's settings and pass --items)"
        )
    with tf.io.gfile.GFile(path) as f:
        return json.loads(f.read())


def add_listings(model_base_path: str, listings: Mapping[str, np.ndarray]) -> Tuple[str, Dict[str, int]]:
    """Writes the newest version of `model_base_path` again as the next version, with `listings` added to
    its listing table (an item id it already holds is replaced: an edited listing). A server watching the
    base path loads the new version as it would any push; the old one is left as it was.

    Returns:
        (the new version's folder, `write_listing_table`'s counts).
    """
    from camenn.serving.servables import version_directories

    versions = version_directories(model_base_path)
    if not versions:
        raise FileNotFoundError(f"no SavedModel version under {model_base_path}")
    newest = max(versions)
    staging = os.path.join(model_base_path, f".staging-{newest + 1}")
    if tf.io.gfile.exists(staging):
        tf.io.gfile.rmtree(staging)
    counts = write_listing_table(versions[newest], listings, staging, keep_existing=True)
    destination = os.path.join(model_base_path, str(newest + 1))
    tf.io.gfile.rename(staging, destination)  # complete before it appears, as the Pusher writes a version
    return destination, counts
