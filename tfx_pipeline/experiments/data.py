"""What the experiments read back from one pipeline run on a dataset: the Trainer's training clicks, the
Evaluator's eval rows and the catalog, as arrays for training and scoring models in this process.

- Training clicks: Transform's materialised `train` split, read as the Trainer reads it
  (`training_data.ClickData`: each listing once, content order).
- Eval rows: `AlignmentEvalExamples`' output, the very rows TFMA judges (each eval click, and its hard
  and other-coarse ITA/TIA negatives, with per-task labels and weights), run through the Transform
  graph. A row's text and photo encodings are held once per distinct value (`EvalRows.tables`), so the
  60k set's ~60,000 rows take megabytes, not gigabytes. Each row keeps its request and item id (for the
  oracle), its shopper (for GAUC), the listing quality and the negative kind (for slices).
- Listings: the catalog (`PreprocessDataset`'s items), transformed, for scoring every listing's own pair.

Usage:
```text
rows = read_eval_rows(eval_examples_uri, tft_output)
predictions = model.predict(rows.dataset(model.input, 1024))      # {"cvr": [N], "ita": [N], ...}
```
"""

import dataclasses
import hashlib
import os
from typing import Dict, Iterable, List, Mapping, Optional

import numpy as np
import tensorflow as tf

from camenn.model import features as F
from camenn.tfx_pipeline.training_data import ClickData

# Listing features that are wide (an encoding per listing) and held once per distinct value.
WIDE_FEATURES = (F.TEXT_EMBEDDINGS, F.TEXT_TOKEN_IDS, F.PATCH_EMBEDDINGS)
_READ_BATCH = 1024


def _split_files(uri: str, split: str) -> List[str]:
    files = sorted(tf.io.gfile.glob(os.path.join(uri, f"Split-{split}", "*")))
    if not files:
        raise FileNotFoundError(f"no {split} split under {uri}")
    return files


def _records(files: Iterable[str]) -> tf.data.Dataset:
    return tf.data.TFRecordDataset(list(files), compression_type="GZIP")


def read_train_clicks(transformed_examples_uri: str, tft_output) -> ClickData:
    """Transform's `train` split in memory as the Trainer holds it (`ClickData.read`).

    Args:
        transformed_examples_uri: Transform's `transformed_examples` artifact.
        tft_output: `tft.TFTransformOutput` of the same run.
    """
    spec = tft_output.transformed_feature_spec()
    batches = (
        _records(_split_files(transformed_examples_uri, "train"))
        .batch(_READ_BATCH)
        .map(lambda serialized: tf.io.parse_example(serialized, spec))
    )
    return ClickData.read(batches, F.LISTING_INPUTS)


