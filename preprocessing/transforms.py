"""The stages of `camenn preprocess` (pipeline.py wires them): rows in, tf.Examples, quarantine and counts out.

Each stage is a composite PTransform with one job, so it can be tested on a few in-memory rows. A stage
returns a tuple of PCollections: what it passes on, the rows it rejects (`dataset.Rejected`, each with its
reason, for the quarantine) where it rejects any, and its tallies, (name, 1) per counted element. All
tallies meet in `WriteStats`, one CombinePerKey for the whole run; `pipeline._summarize` reads the names.
The stages that attach encodings from the cache are in `embedding_cache.py`.
"""

import csv
import dataclasses
import io
import json
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import apache_beam as beam
import numpy as np
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from camenn.model import features
from camenn.preprocessing import dataset, defaults
from camenn.preprocessing.dataset import Rejected, RowError

REJECTED = "rejected"
EXAMPLE_SUFFIX = ".tfrecord.gz"
TIME_RANGE = "split/time_range"
# OUT/<folders>/<prefix>-*.tfrecord.gz of each kind of tf.Example (ExampleGen and the serving cache read them).
EXAMPLE_FILES = {
    "items": ("items", "items"),
    "train": ("examples", "train", "train"),
    "eval": ("examples", "eval", "eval"),
}


@dataclasses.dataclass(frozen=True)
class Listing:
    """A good items.csv row on its way through the pipeline."""

    row: int
    fields: Dict[str, str]
    item: dataset.Item
    image_key: str = ""
    token_ids: Optional[np.ndarray] = None
    truncated: bool = False
    text_key: str = ""
    text_embeddings: Optional[np.ndarray] = None
    patch_embeddings: Optional[np.ndarray] = None


def rejected_listing(listing: Listing, reason: str, detail: str) -> Rejected:
    return Rejected(dataset.ITEMS_FILE, listing.row, reason, detail, listing.fields)


def tally(pcoll, name: str, label: str):
    """(name, 1) per element, for WriteStats to sum."""
    return pcoll | f"Tally{label}" >> beam.Map(lambda _: (name, 1))


def _tally_reasons(rejected, prefix: str, label: str):
    return rejected | f"Tally{label}" >> beam.Map(lambda r: (f"{prefix}/{r.reason}", 1))


class ReadCsv(beam.DoFn):
    """A dataset CSV -> (row, fields) for each record, Rejected (tagged) for records that are not rows.

    Streams (`dataset.read_rows`), up to the size the file had when reading began.
    """

    def __init__(self, columns, file_name: str):
        self.columns, self.file_name = columns, file_name

    def process(self, path: str):
        try:
            size = FileSystems.match([path])[0].metadata_list[0].size_in_bytes
            stream = FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED)
        except Exception as error:  # noqa: BLE001 - each filesystem raises its own kinds
            raise dataset.DatasetFormatError(
                f"{path} could not be opened: it vanished or became unreadable after its header was checked ({error})"
            ) from None
        with stream:
            for row, record in dataset.read_rows(stream, self.columns, self.file_name, size):
                if isinstance(record, Rejected):
                    yield beam.pvalue.TaggedOutput(REJECTED, record)
                else:
                    yield row, record


def _parse_items(element):
    row, fields = element
    try:
        yield Listing(row, fields, dataset.parse_item(fields))
    except RowError as error:
        yield beam.pvalue.TaggedOutput(REJECTED, Rejected(dataset.ITEMS_FILE, row, error.reason, error.detail, fields))


def _parse_events(element):
    row, fields = element
    try:
        event = dataset.parse_event(fields)
        yield event.item_id, (row, fields, event)
    except RowError as error:
        yield beam.pvalue.TaggedOutput(REJECTED, Rejected(dataset.EVENTS_FILE, row, error.reason, error.detail, fields))


def _first_per_item_id(element):
    """Keeps the first row of each item_id; later rows are `duplicate_item_id`."""
    _, listings = element
    first, *others = sorted(listings, key=lambda listing: listing.row)
    yield first
    for listing in others:
        yield beam.pvalue.TaggedOutput(
            REJECTED,
            rejected_listing(listing, "duplicate_item_id", f"row {first.row} has item_id {first.item.item_id!r}"),
        )


