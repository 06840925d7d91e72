"""`AlignmentEvalExamples`: the Evaluator's examples, so that TFMA can judge ITA and TIA as well as CVR.

The eval split holds only true (image, text) pairs, which are all positives for ITA and TIA. This Beam
component writes, for every eval event, three rows:
- the event itself: CVR label as is, ITA and TIA labels 1;
- an ITA negative: the event with another listing's text, of another fine category but the same coarse
  category where there is one (a hard negative, as in training);
- a TIA negative: the event with another listing's photo (patch embeddings), chosen the same way;
exactly the pairs the model trains its alignment heads on. Per-task example weights say which rows count
for which task (CVR: only true pairs; ITA: true pairs and ITA negatives; TIA: true pairs and TIA
negatives), so one TFMA run scores all three heads. The partner listing is chosen deterministically
(a hash of the event), so the evaluation set is the same on every run.

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
_FALLBACK_POOL = 256  # listings used as partners for categories with a single listing


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
    """(coarse category, {events, items}) -> the three rows per event described in the module docstring."""

    def process(self, element, fallback, quality):
        _, groups = element
        listings = sorted(groups["items"], key=lambda e: _bytes(e, F.ITEM_ID))
        for event in groups["events"]:
            item = _bytes(event, F.ITEM_ID)
            key = _bytes(event, F.REQUEST_ID) + b"/" + item
            category = _bytes(event, F.CATEGORY)
            # As in training: a partner of the same fine category would show the same product, no negative.
            candidates = [e for e in listings if _bytes(e, F.CATEGORY) != category]
            if not candidates:
                candidates = [e for e in fallback if _bytes(e, F.CATEGORY) != category]
            if not candidates:
                beam.metrics.Metrics.counter("camenn", "events_without_negative_partner").inc()
            partner = candidates[_stable_index(key, len(candidates))] if candidates else None
            yield from self._rows(event, partner, quality.get(item, UNKNOWN_QUALITY))

    @staticmethod
    def _rows(event, partner, quality):
        def row(labels, weights, swap=None):
            out = tf.train.Example()
            out.CopyFrom(event)
            feature = out.features.feature
            if swap:
                feature[swap].CopyFrom(partner.features.feature[swap])
            feature[F.LISTING_QUALITY].bytes_list.value[:] = [quality]
            for task in (F.ITA, F.TIA):
                feature[F.EVAL_LABELS[task]].int64_list.value[:] = [labels[task]]
            for task in F.TASKS:
                feature[F.EVAL_WEIGHTS[task]].float_list.value[:] = [weights[task]]
            return out.SerializeToString()

        yield row({F.ITA: 1, F.TIA: 1}, {F.CVR: 1.0, F.ITA: 1.0, F.TIA: 1.0})
        if partner is not None:
            yield row({F.ITA: 0, F.TIA: 1}, {F.CVR: 0.0, F.ITA: 1.0, F.TIA: 0.0}, swap=F.TEXT_TOKEN_IDS)
            yield row({F.ITA: 1, F.TIA: 0}, {F.CVR: 0.0, F.ITA: 0.0, F.TIA: 1.0}, swap=F.PATCH_EMBEDDINGS)


def _read(pipeline, label, pattern):
    return (pipeline
            | f"Read{label}" >> beam.io.ReadFromTFRecord(pattern, compression_type=CompressionTypes.GZIP)
            | f"Parse{label}" >> beam.Map(tf.train.Example.FromString)
            | f"ByCategory{label}" >> beam.Map(lambda e: (_bytes(e, F.COARSE_CATEGORY), e)))


@tfx.dsl.components.component(use_beam=True)
def AlignmentEvalExamples(
    examples: tfx.dsl.components.InputArtifact[tfx.types.standard_artifacts.Examples],
    items: tfx.dsl.components.InputArtifact[ItemFeatures],
    eval_examples: tfx.dsl.components.OutputArtifact[tfx.types.standard_artifacts.Examples],
    listing_quality_file: tfx.dsl.components.Parameter[str] = "",
    beam_pipeline: tfx.dsl.components.BeamComponentParameter[beam.Pipeline] = None,
) -> None:
    """Writes the eval split's events with ITA and TIA negatives and per-task weights (module docstring)."""
    quality = read_listing_quality(listing_quality_file) if listing_quality_file else {}
    eval_examples.split_names = artifact_utils.encode_split_names([SPLIT])
    events_pattern = os.path.join(artifact_utils.get_split_uri([examples], SPLIT), "*")
    output = os.path.join(artifact_utils.get_split_uri([eval_examples], SPLIT), "pairs")
    with beam_pipeline as pipeline:
        events = _read(pipeline, "Events", events_pattern)
        listings = _read(pipeline, "Items", os.path.join(items.uri, "*"))
        fallback = (listings
                    | "Fallback" >> beam.combiners.Top.Of(
                        _FALLBACK_POOL, key=lambda kv: hashlib.sha256(_bytes(kv[1], F.ITEM_ID)).digest())
                    | "FallbackItems" >> beam.Map(lambda kvs: [e for _, e in kvs]))
        _ = ({"events": events, "items": listings}
             | "GroupByCategory" >> beam.CoGroupByKey()
             | "MakePairs" >> beam.ParDo(_MakePairs(), fallback=beam.pvalue.AsSingleton(fallback),
                                         quality=quality)
             | "Write" >> beam.io.WriteToTFRecord(output, file_name_suffix=".gz",
                                                  compression_type=CompressionTypes.GZIP))
    examples_utils.set_payload_format(eval_examples, example_gen_pb2.PayloadFormat.FORMAT_TF_EXAMPLE)
    examples_utils.set_file_format(eval_examples, "tfrecords_gzip")
