"""`AlignmentEvalExamples`: the Evaluator's examples, so that TFMA can judge ITA and TIA as well as CVR.

The eval split holds only true (image, text) pairs, which are all positives for ITA and TIA. This Beam
component writes, for every eval event, up to five rows:
- the event itself: CVR label as is, ITA and TIA labels 1;
- a hard ITA negative and a hard TIA negative: the event with the text (ITA) or the photo (TIA) of
  another product of the same coarse category (another apple for an apple: the negatives the model
  trains on), where the catalog has one;
- an ITA and a TIA negative of another coarse category (an onion for an apple).
Per-task example weights say which rows count for which task (CVR: only true pairs; ITA: true pairs and
ITA negatives; TIA: true pairs and TIA negatives), so one TFMA run scores all three heads. Every row
carries `features.NEGATIVE_KIND` for slicing: a negative its kind, a true pair both kinds, so that the
slice `negative_kind=hard` is the AUC against hard negatives and `negative_kind=other_coarse` against
the others. The partner listings are chosen deterministically (a hash of the event), so the evaluation
set is the same on every run.

Every row also carries the training split's conversion rate (`features.TRAIN_CONVERSION_RATE`), the
prior that normalized entropy compares the model's log loss with (`camenn.tfx_pipeline.metrics`).

Listing quality, when a per-listing quality file is given (the sample's simulator truth), is attached as
`features.LISTING_QUALITY` for slicing only: it is written here, after Transform and Trainer have read
their data, and the serving signature parses only model inputs, so no model input ever sees it.
"""

import csv
import hashlib
import os

import apache_beam as beam
import tensorflow as tf
from apache_beam.io.filesystem import CompressionTypes
from tfx import v1 as tfx
from tfx.components.util import examples_utils
from tfx.proto import example_gen_pb2
from tfx.types import artifact_utils

from camenn.model import features as F
from camenn.tfx_pipeline.components.artifacts import ItemFeatures

SPLIT = "eval"
UNKNOWN_QUALITY = b"unknown"
_OTHER_COARSE_POOL = 256  # listings the other-coarse negatives are drawn from
# What a negative borrows from its partner, in every form the examples carry it.
_TEXT = (F.TEXT_TOKEN_IDS, F.TEXT_EMBEDDINGS)
_IMAGE = (F.PATCH_EMBEDDINGS,)
_HARD, _OTHER = F.HARD_NEGATIVE.encode(), F.OTHER_COARSE_NEGATIVE.encode()


def _stable_index(key: bytes, n: int) -> int:
    return int.from_bytes(hashlib.sha256(key).digest()[:8], "little") % n


def _bytes(example: tf.train.Example, name: str) -> bytes:
    return example.features.feature[name].bytes_list.value[0]


def read_listing_quality(path: str) -> dict:
    """item_id -> quality label, from a CSV with columns `item_id` and `quality`."""
    with tf.io.gfile.GFile(path) as f:
        rows = list(csv.DictReader(f))
    if rows and not {"item_id", "quality"} <= set(rows[0]):
        raise ValueError(f"{path}: a listing-quality file needs columns item_id and quality, has {list(rows[0])}")
    return {row["item_id"].encode(): row["quality"].encode() for row in rows}


