"""`camenn preprocess`: the Beam pipeline from a dataset folder to ExampleGen-ready tf.Examples.

    items.csv -> checked rows -> one row per item_id -> WordPiece ids
        texts not in the cache -> EmbedTexts (frozen BERT, pooled tokens) -> written to the cache
        photo read and content-hashed; photos not in the cache -> decoded -> patches -> EmbedPatches
        -> written to the cache
        -> OUT/items/*.tfrecord.gz (features.ITEM_FEATURES, merchant_size from listings kept per merchant)
    events.csv -> checked rows -> joined to their listing -> split by time
        -> OUT/examples/{train,eval}/*.tfrecord.gz (item features + event features + label)
    every rejected row -> OUT/quarantine/{items,events}.csv with its reason; counts -> OUT/summary.json

Encodings are cached under `cache_dir` by content: `texts/` by sha256(token ids, text encoder, tokens per
text, CACHE_VERSION), `patches/` by sha256(image bytes, encoder, preset, grid, CACHE_VERSION). A second run
over an unchanged catalog neither encodes a text nor decodes or embeds a photo; an edited listing is
encoded again, since its content changed. On a distributed runner, `cache_dir` must be a path every
worker reaches (e.g. gs://...).
"""
import dataclasses
import hashlib
import io
import json
import logging
import time
import uuid
from typing import Dict, List, Optional, Sequence, Tuple, Union

import apache_beam as beam
import numpy as np
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions

from camenn import paths
from camenn.model import features
from camenn.preprocessing import dataset, defaults, images, photo_files
from camenn.preprocessing.dataset import Rejected, RowError

log = logging.getLogger(__name__)

# Part of every cache key: bump it when decoding or splitting changes what an image's patches are.
CACHE_VERSION = "1"
REJECTED = "rejected"
MISS = "miss"
EXAMPLE_SUFFIX = ".tfrecord.gz"
PROGRESS_EVERY = 100
TIME_RANGE = "split/time_range"


def default_cache_dir() -> str:
    return str(paths.cache_dir() / "embeddings")


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


def _rejected_listing(listing: Listing, reason: str, detail: str) -> Rejected:
    return Rejected(dataset.ITEMS_FILE, listing.row, reason, detail, listing.fields)


def _tally(pcoll, name: str, label: str):
    """(name, 1) per element; every tally goes into one CombinePerKey (one stage, not one per count)."""
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
            raise dataset.DatasetFormatError(f"{path} could not be opened: it vanished or became unreadable "
                                             f"after its header was checked ({error})") from None
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
        yield beam.pvalue.TaggedOutput(REJECTED, _rejected_listing(
            listing, "duplicate_item_id", f"row {first.row} has item_id {first.item.item_id!r}"))


class HashImage(beam.DoFn):
    """Listing -> (cache key, listing with image_key), or the listing Rejected with the photo's reason.

    The photo is opened as `photo_files` allows (inside the dataset folder, a regular file, bounded).
    """

    def __init__(self, dataset_dir: str, salt: str, max_bytes: int = photo_files.MAX_PHOTO_BYTES):
        self.dataset_dir, self.salt, self.max_bytes = dataset_dir, salt, max_bytes

    def process(self, listing: Listing):
        path = FileSystems.join(self.dataset_dir, listing.item.image_path)
        try:
            key = photo_files.hash_photo(self.dataset_dir, path, self.salt, self.max_bytes)
        except RowError as error:
            yield beam.pvalue.TaggedOutput(REJECTED, _rejected_listing(listing, error.reason, error.detail))
            return
        except Exception as error:  # FileSystems raises BeamIOError, IOError, ... by backend.
            yield beam.pvalue.TaggedOutput(REJECTED, _rejected_listing(
                listing, "missing_image", f"{listing.item.image_path}: {error}"))
            return
        yield key, (path, dataclasses.replace(listing, image_key=key))


class Tokenize(beam.DoFn):
    """Batches of listings -> listings with token_ids (the tokenizer is built once per worker)."""

    def __init__(self, max_text_length: int):
        self.max_text_length = max_text_length

    def setup(self):
        from camenn.preprocessing.text import TextTokenizer

        self.tokenizer = TextTokenizer(self.max_text_length)

    def process(self, batch: List[Listing]):
        token_ids, truncated = self.tokenizer([(l.item.title, l.item.description) for l in batch])
        for listing, ids, cut in zip(batch, token_ids, truncated):
            yield dataclasses.replace(listing, token_ids=ids, truncated=bool(cut))

    def teardown(self):
        del self.tokenizer  # its tf.function is freed now, not noisily at interpreter exit