class ReadAndCheckRows(beam.PTransform):
    """PBegin -> (parsed, rejected, counts): the rows of the dataset CSVs at `paths`, checked.

    `parse` turns (row, fields) into what passes on, or a REJECTED-tagged Rejected with the row's reason;
    records that are not rows (`dataset.read_rows`) are rejected before it. Counts `{kind}/in` per record.
    """

    def __init__(self, paths: Sequence[str], columns, file_name: str, parse: Callable, kind: str):
        super().__init__()
        self.paths, self.columns, self.file_name, self.parse, self.kind = list(paths), columns, file_name, parse, kind

    def expand(self, pbegin):
        records = (
            pbegin
            | "Path" >> beam.Create(self.paths)
            | "Read" >> beam.ParDo(ReadCsv(self.columns, self.file_name)).with_outputs(REJECTED, main="rows")
        )
        # One file is one element, read by one worker: the reshuffle spreads its rows over all of them.
        parsed = (
            records.rows
            | "Shuffle" >> beam.Reshuffle()
            | "Parse" >> beam.FlatMap(self.parse).with_outputs(REJECTED, main="parsed")
        )
        rejected = (records[REJECTED], parsed[REJECTED]) | "Rejected" >> beam.Flatten()
        counts = (
            tally(records.rows, f"{self.kind}/in", "Rows"),
            tally(records[REJECTED], f"{self.kind}/in", "BadRecords"),
        ) | "Counts" >> beam.Flatten()
        return parsed.parsed, rejected, counts


class ReadAndCheckListings(beam.PTransform):
    """PBegin -> (listings, rejected, counts): items.csv's good rows as Listings, the first row per item_id.

    Counts `items/in` per record of the file.
    """

    def __init__(self, items_path: str):
        super().__init__()
        self.items_path = items_path

    def expand(self, pbegin):
        listings, rejected, counts = pbegin | "ReadItems" >> ReadAndCheckRows(
            [self.items_path], dataset.ITEM_COLUMNS, dataset.ITEMS_FILE, _parse_items, "items"
        )
        unique = (
            listings
            | "ByItemId" >> beam.Map(lambda listing: (listing.item.item_id, listing))
            | "GroupItemId" >> beam.GroupByKey()
            | "FirstPerItemId" >> beam.FlatMap(_first_per_item_id).with_outputs(REJECTED, main="listings")
        )
        rejected = (rejected, unique[REJECTED]) | "Rejected" >> beam.Flatten()
        return unique.listings, rejected, counts


class ReadAndCheckEvents(ReadAndCheckRows):
    """PBegin -> ((item_id, (row, fields, Event)), rejected, counts): events.csv's good rows, keyed by listing.

    Counts `events/in` per record; `events_path` None reads no events (a run over the listings alone).
    """

    def __init__(self, events_path: Optional[str]):
        super().__init__(
            [events_path] if events_path else [], dataset.EVENT_COLUMNS, dataset.EVENTS_FILE, _parse_events, "events"
        )


class Tokenize(beam.DoFn):
    """Batches of listings -> listings with token_ids (the tokenizer is built once per worker)."""

    def __init__(self, max_text_length: int):
        self.max_text_length = max_text_length

    def setup(self):
        from camenn.preprocessing.text import TextTokenizer

        self.tokenizer = TextTokenizer(self.max_text_length)

    def process(self, batch: List[Listing]):
        token_ids, truncated = self.tokenizer([(listing.item.title, listing.item.description) for listing in batch])
        for listing, ids, cut in zip(batch, token_ids, truncated):
            yield dataclasses.replace(listing, token_ids=ids, truncated=bool(cut))

    def teardown(self):
        del self.tokenizer  # its tf.function is freed now, not noisily at interpreter exit


class TokenizeTexts(beam.PTransform):
    """Listings -> (listings with `max_text_length` token ids of title and description, counts).

    Counts `text/truncated` per listing whose text was cut to fit.
    """

    def __init__(self, max_text_length: int):
        super().__init__()
        self.max_text_length = max_text_length

    def expand(self, listings):
        tokenized = (
            listings
            | "BatchTexts" >> beam.BatchElements(min_batch_size=16, max_batch_size=256)
            | "Tokenize" >> beam.ParDo(Tokenize(self.max_text_length))
        )
        truncated = tokenized | "Truncated" >> beam.Filter(lambda listing: listing.truncated)
        return tokenized, tally(truncated, "text/truncated", "Truncated")


def _feature(values, kind: str):
    import tensorflow as tf

    if kind == "bytes":
        return tf.train.Feature(bytes_list=tf.train.BytesList(value=[v.encode("utf-8") for v in values]))
    if kind == "float":
        return tf.train.Feature(float_list=tf.train.FloatList(value=values))
    return tf.train.Feature(int64_list=tf.train.Int64List(value=values))