@dataclasses.dataclass
class EvalRows:
    """The Evaluator's rows, transformed.

    Attributes:
        columns: per-row model inputs (ids, hour, numbers: [N]) and, for each wide feature, its row's
            index into `tables`.
        tables: wide feature -> [distinct values, width].
        labels, weights: task -> [N] (TFMA's labels and example weights: a row counts for a task where
            its weight is positive).
        request_id, item_id, shopper_id: [N] raw ids (bytes).
        listing_quality: [N] bytes (`unknown` without a truth file); negative_kind: [N] tuples of bytes.
        train_rate: [N] the training split's conversion rate (normalized entropy's prior).
        oracle: [N] true conversion probability of the click (NaN where unknown; `attach_oracle`).
    """

    columns: Dict[str, np.ndarray]
    tables: Dict[str, np.ndarray]
    labels: Dict[str, np.ndarray]
    weights: Dict[str, np.ndarray]
    request_id: np.ndarray
    item_id: np.ndarray
    shopper_id: np.ndarray
    listing_quality: np.ndarray
    negative_kind: np.ndarray
    train_rate: np.ndarray
    oracle: Optional[np.ndarray] = None

    def __len__(self) -> int:
        return len(self.request_id)

    def task_rows(self, task: str) -> np.ndarray:
        """Indices of the rows that count for `task`."""
        return np.flatnonzero(self.weights[task] > 0)

    def inputs(self, names: Iterable[str], rows: Optional[np.ndarray] = None) -> Dict[str, np.ndarray]:
        """Model inputs `names` of `rows` (default all), wide features gathered from their tables."""
        rows = np.arange(len(self)) if rows is None else rows
        return {
            name: self.tables[name][self.columns[name][rows]] if name in self.tables else self.columns[name][rows]
            for name in names
        }

    def dataset(self, names: Iterable[str], batch_size: int, rows: Optional[np.ndarray] = None) -> tf.data.Dataset:
        """Batches of model inputs `names` for `rows` (default all), in row order."""
        names = list(names)
        rows = np.arange(len(self)) if rows is None else np.asarray(rows)
        narrow = {name: self.columns[name][rows] for name in names if name not in self.tables}
        index = {name: self.columns[name][rows] for name in names if name in self.tables}
        tables = {name: tf.constant(self.tables[name]) for name in index}

        def gather(batch):
            return {
                **{k: v for k, v in batch.items() if k in narrow},
                **{k: tf.gather(tables[k], batch[k]) for k in index},
            }

        return tf.data.Dataset.from_tensor_slices({**narrow, **index}).batch(batch_size).map(gather)


class _Interner:
    """Assigns each distinct row value (by its bytes) an index, keeping one copy of each."""

    def __init__(self):
        self.index, self.values = {}, []

    def add(self, values: np.ndarray) -> np.ndarray:
        out = np.empty(len(values), np.int64)
        for i, value in enumerate(values):
            key = hashlib.sha256(np.ascontiguousarray(value).tobytes()).digest()
            if key not in self.index:
                self.index[key] = len(self.values)
                self.values.append(np.array(value))
            out[i] = self.index[key]
        return out


def _eval_spec(tft_output) -> dict:
    spec = dict(tft_output.raw_feature_spec())
    spec.update(
        {
            F.EVAL_LABELS[F.ITA]: tf.io.FixedLenFeature([1], tf.int64),
            F.EVAL_LABELS[F.TIA]: tf.io.FixedLenFeature([1], tf.int64),
            **{F.EVAL_WEIGHTS[t]: tf.io.FixedLenFeature([1], tf.float32) for t in F.TASKS},
            F.LISTING_QUALITY: tf.io.FixedLenFeature([1], tf.string),
            F.NEGATIVE_KIND: tf.io.VarLenFeature(tf.string),
            F.TRAIN_CONVERSION_RATE: tf.io.FixedLenFeature([1], tf.float32),
        }
    )
    for name in (F.REQUEST_ID, F.SHOPPER_ID, F.ITEM_ID):
        spec.setdefault(name, tf.io.FixedLenFeature([1], tf.string))
    return spec