def _cache_path(cache_dir: str, key: str) -> str:
    return FileSystems.join(cache_dir, key[:2], f"{key}.npy")


def _text_key(listing: Listing, salt: str) -> str:
    return hashlib.sha256(listing.token_ids.astype("<i8").tobytes() + salt.encode()).hexdigest()


class LookupCache(beam.DoFn):
    """(key, payload) -> (key, cached float32 [rows, D] encoding), or tagged MISS (key, payload) when the
    cache has no readable entry of `rows` rows (the payload is what computing it needs: a photo's path,
    a text's token ids)."""

    def __init__(self, cache_dir: str, rows: int):
        self.cache_dir, self.rows = cache_dir, rows

    def process(self, element):
        key, payload = element
        cached = _cache_path(self.cache_dir, key)
        if FileSystems.exists(cached):
            try:
                with FileSystems.open(cached, compression_type=CompressionTypes.UNCOMPRESSED) as stream:
                    embeddings = np.load(io.BytesIO(stream.read()), allow_pickle=False)
                if embeddings.ndim == 2 and embeddings.shape[0] == self.rows:
                    yield key, embeddings.astype(np.float32, copy=False)
                    return
            except (OSError, ValueError) as error:
                log.warning("unreadable cache entry %s (%s): encoding again", cached, error)
        yield beam.pvalue.TaggedOutput(MISS, (key, payload))


class DecodeAndSplit(beam.DoFn):
    """(key, image path) -> (key, uint8 [P, h, w, 3] patches), or tagged REJECTED (key, (reason, detail)).

    The photo is read again, as HashImage read it, and must still hash to `key` (else `image_changed`):
    the embedding cached under a key is always that of the bytes the key names.
    """

    def __init__(self, grid: images.Grid, dataset_dir: str, salt: str, max_bytes: int = photo_files.MAX_PHOTO_BYTES):
        self.grid, self.dataset_dir, self.salt, self.max_bytes = grid, dataset_dir, salt, max_bytes

    def process(self, element):
        key, path = element
        try:
            data = photo_files.read_photo(self.dataset_dir, path, key, self.salt, self.max_bytes)
            yield key, images.split_into_patches(images.decode_image(data, self.grid), self.grid)
        except RowError as error:
            yield beam.pvalue.TaggedOutput(REJECTED, (key, (error.reason, error.detail)))
        except Exception as error:  # the file vanished since it was hashed
            yield beam.pvalue.TaggedOutput(REJECTED, (key, ("missing_image", str(error))))


class WriteCache(beam.DoFn):
    """(key, [rows, D]) -> written to the cache (atomically: temp file, then rename), passed on; logs
    progress, counting `what` (photos, texts)."""

    def __init__(self, cache_dir: str, what: str):
        self.cache_dir, self.what = cache_dir, what

    def setup(self):
        self.written, self.started = 0, time.time()

    def process(self, element):
        key, embeddings = element
        embeddings = np.asarray(embeddings, dtype=np.float32)
        buffer = io.BytesIO()
        np.save(buffer, embeddings, allow_pickle=False)
        final = _cache_path(self.cache_dir, key)
        temporary = f"{final}.tmp-{uuid.uuid4().hex}"
        with FileSystems.create(temporary, compression_type=CompressionTypes.UNCOMPRESSED) as stream:
            stream.write(buffer.getvalue())
        FileSystems.rename([temporary], [final])
        self.written += 1
        if self.written % PROGRESS_EVERY == 0:
            log.info("encoded %d %s (%.1f/s on this worker)", self.written, self.what,
                     self.written / (time.time() - self.started))
        yield key, embeddings


def _attach_text_embeddings(element):
    """CoGroupByKey by text key -> listings with text_embeddings (every distinct text was encoded)."""
    _, grouped = element
    (embeddings,) = list(grouped["embeddings"])
    for listing in grouped["listings"]:
        yield dataclasses.replace(listing, text_embeddings=embeddings)