def _item_example(listing: Listing, merchant_listings: Dict[str, int]) -> Tuple[str, bytes]:
    """(item_id, serialized tf.Example with features.ITEM_FEATURES)."""
    import tensorflow as tf

    item = listing.item
    example = tf.train.Example(
        features=tf.train.Features(
            feature={
                features.ITEM_ID: _feature([item.item_id], "bytes"),
                features.MERCHANT_ID: _feature([item.merchant_id], "bytes"),
                features.CATEGORY: _feature([item.category], "bytes"),
                features.COARSE_CATEGORY: _feature([item.coarse_category], "bytes"),
                features.MERCHANT_SIZE: _feature(
                    [dataset.merchant_size_label(merchant_listings.get(item.merchant_id, 0))], "bytes"
                ),
                features.PRICE: _feature([item.price], "float"),
                features.TITLE: _feature([item.title], "bytes"),
                features.TEXT_TOKEN_IDS: _feature(listing.token_ids.tolist(), "int64"),
                features.TEXT_EMBEDDINGS: _feature(listing.text_embeddings.reshape(-1).tolist(), "float"),
                features.PATCH_EMBEDDINGS: _feature(listing.patch_embeddings.reshape(-1).tolist(), "float"),
            }
        )
    )
    # deterministic: map entries in key order, so every runner and process writes the same bytes
    return item.item_id, example.SerializeToString(deterministic=True)


class ItemExamples(beam.PTransform):
    """Listings with their encodings -> ((item_id, serialized tf.Example of features.ITEM_FEATURES), counts).

    merchant_size comes from the number of listings kept per merchant. Counts `items/out`.
    """

    def expand(self, listings):
        merchant_listings = (
            listings
            | "MerchantOf" >> beam.Map(lambda listing: listing.item.merchant_id)
            | "ListingsPerMerchant" >> beam.combiners.Count.PerElement()
        )
        examples = listings | "ItemExamples" >> beam.Map(
            _item_example, merchant_listings=beam.pvalue.AsDict(merchant_listings)
        )
        return examples, tally(examples, "items/out", "ItemsOut")


def _join_events(element):
    """CoGroupByKey by item_id -> (timestamp, serialized event tf.Example), or Rejected events."""
    import tensorflow as tf

    item_id, grouped = element
    items = list(grouped["items"])
    item_errors = list(grouped["item_errors"])
    for row, fields, event in grouped["events"]:
        if not items:
            if item_errors:
                error = min(item_errors, key=lambda r: r.row)
                reason, detail = "item_quarantined", f"{error.reason}: {error.detail} (items.csv row {error.row})"
            else:
                reason, detail = "unknown_item", f"item_id {item_id!r} is not in {dataset.ITEMS_FILE}"
            yield beam.pvalue.TaggedOutput(REJECTED, Rejected(dataset.EVENTS_FILE, row, reason, detail, fields))
            continue
        example = tf.train.Example.FromString(items[0])
        feature = example.features.feature
        del feature[features.TITLE]  # display only: the serving table keeps it, the model never reads it
        feature[features.REQUEST_ID].CopyFrom(_feature([event.request_id], "bytes"))
        feature[features.SHOPPER_ID].CopyFrom(_feature([event.shopper_id], "bytes"))
        feature[features.TIMESTAMP].CopyFrom(_feature([event.timestamp], "int64"))
        feature[features.HOUR].CopyFrom(_feature([event.hour], "int64"))
        feature[features.DISTANCE_KM].CopyFrom(_feature([event.distance_km], "float"))
        feature[features.LABEL].CopyFrom(_feature([event.converted], "int64"))
        yield event.timestamp, example.SerializeToString(deterministic=True)


class JoinEvents(beam.PTransform):
    """{"events", "items", "rejected_items"} -> (examples, rejected): each event with its listing's features.

    events: (item_id, (row, fields, Event)); items: (item_id, serialized item tf.Example); rejected_items:
    items.csv's Rejected rows. Examples are (timestamp, serialized event tf.Example); an event whose listing
    was quarantined is rejected as `item_quarantined` with the listing's reason, any other without a
    listing as `unknown_item`.
    """

    def expand(self, inputs):
        item_errors = (
            inputs["rejected_items"]
            | "ErrorByItemId" >> beam.Map(lambda r: (r.fields.get(features.ITEM_ID, "").strip(), r))
            | "WithItemId" >> beam.Filter(lambda kv: kv[0])
        )
        joined = (
            {"items": inputs["items"], "item_errors": item_errors, "events": inputs["events"]}
            | "JoinEvents" >> beam.CoGroupByKey()
            | "EventExamples" >> beam.FlatMap(_join_events).with_outputs(REJECTED, main="examples")
        )
        return joined.examples, joined[REJECTED]