def read_eval_rows(eval_examples_uri: str, tft_output) -> EvalRows:
    """`AlignmentEvalExamples`' rows (the `eval` split of its artifact), transformed by `tft_output`."""
    spec = _eval_spec(tft_output)
    raw_names = set(tft_output.raw_feature_spec())
    parts: Dict[str, list] = {}
    interners = {name: _Interner() for name in WIDE_FEATURES}
    for serialized in _records(_split_files(eval_examples_uri, "eval")).batch(_READ_BATCH):
        parsed = tf.io.parse_example(serialized, spec)
        kinds = tf.sparse.to_dense(parsed.pop(F.NEGATIVE_KIND), default_value=b"").numpy()
        transformed = tft_output.transform_raw_features({k: v for k, v in parsed.items() if k in raw_names})
        chunk = {
            name: value.numpy() for name, value in transformed.items() if name in F.MODEL_INPUTS or name == F.LABEL
        }
        for name in WIDE_FEATURES:
            if name in chunk:
                chunk[name] = interners[name].add(chunk[name])
        for name in (
            F.REQUEST_ID,
            F.SHOPPER_ID,
            F.ITEM_ID,
            F.LISTING_QUALITY,
            F.TRAIN_CONVERSION_RATE,
            F.EVAL_LABELS[F.ITA],
            F.EVAL_LABELS[F.TIA],
            *F.EVAL_WEIGHTS.values(),
        ):
            chunk[f"raw/{name}"] = parsed[name].numpy().reshape(-1)
        chunk["raw/kinds"] = np.array([tuple(k for k in row if k) for row in kinds], dtype=object)
        for name, value in chunk.items():
            parts.setdefault(name, []).append(value)
    if not parts:
        raise ValueError(f"{eval_examples_uri} holds no eval rows")
    columns = {name: np.concatenate(chunks) for name, chunks in parts.items()}
    raw = {name[4:]: columns.pop(name) for name in list(columns) if name.startswith("raw/")}
    labels = {
        F.CVR: columns.pop(F.LABEL).astype(np.float64),
        F.ITA: raw[F.EVAL_LABELS[F.ITA]].astype(np.float64),
        F.TIA: raw[F.EVAL_LABELS[F.TIA]].astype(np.float64),
    }
    return EvalRows(
        columns=columns,
        tables={name: np.stack(i.values) for name, i in interners.items() if i.values},
        labels=labels,
        weights={t: raw[F.EVAL_WEIGHTS[t]].astype(np.float64) for t in F.TASKS},
        request_id=raw[F.REQUEST_ID],
        item_id=raw[F.ITEM_ID],
        shopper_id=raw[F.SHOPPER_ID],
        listing_quality=raw[F.LISTING_QUALITY],
        negative_kind=raw["kinds"],
        train_rate=raw[F.TRAIN_CONVERSION_RATE].astype(np.float64),
    )


def attach_oracle(rows: EvalRows, probabilities: Mapping) -> EvalRows:
    """`rows` with each row's true conversion probability (`oracle.read_event_probabilities`)."""
    from camenn.tfx_pipeline.experiments import oracle

    return dataclasses.replace(rows, oracle=oracle.attach(rows.request_id, rows.item_id, probabilities))


@dataclasses.dataclass
class Listings:
    """The catalog's listings, each scored as itself (its own photo and text).

    Attributes:
        raw: feature -> [L] raw listing features (ids as bytes, `merchant_size`, ...).
        inputs: model inputs -> [L]: the listing's transformed features, and for the request side an
            unknown shopper (the first OOV bucket) at noon at the mean distance (ITA and TIA of CameNN
            do not depend on them; a pooled baseline's may).
    """

    raw: Dict[str, np.ndarray]
    inputs: Dict[str, np.ndarray]

    @property
    def item_ids(self) -> List[str]:
        return [i.decode() for i in self.raw[F.ITEM_ID]]


def read_listings(items_uri: str, tft_output) -> Listings:
    """Every good listing `PreprocessDataset` wrote, with model inputs (see `Listings`)."""
    from camenn.serving.listings import read_listing_features
    from camenn.tfx_pipeline import transform
    from camenn.tfx_pipeline.components.listing_audit import transformed_listings

    raw = read_listing_features(items_uri)
    inputs = transformed_listings(tft_output, raw)
    count = len(raw[F.ITEM_ID])
    # The first OOV bucket follows the vocabulary.
    unknown_shopper = tft_output.vocabulary_size_by_name(transform.vocabulary_name(F.SHOPPER_ID))
    inputs[F.SHOPPER_ID] = np.full(count, unknown_shopper, np.int64)
    inputs[F.HOUR] = np.full(count, 12, np.int64)
    inputs[F.DISTANCE_KM] = np.zeros(count, np.float32)
    return Listings(raw=raw, inputs=inputs)