def _attach_embeddings(element):
    """CoGroupByKey by image key -> listings with patch_embeddings, or Rejected with the image's reason."""
    _, grouped = element
    embeddings = list(grouped["embeddings"])
    errors = list(grouped["errors"])
    for _, listing in grouped["listings"]:
        if embeddings:
            yield dataclasses.replace(listing, patch_embeddings=embeddings[0])
        elif errors:
            yield beam.pvalue.TaggedOutput(REJECTED, _rejected_listing(listing, *errors[0]))
        else:
            yield beam.pvalue.TaggedOutput(REJECTED, _rejected_listing(
                listing, "embedding_missing", f"{listing.item.image_path}: the encoder returned nothing"))


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
    example = tf.train.Example(features=tf.train.Features(feature={
        features.ITEM_ID: _feature([item.item_id], "bytes"),
        features.MERCHANT_ID: _feature([item.merchant_id], "bytes"),
        features.CATEGORY: _feature([item.category], "bytes"),
        features.COARSE_CATEGORY: _feature([item.coarse_category], "bytes"),
        features.MERCHANT_SIZE: _feature(
            [dataset.merchant_size_label(merchant_listings.get(item.merchant_id, 0))], "bytes"),
        features.PRICE: _feature([item.price], "float"),
        features.TITLE: _feature([item.title], "bytes"),
        features.TEXT_TOKEN_IDS: _feature(listing.token_ids.tolist(), "int64"),
        features.TEXT_EMBEDDINGS: _feature(listing.text_embeddings.reshape(-1).tolist(), "float"),
        features.PATCH_EMBEDDINGS: _feature(listing.patch_embeddings.reshape(-1).tolist(), "float"),
    }))
    # deterministic: map entries in key order, so every runner and process writes the same bytes
    return item.item_id, example.SerializeToString(deterministic=True)


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


class TimeRange(beam.CombineFn):
    """(first, last) timestamp, or None for no events."""

    def create_accumulator(self):
        return None

    def add_input(self, accumulator, timestamp):
        return (timestamp, timestamp) if accumulator is None else (
            min(accumulator[0], timestamp), max(accumulator[1], timestamp))

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


def _quarantine_line(rejected: Rejected, header: Sequence[str]) -> str:
    import csv

    text = io.StringIO()
    csv.writer(text, lineterminator="").writerow(
        [rejected.reason, rejected.detail, rejected.row] + [rejected.fields.get(name, "") for name in header])
    return text.getvalue()


def _quarantine_header(header: Sequence[str]) -> str:
    return ",".join(["reason", "detail", "row"] + [f'"{h}"' if "," in h else h for h in header])


def feature_summary(max_text_length: int, num_text_tokens: int, text_dim: Optional[int], num_patches: int,
                    patch_dim: Optional[int]) -> Dict[str, dict]:
    """Each raw event tf.Example feature's dtype and length."""
    summary = {}
    for name in (features.ITEM_ID, features.MERCHANT_ID, features.CATEGORY, features.COARSE_CATEGORY,
                 features.MERCHANT_SIZE, features.REQUEST_ID, features.SHOPPER_ID):
        summary[name] = {"dtype": "bytes", "length": 1}
    for name in (features.PRICE, features.DISTANCE_KM):
        summary[name] = {"dtype": "float", "length": 1}
    for name in (features.TIMESTAMP, features.HOUR, features.LABEL):
        summary[name] = {"dtype": "int64", "length": 1}
    summary[features.TEXT_TOKEN_IDS] = {"dtype": "int64", "length": max_text_length}
    summary[features.TEXT_EMBEDDINGS] = {
        "dtype": "float", "length": num_text_tokens * text_dim if text_dim else None}
    summary[features.PATCH_EMBEDDINGS] = {
        "dtype": "float", "length": num_patches * patch_dim if patch_dim else None}
    return summary


def item_feature_summary(event_features: Dict[str, dict]) -> Dict[str, dict]:
    """Each OUT/items tf.Example feature's dtype and length: the listing's event features and its title."""
    return {name: {"dtype": "bytes", "length": 1} if name == features.TITLE else event_features[name]
            for name in features.ITEM_FEATURES}


def _clear_outputs(output_dir: str) -> None:
    """Removes what an earlier run wrote here (stale shards would mix into this run's output)."""
    patterns = [FileSystems.join(output_dir, *parts) for parts in (
        ("examples", "train", "*"), ("examples", "eval", "*"), ("items", "*"), ("quarantine", "*"),
        (".stats",), ("summary.json",))]
    stale = [m.path for result in FileSystems.match(patterns) for m in result.metadata_list]
    if stale:
        FileSystems.delete(stale)