class _MakePairs(beam.DoFn):
    """(coarse category, {events, items}) -> the rows per event described in the module docstring."""

    def process(self, element, pool, quality, train_rate):
        coarse, groups = element
        listings = sorted(groups["items"], key=lambda e: _bytes(e, F.ITEM_ID))
        others = [e for e in pool if _bytes(e, F.COARSE_CATEGORY) != coarse]
        for event in groups["events"]:
            item = _bytes(event, F.ITEM_ID)
            key = _bytes(event, F.REQUEST_ID) + b"/" + item
            category = _bytes(event, F.CATEGORY)
            # As in training: a partner of the same fine category would show the same product, no negative.
            hard = [e for e in listings if _bytes(e, F.CATEGORY) != category]
            if not hard:
                beam.metrics.Metrics.counter("camenn", "events_without_hard_negative").inc()
            if not others:
                beam.metrics.Metrics.counter("camenn", "events_without_other_coarse_negative").inc()
            partners = {
                _HARD: hard[_stable_index(key + b"/hard", len(hard))] if hard else None,
                _OTHER: others[_stable_index(key + b"/other", len(others))] if others else None,
            }
            yield from self._rows(event, partners, quality.get(item, UNKNOWN_QUALITY), train_rate)

    @staticmethod
    def _rows(event, partners, quality, train_rate):
        def row(kinds, labels, weights, partner=None, swap=()):
            out = tf.train.Example()
            out.CopyFrom(event)
            feature = out.features.feature
            for name in swap:
                if name in feature:
                    feature[name].CopyFrom(partner.features.feature[name])
            feature[F.LISTING_QUALITY].bytes_list.value[:] = [quality]
            feature[F.NEGATIVE_KIND].bytes_list.value[:] = kinds
            feature[F.TRAIN_CONVERSION_RATE].float_list.value[:] = [train_rate]
            for task in (F.ITA, F.TIA):
                feature[F.EVAL_LABELS[task]].int64_list.value[:] = [labels[task]]
            for task in F.TASKS:
                feature[F.EVAL_WEIGHTS[task]].float_list.value[:] = [weights[task]]
            return out.SerializeToString()

        yield row([_HARD, _OTHER], {F.ITA: 1, F.TIA: 1}, {F.CVR: 1.0, F.ITA: 1.0, F.TIA: 1.0})
        for kind in (_HARD, _OTHER):
            partner = partners[kind]
            if partner is not None:
                yield row([kind], {F.ITA: 0, F.TIA: 1}, {F.CVR: 0.0, F.ITA: 1.0, F.TIA: 0.0}, partner, _TEXT)
                yield row([kind], {F.ITA: 1, F.TIA: 0}, {F.CVR: 0.0, F.ITA: 0.0, F.TIA: 1.0}, partner, _IMAGE)


def _read(pipeline, label, pattern):
    return (
        pipeline
        | f"Read{label}" >> beam.io.ReadFromTFRecord(pattern, compression_type=CompressionTypes.GZIP)
        | f"Parse{label}" >> beam.Map(tf.train.Example.FromString)
    )


def _label(example: tf.train.Example) -> float:
    return float(example.features.feature[F.LABEL].int64_list.value[0])


@tfx.dsl.components.component(use_beam=True)
def AlignmentEvalExamples(
    examples: tfx.dsl.components.InputArtifact[tfx.types.standard_artifacts.Examples],
    items: tfx.dsl.components.InputArtifact[ItemFeatures],
    eval_examples: tfx.dsl.components.OutputArtifact[tfx.types.standard_artifacts.Examples],
    listing_quality_file: tfx.dsl.components.Parameter[str] = "",
    code_version: tfx.dsl.components.Parameter[str] = "",
    beam_pipeline: tfx.dsl.components.BeamComponentParameter[beam.Pipeline] = None,
) -> None:
    """Writes the eval split's events with ITA and TIA negatives and per-task weights (module docstring)."""
    del code_version  # part of the cache key only (code_version.py)
    quality = read_listing_quality(listing_quality_file) if listing_quality_file else {}
    eval_examples.split_names = artifact_utils.encode_split_names([SPLIT])
    events_pattern = os.path.join(artifact_utils.get_split_uri([examples], SPLIT), "*")
    train_pattern = os.path.join(artifact_utils.get_split_uri([examples], "train"), "*")
    output = os.path.join(artifact_utils.get_split_uri([eval_examples], SPLIT), "pairs")
    with beam_pipeline as pipeline:
        by_coarse = beam.Map(lambda e: (_bytes(e, F.COARSE_CATEGORY), e))
        events = _read(pipeline, "Events", events_pattern) | "EventsByCoarse" >> by_coarse
        listings = _read(pipeline, "Items", os.path.join(items.uri, "*"))
        pool = listings | "OtherCoarsePool" >> beam.combiners.Top.Of(
            _OTHER_COARSE_POOL, key=lambda e: hashlib.sha256(_bytes(e, F.ITEM_ID)).digest()
        )
        train_rate = (
            _read(pipeline, "Train", train_pattern)
            | "TrainLabels" >> beam.Map(_label)
            | "TrainRate" >> beam.combiners.Mean.Globally()
        )
        _ = (
            {"events": events, "items": listings | "ItemsByCoarse" >> by_coarse}
            | "GroupByCoarse" >> beam.CoGroupByKey()
            | "MakePairs"
            >> beam.ParDo(
                _MakePairs(),
                pool=beam.pvalue.AsSingleton(pool),
                quality=quality,
                train_rate=beam.pvalue.AsSingleton(train_rate),
            )
            | "Write" >> beam.io.WriteToTFRecord(output, file_name_suffix=".gz", compression_type=CompressionTypes.GZIP)
        )
    examples_utils.set_payload_format(eval_examples, example_gen_pb2.PayloadFormat.FORMAT_TF_EXAMPLE)
    examples_utils.set_file_format(eval_examples, "tfrecords_gzip")
