"""A SavedModel's listing table: rows per listing, looked up by item id, in TensorFlow variables.

Model-agnostic storage for what a model computes once per listing and version (CameNN's listing states,
`camenn.model.camenn.listing_states`) and for what a client shows beside the scores (`DISPLAY_COLUMNS`).
TensorFlow only: serving code that must not import Keras builds and reads tables with it.
"""

import numpy as np
import tensorflow as tf

from camenn.model import features

# Rows of the table that are not model states: what a ranking client shows beside the scores.
DISPLAY_COLUMNS = {
    features.TITLE: tf.string,
    features.MERCHANT_ID: tf.string,
    features.CATEGORY: tf.string,
    features.PRICE: tf.float32,
}
_FINGERPRINT_BUCKETS = 2**62


class ListingTable(tf.Module):
    """Rows per listing, looked up by item id, inside a SavedModel: model states and display columns.

    Each column is a variable of unknown shape, so a table of any size can replace its contents in a
    loaded SavedModel (`camenn.serving.listings`), which then saves again with the same
    signatures. Lookup hashes the ids (FarmHash64), binary-searches the sorted hashes and checks the
    stored id, so an unknown id is never mistaken for another; `rows` refuses a request naming unknown
    ids with an error that lists them.

    Args:
        columns: name -> (tf.DType, per-row shape) of every column besides the item id.
    """

    def __init__(self, columns, name="listing_table"):
        super().__init__(name=name)
        self.column_names = sorted(columns)
        self.item_ids = tf.Variable(
            tf.zeros([0], tf.string), shape=tf.TensorShape(None), trainable=False, name="item_ids"
        )
        self.fingerprints = tf.Variable(
            tf.zeros([0], tf.int64), shape=tf.TensorShape(None), trainable=False, name="fingerprints"
        )
        self.columns = {
            name: tf.Variable(tf.zeros([0, *shape], dtype), shape=tf.TensorShape(None), trainable=False, name=name)
            for name, (dtype, shape) in sorted(columns.items())
        }

    @property
    def ordered_variables(self):
        """Every variable in a fixed order: item ids, fingerprints, then the columns by name."""
        return [self.item_ids, self.fingerprints] + [self.columns[name] for name in self.column_names]

    def rows(self, item_ids):
        """Row indices [B] of `item_ids` [B] (strings); fails with INVALID_ARGUMENT naming unknown ids."""
        item_ids = tf.ensure_shape(item_ids, [None])
        fingerprints = fingerprint(item_ids)
        size = tf.size(self.fingerprints, out_type=tf.int64)
        position = tf.searchsorted(self.fingerprints, fingerprints, out_type=tf.int64)
        stored = tf.gather(tf.concat([self.item_ids, [""]], 0), tf.minimum(position, size))
        found = tf.ensure_shape((position < size) & tf.equal(stored, item_ids), [None])
        check = tf.debugging.Assert(
            tf.reduce_all(found),
            [
                "unknown item ids:",
                tf.strings.reduce_join(tf.boolean_mask(item_ids, ~found), separator=","),
                "(not in this model version's listing table)",
            ],
            summarize=1,
        )
        with tf.control_dependencies([check]):
            return tf.identity(position)

    def gather(self, rows, names=None):
        return {name: tf.gather(self.columns[name], rows) for name in (names or self.column_names)}


def fingerprint(item_ids):
    """The int64 hash a `ListingTable` sorts its rows by (also for building tables in numpy)."""
    return tf.strings.to_hash_bucket_fast(item_ids, _FINGERPRINT_BUCKETS)


def sorted_table(item_ids, columns):
    """(item ids, fingerprints, columns) sorted by fingerprint, as `ListingTable` variables hold them.

    Args:
        item_ids: array of str or bytes [N], unique.
        columns: name -> array [N, ...].
    """
    ids = np.asarray([i.encode() if isinstance(i, str) else bytes(i) for i in item_ids], dtype=object)
    if len(set(ids)) != len(ids):
        raise ValueError("the listing table needs unique item ids")
    hashes = fingerprint(tf.constant(ids, tf.string)).numpy() if len(ids) else np.zeros([0], np.int64)
    if len(set(hashes.tolist())) != len(hashes):
        raise ValueError("two item ids share a 62-bit fingerprint; rename one of them")
    order = np.argsort(hashes, kind="stable")
    return ids[order], hashes[order], {name: np.asarray(value)[order] for name, value in columns.items()}