def _check_encoders(text_encoder: str, num_text_tokens: int, image_encoder: str, image_preset: str) -> None:
    """Fails before any work on an unknown encoder, or on a named preset of another encoder."""
    from camenn.model import bert
    from camenn.model.patch_encoders import ENCODER_PRESETS

    if text_encoder not in bert.PRESETS and not FileSystems.exists(text_encoder):
        raise ValueError(f"unknown text encoder {text_encoder!r}: a BERT preset ({', '.join(bert.PRESETS)}) "
                         "or a keras-hub preset folder")
    if num_text_tokens < 1:
        raise ValueError(f"num_text_tokens must be at least 1, got {num_text_tokens}")

    if image_encoder not in ENCODER_PRESETS:
        raise ValueError(f"unknown image encoder {image_encoder!r}; choose one of {', '.join(ENCODER_PRESETS)}")
    named = {preset for presets in ENCODER_PRESETS.values() for preset in presets}
    if image_preset in named and image_preset not in ENCODER_PRESETS[image_encoder]:
        raise ValueError(f"preset {image_preset!r} is not a preset of {image_encoder!r} "
                         f"(its presets: {', '.join(ENCODER_PRESETS[image_encoder])})")


def _read_header(path: str, columns, file_name: str) -> List[str]:
    if not FileSystems.exists(path):
        raise dataset.DatasetFormatError(f"{path} does not exist; a dataset folder holds {dataset.ITEMS_FILE}, "
                                         f"{dataset.EVENTS_FILE} and {dataset.IMAGES_DIR}/ (README 'Dataset format')")
    with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as stream:
        return dataset.read_header(stream, columns, file_name)


