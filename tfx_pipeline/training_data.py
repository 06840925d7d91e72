"""The Trainer's data: the clicks of a split and the distinct listings they point to, in memory, in an
order that depends only on their content.

Every transformed example repeats its listing's features (the cached text and patch encodings: ~27 KB
of ~27 KB per click on the sample); held once per distinct listing, with each click keeping only its own
few numbers and the row of its listing, the sample's training split takes ~13 MB instead of ~130 MB and
each batch gathers its listings' rows instead of parsing them again every epoch.

Beam and TFX write their outputs in an order that can change from run to run (work is reshuffled and
split across bundles), and a seeded shuffle of a differently ordered input is a different order. So the
clicks and listings are sorted by a hash of their content: the same data gives the same order, and with
the same seed the same batches, whatever order the files held it in.
"""

import dataclasses
import hashlib
import logging
from typing import Dict, Sequence

import numpy as np
import tensorflow as tf

from camenn.model import features as F

logger = logging.getLogger(__name__)
LISTING_ROW = "listing_row"


def _row_digests(columns: Dict[str, np.ndarray], names: Sequence[str]) -> np.ndarray:
    """A content hash per row over the columns `names` (bytes of each value, in name order)."""
    count = len(next(iter(columns.values())))
    digests = [hashlib.sha256() for _ in range(count)]
    for name in sorted(names):
        values = np.ascontiguousarray(columns[name]).reshape(count, -1)
        for digest, row in zip(digests, values):
            digest.update(name.encode())
            digest.update(row.tobytes())
    return np.array([d.digest() for d in digests], dtype=object)


@dataclasses.dataclass
class ClickData:
    """A split's clicks (`clicks`: per-click features and `LISTING_ROW`) and their distinct listings
    (`listings`: listing features, one row each), both in content order."""

    clicks: Dict[str, np.ndarray]
    listings: Dict[str, np.ndarray]

    @classmethod
    def read(cls, batches: tf.data.Dataset, listing_names: Sequence[str]) -> "ClickData":
        """Reads every batch of transformed examples (dicts of tensors, the label included).

        Args:
            batches: a finite dataset of batches, e.g. the TFX data accessor's over a split.
            listing_names: the features that belong to the listing (held once per distinct listing).
        """
        parts: Dict[str, list] = {}
        for batch in batches.as_numpy_iterator():
            for name, value in batch.items():
                parts.setdefault(name, []).append(value)
        if not parts:
            raise ValueError("the split holds no examples")
        columns = {name: np.concatenate(chunks) for name, chunks in parts.items()}
        listing_names = [name for name in listing_names if name in columns]
        listing_keys = _row_digests(columns, listing_names)
        distinct, first, rows = np.unique(listing_keys, return_index=True, return_inverse=True)
        listings = {name: columns[name][first] for name in listing_names}  # sorted by content hash
        clicks = {name: value for name, value in columns.items() if name not in listing_names}
        clicks[LISTING_ROW] = rows.astype(np.int64)
        order = np.argsort(_row_digests(clicks, list(clicks)), kind="stable")
        clicks = {name: value[order] for name, value in clicks.items()}
        data = cls(clicks, listings)
        logger.info(
            "%d clicks of %d distinct listings in memory (%.1f MB)", data.num_clicks, len(distinct), data.nbytes / 1e6
        )
        return data

    @property
    def num_clicks(self) -> int:
        return len(self.clicks[LISTING_ROW])

    @property
    def nbytes(self) -> int:
        return sum(v.nbytes for v in (*self.clicks.values(), *self.listings.values()))

    @property
    def conversion_rate(self) -> float:
        return float(np.mean(self.clicks[F.LABEL]))

    def dataset(self, batch_size: int, seed=None, repeat: bool = False) -> tf.data.Dataset:
        """Batches of clicks with their listings' features, reshuffled every pass with `seed` (None: in order)."""
        listings = {name: tf.constant(value) for name, value in self.listings.items()}
        dataset = tf.data.Dataset.from_tensor_slices(self.clicks)
        if seed is not None:
            dataset = dataset.shuffle(self.num_clicks, seed=seed, reshuffle_each_iteration=True)
        if repeat:
            dataset = dataset.repeat()

        def with_listings(batch):
            rows = batch.pop(LISTING_ROW)
            return {**batch, **{name: tf.gather(value, rows) for name, value in listings.items()}}

        return dataset.batch(batch_size).map(with_listings, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)


def read_split(fn_args, tft_output, files) -> ClickData:
    """A TFX Trainer's split (`fn_args.train_files` or `eval_files`) of transformed examples, in memory,
    each listing once, in content order."""
    from tfx_bsl.public import tfxio

    batches = fn_args.data_accessor.tf_dataset_factory(
        files,
        tfxio.TensorFlowDatasetOptions(batch_size=1024, shuffle=False, num_epochs=1),
        tft_output.transformed_metadata.schema,
    )
    return ClickData.read(batches, F.LISTING_INPUTS)


def vocabulary_sizes(tft_output, num_oov_buckets: int) -> Dict[str, int]:
    """Each id feature's embedding table size: Transform's vocabulary plus its OOV buckets."""
    from camenn.tfx_pipeline import transform

    return {
        name: tft_output.vocabulary_size_by_name(transform.vocabulary_name(name)) + num_oov_buckets
        for name in F.ID_FEATURES
    }