class TimeRange(beam.CombineFn):
    """(first, last) timestamp, or None for no events."""

    def create_accumulator(self):
        return None

    def add_input(self, accumulator, timestamp):
        return (
            (timestamp, timestamp)
            if accumulator is None
            else (min(accumulator[0], timestamp), max(accumulator[1], timestamp))
        )

    def merge_accumulators(self, accumulators):
        present = [a for a in accumulators if a is not None]
        return (min(a[0] for a in present), max(a[1] for a in present)) if present else None

    def extract_output(self, accumulator):
        return accumulator


def eval_cutoff(time_range, eval_fraction: float = defaults.EVAL_FRACTION) -> Optional[float]:
    """Events with timestamp > cutoff are eval: the last `eval_fraction` of the time range."""
    if time_range is None:
        return None
    first, last = time_range
    return first + (1.0 - eval_fraction) * (last - first)


class SplitByTime(beam.PTransform):
    """(timestamp, example) -> (train, eval, time_range, counts): the last part of the time range is eval
    (`eval_cutoff`); time_range is a one-element PCollection, (first, last) or None.

    Counts `events/train` and `events/eval`.
    """

    def expand(self, examples):
        time_range = examples | "Timestamps" >> beam.Keys() | "TimeRange" >> beam.CombineGlobally(TimeRange())
        train, evaluation = examples | "SplitByTime" >> beam.Partition(
            lambda kv, _, time_range: int(time_range is not None and kv[0] > eval_cutoff(time_range)),
            2,
            time_range=beam.pvalue.AsSingleton(time_range),
        )
        counts = (
            tally(train, "events/train", "Train"),
            tally(evaluation, "events/eval", "Eval"),
        ) | "Counts" >> beam.Flatten()
        return train, evaluation, time_range, counts


class WriteExamples(beam.PTransform):
    """{"items", "train", "eval": (key, serialized tf.Example)} -> the gzipped TFRecord files of
    EXAMPLE_FILES under `output_dir`; returns {kind: the written file names}."""

    def __init__(self, output_dir: str):
        super().__init__()
        self.output_dir = output_dir

    def expand(self, examples):
        return {
            kind: (
                examples[kind]
                | f"{kind}Bytes" >> beam.Values()
                | f"Write{kind}"
                >> beam.io.WriteToTFRecord(FileSystems.join(self.output_dir, *parts), file_name_suffix=EXAMPLE_SUFFIX)
            )
            for kind, parts in EXAMPLE_FILES.items()
        }


def _quarantine_line(rejected: Rejected, header: Sequence[str]) -> str:
    text = io.StringIO()
    csv.writer(text, lineterminator="").writerow(
        [rejected.reason, rejected.detail, rejected.row] + [rejected.fields.get(name, "") for name in header]
    )
    return text.getvalue()


def _quarantine_header(header: Sequence[str]) -> str:
    return ",".join(["reason", "detail", "row"] + [f'"{h}"' if "," in h else h for h in header])


class WriteQuarantine(beam.PTransform):
    """Rejected rows of one file -> OUT/quarantine/{kind}.csv (reason, detail, row, then the row's fields in
    `header` order); returns the counts `{kind}/quarantined/{reason}`."""

    def __init__(self, output_dir: str, kind: str, header: Sequence[str]):
        super().__init__()
        self.output_dir, self.kind, self.header = output_dir, kind, list(header)

    def expand(self, rejected):
        _ = (
            rejected
            | "Format" >> beam.Map(_quarantine_line, header=self.header)
            | "Write"
            >> beam.io.WriteToText(
                FileSystems.join(self.output_dir, "quarantine", self.kind),
                file_name_suffix=".csv",
                shard_name_template="",
                header=_quarantine_header(self.header),
            )
        )
        return _tally_reasons(rejected, f"{self.kind}/quarantined", "Reasons")


class WriteStats(beam.PTransform):
    """{"counts": (name, n), "time_range": one (first, last) or None} -> one JSON [name, value] per line at
    `path`: each name's sum, and TIME_RANGE (what `pipeline._summarize` reads)."""

    def __init__(self, path: str):
        super().__init__()
        self.path = path

    def expand(self, stats):
        counts = stats["counts"] | "SumCounts" >> beam.CombinePerKey(sum)
        time_range = stats["time_range"] | "NameTimeRange" >> beam.Map(lambda r: (TIME_RANGE, r))
        return (
            (counts, time_range)
            | "AllStats" >> beam.Flatten()
            | "StatsJson" >> beam.Map(json.dumps)
            | "WriteStats" >> beam.io.WriteToText(self.path, shard_name_template="")
        )