def preprocess(dataset_dir, output_dir, image_encoder: str = defaults.IMAGE_ENCODER,
               image_preset: str = defaults.IMAGE_PRESET,
               grid: Union[images.Grid, str] = defaults.GRID, max_text_length: int = defaults.MAX_TEXT_LENGTH,
               beam_args: Optional[Sequence[str]] = None, cache_dir=None,
               text_encoder: str = defaults.TEXT_ENCODER, num_text_tokens: int = defaults.NUM_TEXT_TOKENS,
               items_only: bool = False) -> dict:
    """Runs the preprocessing pipeline and returns the summary it writes to OUTPUT/summary.json.

    The entry point of `camenn preprocess` and of the TFX pipeline's preprocessing component.

    Args:
        dataset_dir: dataset folder (items.csv, events.csv, images/); local or any Beam filesystem.
        output_dir: where examples/, items/, quarantine/ and summary.json go; earlier outputs are replaced.
        image_encoder, image_preset: the patch encoder (`camenn.model.patch_encoders`).
        grid: (rows, cols) or "ROWSxCOLS": each photo's patches.
        max_text_length: token ids per listing.
        beam_args: Beam pipeline options (e.g. ["--runner=DataflowRunner", ...]); DirectRunner by default.
        cache_dir: encoding cache (`texts/`, `patches/`); default `camenn.paths.cache_dir() / "embeddings"`.
        text_encoder: the frozen BERT preset (`camenn.model.text_encoders`) or a preset folder.
        num_text_tokens: pooled tokens per listing text.
        items_only: encode the listings of items.csv alone (for `camenn listings add`): no events.csv is
            read, and OUT/examples stays empty.

    Example:
    ```python
    import csv
    import shutil
    from pathlib import Path
    from camenn.preprocessing.pipeline import preprocess

    # A small dataset folder: the sample's first 12 listings, their photos and their clicks. (The sample
    # holds a row that is not UTF-8 on purpose; surrogateescape copies it as it is.)
    sample, small = Path("data/sample"), Path("outputs/small_dataset")
    (small / "images").mkdir(parents=True)

    def copy_rows(name, keep):
        with open(sample / name, newline="", errors="surrogateescape") as source:
            reader = csv.DictReader(source)
            rows = [row for row in reader if keep(row)]
        with open(small / name, "w", newline="", errors="surrogateescape") as target:
            writer = csv.DictWriter(target, reader.fieldnames)
            writer.writeheader()
            writer.writerows(rows)

    copy_rows("items.csv", lambda row: row["item_id"] <= "i00012")
    copy_rows("events.csv", lambda row: row["item_id"] <= "i00012")
    for number in range(1, 13):
        shutil.copy(sample / f"images/i{number:05d}.jpg", small / "images")

    summary = preprocess(small, "outputs/preprocessed", "inception_v4", "inception_v4_tiny",
                         text_encoder="bert_tiny", cache_dir="outputs/embedding_cache")
    assert summary["items"]["out"] == 12 and summary["patch_dim"] == 192 and summary["text_dim"] == 32
    assert summary["events"]["quarantined_by_reason"] == {"missing_label": 1}  # one of the sample's bad rows
    assert summary["events"]["train"] + summary["events"]["eval"] == summary["events"]["out"]
    ```
    """
    from camenn.preprocessing.patch_embedding import EmbedPatches
    from camenn.preprocessing.text_embedding import EmbedTexts

    _check_encoders(text_encoder, num_text_tokens, image_encoder, image_preset)
    dataset_dir, output_dir = str(dataset_dir), str(output_dir)
    grid = images.parse_grid(grid) if isinstance(grid, str) else tuple(grid)
    cache_dir = str(cache_dir) if cache_dir is not None else default_cache_dir()
    num_patches = grid[0] * grid[1]
    items_path = FileSystems.join(dataset_dir, dataset.ITEMS_FILE)
    events_path = FileSystems.join(dataset_dir, dataset.EVENTS_FILE)
    item_header = _read_header(items_path, dataset.ITEM_COLUMNS, dataset.ITEMS_FILE)
    event_header = ([column.name for column in dataset.EVENT_COLUMNS] if items_only
                    else _read_header(events_path, dataset.EVENT_COLUMNS, dataset.EVENTS_FILE))
    _clear_outputs(output_dir)
    salt = f"|{image_encoder}|{image_preset}|{images.format_grid(grid)}|v{CACHE_VERSION}"
    text_salt = f"|{text_encoder}|{num_text_tokens}|v{CACHE_VERSION}"
    patch_cache, text_cache = FileSystems.join(cache_dir, "patches"), FileSystems.join(cache_dir, "texts")
    stats_prefix = FileSystems.join(output_dir, ".stats", "stats")
    log.info("preprocessing %s -> %s (text encoder %s x %d tokens, image encoder %s/%s, grid %s, cache %s)",
             dataset_dir, output_dir, text_encoder, num_text_tokens, image_encoder, image_preset,
             images.format_grid(grid), cache_dir)

    started = time.time()
    options = PipelineOptions(list(beam_args or []))
    with beam.Pipeline(options=options) as pipeline:
        # --- Items: row checks, one row per item_id, photo hash, tokens.
        item_records = (pipeline
                        | "ItemsPath" >> beam.Create([items_path])
                        | "ReadItems" >> beam.ParDo(ReadCsv(dataset.ITEM_COLUMNS, dataset.ITEMS_FILE)).with_outputs(
                            REJECTED, main="rows"))
        parsed_items = (item_records.rows
                        | "ShuffleItems" >> beam.Reshuffle()
                        | "ParseItems" >> beam.FlatMap(_parse_items).with_outputs(REJECTED, main="listings"))
        unique = (parsed_items.listings
                  | "ByItemId" >> beam.Map(lambda listing: (listing.item.item_id, listing))
                  | "GroupItemId" >> beam.GroupByKey()
                  | "FirstPerItemId" >> beam.FlatMap(_first_per_item_id).with_outputs(REJECTED, main="listings"))
        tokenized = (unique.listings
                     | "BatchTexts" >> beam.BatchElements(min_batch_size=16, max_batch_size=256)
                     | "Tokenize" >> beam.ParDo(Tokenize(max_text_length)))

        # --- Texts: each distinct text once, from the cache or encoded.
        keyed_texts = tokenized | "TextKey" >> beam.Map(lambda l: (_text_key(l, text_salt), l))
        distinct_texts = (keyed_texts
                          | "TextTokens" >> beam.Map(lambda kv: (kv[0], kv[1].token_ids))
                          | "DistinctTexts" >> beam.combiners.Sample.FixedSizePerKey(1)
                          | "OneTokens" >> beam.Map(lambda kv: (kv[0], kv[1][0])))
        texts_looked_up = distinct_texts | "LookupTextCache" >> beam.ParDo(
            LookupCache(text_cache, num_text_tokens)).with_outputs(MISS, main="hits")
        encoded_texts = (texts_looked_up[MISS]
                         | "EmbedTexts" >> EmbedTexts(text_encoder, num_text_tokens)
                         | "WriteTextCache" >> beam.ParDo(WriteCache(text_cache, "texts")))
        text_embeddings = (texts_looked_up.hits, encoded_texts) | "AllTextEmbeddings" >> beam.Flatten()
        with_texts = ({"listings": keyed_texts, "embeddings": text_embeddings}
                      | "JoinTexts" >> beam.CoGroupByKey()
                      | "AttachTextEmbeddings" >> beam.FlatMap(_attach_text_embeddings))

        hashed = with_texts | "HashImages" >> beam.ParDo(HashImage(dataset_dir, salt)).with_outputs(
            REJECTED, main="keyed")

        # --- Photos: each distinct image once, from the cache or decoded and embedded.
        distinct = (hashed.keyed
                    | "ImagePath" >> beam.Map(lambda kv: (kv[0], kv[1][0]))
                    | "DistinctImages" >> beam.CombinePerKey(min))
        looked_up = distinct | "LookupCache" >> beam.ParDo(LookupCache(patch_cache, num_patches)).with_outputs(
            MISS, main="hits")
        decoded = looked_up[MISS] | "DecodeAndSplit" >> beam.ParDo(DecodeAndSplit(grid, dataset_dir, salt)).with_outputs(
            REJECTED, main="patches")
        embedded = (decoded.patches
                    | "EmbedPatches" >> EmbedPatches(image_encoder, image_preset)
                    | "WriteCache" >> beam.ParDo(WriteCache(patch_cache, "photos")))
        embeddings = (looked_up.hits, embedded) | "AllEmbeddings" >> beam.Flatten()
        attached = ({"listings": hashed.keyed, "embeddings": embeddings, "errors": decoded[REJECTED]}
                    | "JoinImages" >> beam.CoGroupByKey()
                    | "AttachEmbeddings" >> beam.FlatMap(_attach_embeddings).with_outputs(REJECTED, main="listings"))
        good = attached.listings

        # --- Item examples, merchant_size from the listings kept per merchant.
        merchant_listings = (good
                             | "MerchantOf" >> beam.Map(lambda listing: listing.item.merchant_id)
                             | "ListingsPerMerchant" >> beam.combiners.Count.PerElement())
        item_examples = good | "ItemExamples" >> beam.Map(
            _item_example, merchant_listings=beam.pvalue.AsDict(merchant_listings))
        _ = (item_examples
             | "ItemBytes" >> beam.Values()
             | "WriteItems" >> beam.io.WriteToTFRecord(
                 FileSystems.join(output_dir, "items", "items"), file_name_suffix=EXAMPLE_SUFFIX))
        rejected_items = ((item_records[REJECTED], parsed_items[REJECTED], unique[REJECTED], hashed[REJECTED],
                           attached[REJECTED])
                          | "RejectedItems" >> beam.Flatten())

        # --- Events: row checks, join to their listing, split by time.
        event_records = (pipeline
                         | "EventsPath" >> beam.Create([] if items_only else [events_path])
                         | "ReadEvents" >> beam.ParDo(ReadCsv(dataset.EVENT_COLUMNS, dataset.EVENTS_FILE))
                         .with_outputs(REJECTED, main="rows"))
        parsed_events = (event_records.rows
                         | "ShuffleEvents" >> beam.Reshuffle()
                         | "ParseEvents" >> beam.FlatMap(_parse_events).with_outputs(REJECTED, main="events"))
        item_errors = (rejected_items
                       | "ErrorByItemId" >> beam.Map(lambda r: (r.fields.get(features.ITEM_ID, "").strip(), r))
                       | "WithItemId" >> beam.Filter(lambda kv: kv[0]))
        joined = ({"items": item_examples, "item_errors": item_errors, "events": parsed_events.events}
                  | "JoinEvents" >> beam.CoGroupByKey()
                  | "EventExamples" >> beam.FlatMap(_join_events).with_outputs(REJECTED, main="examples"))
        time_range = (joined.examples
                      | "Timestamps" >> beam.Keys()
                      | "TimeRange" >> beam.CombineGlobally(TimeRange()))
        train, evaluation = joined.examples | "SplitByTime" >> beam.Partition(
            lambda kv, _, time_range: int(time_range is not None and kv[0] > eval_cutoff(time_range)), 2,
            time_range=beam.pvalue.AsSingleton(time_range))
        for name, split in (("train", train), ("eval", evaluation)):
            _ = (split
                 | f"{name}Bytes" >> beam.Values()
                 | f"Write{name}" >> beam.io.WriteToTFRecord(
                     FileSystems.join(output_dir, "examples", name, name), file_name_suffix=EXAMPLE_SUFFIX))
        rejected_events = ((event_records[REJECTED], parsed_events[REJECTED], joined[REJECTED])
                           | "RejectedEvents" >> beam.Flatten())

        # --- Quarantine and counts.
        for name, rejected, header in (("items", rejected_items, item_header),
                                       ("events", rejected_events, event_header)):
            _ = (rejected
                 | f"Format{name}" >> beam.Map(_quarantine_line, header=header)
                 | f"Quarantine{name}" >> beam.io.WriteToText(
                     FileSystems.join(output_dir, "quarantine", name), file_name_suffix=".csv",
                     shard_name_template="", header=_quarantine_header(header)))
        counts = ((
            _tally(item_records.rows, "items/in", "ItemRows"),
            _tally(item_records[REJECTED], "items/in", "ItemBadRecords"),
            _tally(item_examples, "items/out", "ItemsOut"),
            _tally_reasons(rejected_items, "items/quarantined", "ItemReasons"),
            _tally(tokenized | "Truncated" >> beam.Filter(lambda l: l.truncated), "text/truncated", "Truncated"),
            _tally(distinct_texts, "texts/distinct", "DistinctTexts"),
            _tally(texts_looked_up.hits, "texts/cache_hits", "TextHits"),
            _tally(encoded_texts, "texts/encoded", "TextsEncoded"),
            text_embeddings | "TextDim" >> beam.Map(lambda kv: (f"text_dim/{kv[1].shape[1]}", 1)),
            _tally(distinct, "images/distinct", "Distinct"),
            _tally(looked_up.hits, "images/cache_hits", "Hits"),
            _tally(embedded, "images/embedded", "Embedded"),
            embeddings | "PatchDim" >> beam.Map(lambda kv: (f"patch_dim/{kv[1].shape[1]}", 1)),
            _tally(event_records.rows, "events/in", "EventRows"),
            _tally(event_records[REJECTED], "events/in", "EventBadRecords"),
            _tally(train, "events/train", "Train"),
            _tally(evaluation, "events/eval", "Eval"),
            _tally_reasons(rejected_events, "events/quarantined", "EventReasons"),
        ) | "AllCounts" >> beam.Flatten() | "SumCounts" >> beam.CombinePerKey(sum))
        _ = ((counts, time_range | "NameTimeRange" >> beam.Map(lambda r: (TIME_RANGE, r)))
             | "AllStats" >> beam.Flatten()
             | "StatsJson" >> beam.Map(json.dumps)
             | "WriteStats" >> beam.io.WriteToText(stats_prefix, shard_name_template=""))

    summary = _summarize(stats_prefix, dataset_dir, output_dir, text_encoder, num_text_tokens, image_encoder,
                         image_preset, grid, max_text_length, cache_dir, time.time() - started)
    with FileSystems.create(FileSystems.join(output_dir, "summary.json")) as stream:
        stream.write(json.dumps(summary, indent=2).encode())
    FileSystems.delete([FileSystems.join(output_dir, ".stats")])
    for kind in ("items", "events"):
        counts = summary[kind]
        if counts["in"] != counts["out"] + counts["quarantined"]:
            raise RuntimeError(f"{kind}: {counts['in']} rows in but {counts['out']} out + "
                               f"{counts['quarantined']} quarantined: a bug lost rows")
    return summary


def _single_width(counts: Dict[str, int], prefix: str, what: str, cache_dir: str) -> Optional[int]:
    widths = sorted(int(name.split("/")[1]) for name in counts if name.startswith(prefix + "/"))
    if len(widths) > 1:
        raise RuntimeError(f"{what} of different widths {widths}: clear the cache {cache_dir}")
    return widths[0] if widths else None


def _summarize(stats_path, dataset_dir, output_dir, text_encoder, num_text_tokens, image_encoder, image_preset,
               grid, max_text_length, cache_dir, seconds) -> dict:
    counts: Dict[str, int] = {}
    time_range = None
    with FileSystems.open(stats_path, compression_type=CompressionTypes.UNCOMPRESSED) as stream:
        for line in stream.read().decode().splitlines():
            name, value = json.loads(line)
            if name == TIME_RANGE:
                time_range = value
            else:
                counts[name] = counts.get(name, 0) + value
    patch_dim = _single_width(counts, "patch_dim", "patch embeddings", cache_dir)
    text_dim = _single_width(counts, "text_dim", "text embeddings", cache_dir)
    num_patches = grid[0] * grid[1]

    def by_reason(prefix):
        return {name[len(prefix) + 1:]: n for name, n in sorted(counts.items()) if name.startswith(prefix + "/")}

    event_features = feature_summary(max_text_length, num_text_tokens, text_dim, num_patches, patch_dim)
    items_quarantined = by_reason("items/quarantined")
    events_quarantined = by_reason("events/quarantined")
    return {
        "dataset": dataset_dir,
        "output": output_dir,
        "seconds": round(seconds, 1),
        "items": {"in": counts.get("items/in", 0), "out": counts.get("items/out", 0),
                  "quarantined": sum(items_quarantined.values()), "quarantined_by_reason": items_quarantined},
        "events": {"in": counts.get("events/in", 0),
                   "out": counts.get("events/train", 0) + counts.get("events/eval", 0),
                   "train": counts.get("events/train", 0), "eval": counts.get("events/eval", 0),
                   "quarantined": sum(events_quarantined.values()), "quarantined_by_reason": events_quarantined},
        "split": {"eval_fraction": defaults.EVAL_FRACTION,
                  "first_timestamp": time_range[0] if time_range else None,
                  "last_timestamp": time_range[1] if time_range else None,
                  "eval_after_timestamp": eval_cutoff(time_range)},
        "text": {"truncated": counts.get("text/truncated", 0), "distinct": counts.get("texts/distinct", 0),
                 "cache_hits": counts.get("texts/cache_hits", 0), "encoded": counts.get("texts/encoded", 0)},
        "images": {"distinct": counts.get("images/distinct", 0), "cache_hits": counts.get("images/cache_hits", 0),
                   "embedded": counts.get("images/embedded", 0), "cache_dir": cache_dir},
        "text_encoder": text_encoder,
        "num_text_tokens": num_text_tokens,
        "text_dim": text_dim,
        "image_encoder": image_encoder,
        "image_preset": image_preset,
        "grid": images.format_grid(grid),
        "num_patches": num_patches,
        "patch_dim": patch_dim,
        "max_text_length": max_text_length,
        "features": event_features,
        "item_features": item_feature_summary(event_features),
    }


def format_summary(summary: dict) -> str:
    """The run's summary as a few lines for the terminal."""
    lines = [f"preprocessed {summary['dataset']} -> {summary['output']} in {summary['seconds']} s"]
    for kind in ("items", "events"):
        c = summary[kind]
        extra = f" (train {c['train']}, eval {c['eval']})" if kind == "events" else ""
        lines.append(f"  {kind}: {c['in']} in, {c['out']} out{extra}, {c['quarantined']} quarantined")
        for reason, n in c["quarantined_by_reason"].items():
            lines.append(f"    {reason}: {n}")
    i = summary["images"]
    lines.append(f"  photos: {i['distinct']} distinct, {i['cache_hits']} from the cache, {i['embedded']} embedded "
                 f"({summary['image_encoder']}/{summary['image_preset']}, grid {summary['grid']}, "
                 f"{summary['num_patches']} x {summary['patch_dim']})")
    t = summary["text"]
    lines.append(f"  texts: {t['distinct']} distinct, {t['cache_hits']} from the cache, {t['encoded']} encoded "
                 f"({summary['text_encoder']}, {summary['num_text_tokens']} x {summary['text_dim']}); "
                 f"{t['truncated']} truncated to {summary['max_text_length']} tokens")
    lines.append(f"  quarantined rows: {summary['output']}/quarantine/; summary: {summary['output']}/summary.json")
    return "\n".join(lines)
