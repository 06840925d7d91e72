"""`camenn preprocess`: the Beam pipeline from a dataset folder to ExampleGen-ready tf.Examples.

    items.csv -> checked rows -> one row per item_id -> WordPiece ids
        texts not in the cache -> EmbedTexts (frozen BERT, pooled tokens) -> written to the cache
        photo read and content-hashed; photos not in the cache -> decoded -> patches -> EmbedPatches
        -> written to the cache
        -> OUT/items/*.tfrecord.gz (features.ITEM_FEATURES, merchant_size from listings kept per merchant)
    events.csv -> checked rows -> joined to their listing -> split by time
        -> OUT/examples/{train,eval}/*.tfrecord.gz (item features + event features + label)
    every rejected row -> OUT/quarantine/{items,events}.csv with its reason; counts -> OUT/summary.json

Each step is a composite transform of `transforms.py` or `embedding_cache.py`; `preprocess` wires them.

Encodings are cached under `cache_dir` by content: `texts/` by sha256(token ids, text encoder, tokens per
text, CACHE_VERSION), `patches/` by sha256(image bytes, encoder, preset, grid, CACHE_VERSION). A second run
over an unchanged catalog neither encodes a text nor decodes or embeds a photo; an edited listing is
encoded again, since its content changed. On a distributed runner, `cache_dir` must be a path every
worker reaches (e.g. gs://...).
"""

import json
import logging
import time
from typing import Dict, List, Optional, Sequence, Union

import apache_beam as beam
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions

from camenn import paths
from camenn.model import features
from camenn.preprocessing import dataset, defaults, images
from camenn.preprocessing.embedding_cache import EmbedListingPhotos, EmbedListingTexts
from camenn.preprocessing.transforms import (
    TIME_RANGE,
    ItemExamples,
    JoinEvents,
    ReadAndCheckEvents,
    ReadAndCheckListings,
    SplitByTime,
    TokenizeTexts,
    WriteExamples,
    WriteQuarantine,
    WriteStats,
    eval_cutoff,
)

log = logging.getLogger(__name__)

# Part of every cache key: bump it when decoding or splitting changes what an image's patches are.
CACHE_VERSION = "1"


def default_cache_dir() -> str:
    return str(paths.cache_dir() / "embeddings")


def feature_summary(
    max_text_length: int, num_text_tokens: int, text_dim: Optional[int], num_patches: int, patch_dim: Optional[int]
) -> Dict[str, dict]:
    """Each raw event tf.Example feature's dtype and length."""
    summary = {}
    for name in (
        features.ITEM_ID,
        features.MERCHANT_ID,
        features.CATEGORY,
        features.COARSE_CATEGORY,
        features.MERCHANT_SIZE,
        features.REQUEST_ID,
        features.SHOPPER_ID,
    ):
        summary[name] = {"dtype": "bytes", "length": 1}
    for name in (features.PRICE, features.DISTANCE_KM):
        summary[name] = {"dtype": "float", "length": 1}
    for name in (features.TIMESTAMP, features.HOUR, features.LABEL):
        summary[name] = {"dtype": "int64", "length": 1}
    summary[features.TEXT_TOKEN_IDS] = {"dtype": "int64", "length": max_text_length}
    summary[features.TEXT_EMBEDDINGS] = {"dtype": "float", "length": num_text_tokens * text_dim if text_dim else None}
    summary[features.PATCH_EMBEDDINGS] = {"dtype": "float", "length": num_patches * patch_dim if patch_dim else None}
    return summary


def item_feature_summary(event_features: Dict[str, dict]) -> Dict[str, dict]:
    """Each OUT/items tf.Example feature's dtype and length: the listing's event features and its title."""
    return {
        name: {"dtype": "bytes", "length": 1} if name == features.TITLE else event_features[name]
        for name in features.ITEM_FEATURES
    }


def _clear_outputs(output_dir: str) -> None:
    """Removes what an earlier run wrote here (stale shards would mix into this run's output)."""
    patterns = [
        FileSystems.join(output_dir, *parts)
        for parts in (
            ("examples", "train", "*"),
            ("examples", "eval", "*"),
            ("items", "*"),
            ("quarantine", "*"),
            (".stats",),
            ("summary.json",),
        )
    ]
    stale = [m.path for result in FileSystems.match(patterns) for m in result.metadata_list]
    if stale:
        FileSystems.delete(stale)


def _check_encoders(text_encoder: str, num_text_tokens: int, image_encoder: str, image_preset: str) -> None:
    """Fails before any work on an unknown encoder, or on a named preset of another encoder."""
    from camenn.model import bert
    from camenn.model.patch_encoders import ENCODER_PRESETS

    if text_encoder not in bert.PRESETS and not FileSystems.exists(text_encoder):
        raise ValueError(
            f"unknown text encoder {text_encoder!r}: a BERT preset ({', '.join(bert.PRESETS)}) "
            "or a keras-hub preset folder"
        )
    if num_text_tokens < 1:
        raise ValueError(f"num_text_tokens must be at least 1, got {num_text_tokens}")

    if image_encoder not in ENCODER_PRESETS:
        raise ValueError(f"unknown image encoder {image_encoder!r}; choose one of {', '.join(ENCODER_PRESETS)}")
    named = {preset for presets in ENCODER_PRESETS.values() for preset in presets}
    if image_preset in named and image_preset not in ENCODER_PRESETS[image_encoder]:
        raise ValueError(
            f"preset {image_preset!r} is not a preset of {image_encoder!r} "
            f"(its presets: {', '.join(ENCODER_PRESETS[image_encoder])})"
        )


def _read_header(path: str, columns, file_name: str) -> List[str]:
    if not FileSystems.exists(path):
        raise dataset.DatasetFormatError(
            f"{path} does not exist; a dataset folder holds {dataset.ITEMS_FILE}, "
            f"{dataset.EVENTS_FILE} and {dataset.IMAGES_DIR}/ (README 'Dataset format')"
        )
    with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as stream:
        return dataset.read_header(stream, columns, file_name)


def preprocess(
    dataset_dir,
    output_dir,
    image_encoder: str = defaults.IMAGE_ENCODER,
    image_preset: str = defaults.IMAGE_PRESET,
    grid: Union[images.Grid, str] = defaults.GRID,
    max_text_length: int = defaults.MAX_TEXT_LENGTH,
    beam_args: Optional[Sequence[str]] = None,
    cache_dir=None,
    text_encoder: str = defaults.TEXT_ENCODER,
    num_text_tokens: int = defaults.NUM_TEXT_TOKENS,
    items_only: bool = False,
) -> dict:
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
    assert summary["events"]["in"] == summary["events"]["out"] == 365  # the sample's bad rows are on other listings
    assert summary["events"]["train"] + summary["events"]["eval"] == summary["events"]["out"]
    ```
    """
    from camenn.preprocessing.patch_embedding import EmbedPatches
    from camenn.preprocessing.text_embedding import EmbedTexts

    _check_encoders(text_encoder, num_text_tokens, image_encoder, image_preset)
    dataset_dir, output_dir = str(dataset_dir), str(output_dir)
    grid = images.parse_grid(grid) if isinstance(grid, str) else tuple(grid)
    cache_dir = str(cache_dir) if cache_dir is not None else default_cache_dir()
    items_path = FileSystems.join(dataset_dir, dataset.ITEMS_FILE)
    events_path = FileSystems.join(dataset_dir, dataset.EVENTS_FILE)
    item_header = _read_header(items_path, dataset.ITEM_COLUMNS, dataset.ITEMS_FILE)
    event_header = (
        [column.name for column in dataset.EVENT_COLUMNS]
        if items_only
        else _read_header(events_path, dataset.EVENT_COLUMNS, dataset.EVENTS_FILE)
    )
    _clear_outputs(output_dir)
    salt = f"|{image_encoder}|{image_preset}|{images.format_grid(grid)}|v{CACHE_VERSION}"
    text_salt = f"|{text_encoder}|{num_text_tokens}|v{CACHE_VERSION}"
    patch_cache, text_cache = FileSystems.join(cache_dir, "patches"), FileSystems.join(cache_dir, "texts")
    stats_prefix = FileSystems.join(output_dir, ".stats", "stats")
    log.info(
        "preprocessing %s -> %s (text encoder %s x %d tokens, image encoder %s/%s, grid %s, cache %s)",
        dataset_dir,
        output_dir,
        text_encoder,
        num_text_tokens,
        image_encoder,
        image_preset,
        images.format_grid(grid),
        cache_dir,
    )

    started = time.time()
    options = PipelineOptions(list(beam_args or []))
    with beam.Pipeline(options=options) as pipeline:
        # items.csv: rows checked, the first per item_id kept.
        listings, rejected_rows, listing_counts = pipeline | "ReadAndCheckListings" >> ReadAndCheckListings(items_path)
        # title and description -> max_text_length WordPiece ids.
        tokenized, token_counts = listings | "TokenizeTexts" >> TokenizeTexts(max_text_length)
        # each distinct text's pooled BERT tokens, from the cache or encoded.
        with_texts, text_counts = tokenized | "EmbedListingTexts" >> EmbedListingTexts(
            text_cache, text_salt, num_text_tokens, EmbedTexts(text_encoder, num_text_tokens)
        )
        # each distinct photo's patch embeddings, from the cache or decoded and embedded; bad photos rejected.
        good, rejected_photos, photo_counts = with_texts | "EmbedListingPhotos" >> EmbedListingPhotos(
            dataset_dir, patch_cache, salt, grid, EmbedPatches(image_encoder, image_preset)
        )
        # one tf.Example per listing kept, merchant_size from the listings kept per merchant.
        item_examples, item_counts = good | "ItemExamples" >> ItemExamples()
        rejected_items = (rejected_rows, rejected_photos) | "RejectedItems" >> beam.Flatten()
        # events.csv: rows checked (none read for items_only).
        events, rejected_event_rows, event_counts = pipeline | "ReadAndCheckEvents" >> ReadAndCheckEvents(
            None if items_only else events_path
        )
        # each event with its listing's features; events of quarantined or unknown listings rejected.
        event_examples, rejected_joins = {
            "events": events,
            "items": item_examples,
            "rejected_items": rejected_items,
        } | "JoinEvents" >> JoinEvents()
        # the last part of the time range is eval.
        train, evaluation, time_range, split_counts = event_examples | "SplitByTime" >> SplitByTime()
        rejected_events = (rejected_event_rows, rejected_joins) | "RejectedEvents" >> beam.Flatten()
        # outputs: tf.Examples, quarantine files with their reasons counted, then every count summed.
        _ = {"items": item_examples, "train": train, "eval": evaluation} | "WriteExamples" >> WriteExamples(output_dir)
        item_reasons = rejected_items | "QuarantineItems" >> WriteQuarantine(output_dir, "items", item_header)
        event_reasons = rejected_events | "QuarantineEvents" >> WriteQuarantine(output_dir, "events", event_header)
        counts = (
            listing_counts,
            token_counts,
            text_counts,
            photo_counts,
            item_counts,
            event_counts,
            split_counts,
            item_reasons,
            event_reasons,
        ) | "AllCounts" >> beam.Flatten()
        _ = {"counts": counts, "time_range": time_range} | "WriteStats" >> WriteStats(stats_prefix)

    summary = _summarize(
        stats_prefix,
        dataset_dir,
        output_dir,
        text_encoder,
        num_text_tokens,
        image_encoder,
        image_preset,
        grid,
        max_text_length,
        cache_dir,
        time.time() - started,
    )
    with FileSystems.create(FileSystems.join(output_dir, "summary.json")) as stream:
        stream.write(json.dumps(summary, indent=2).encode())
    FileSystems.delete([FileSystems.join(output_dir, ".stats")])
    for kind in ("items", "events"):
        counts = summary[kind]
        if counts["in"] != counts["out"] + counts["quarantined"]:
            raise RuntimeError(
                f"{kind}: {counts['in']} rows in but {counts['out']} out + "
                f"{counts['quarantined']} quarantined: a bug lost rows"
            )
    return summary


def _single_width(counts: Dict[str, int], prefix: str, what: str, cache_dir: str) -> Optional[int]:
    widths = sorted(int(name.split("/")[1]) for name in counts if name.startswith(prefix + "/"))
    if len(widths) > 1:
        raise RuntimeError(f"{what} of different widths {widths}: clear the cache {cache_dir}")
    return widths[0] if widths else None


def _summarize(
    stats_path,
    dataset_dir,
    output_dir,
    text_encoder,
    num_text_tokens,
    image_encoder,
    image_preset,
    grid,
    max_text_length,
    cache_dir,
    seconds,
) -> dict:
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
        return {name[len(prefix) + 1 :]: n for name, n in sorted(counts.items()) if name.startswith(prefix + "/")}

    event_features = feature_summary(max_text_length, num_text_tokens, text_dim, num_patches, patch_dim)
    items_quarantined = by_reason("items/quarantined")
    events_quarantined = by_reason("events/quarantined")
    return {
        "dataset": dataset_dir,
        "output": output_dir,
        "seconds": round(seconds, 1),
        "items": {
            "in": counts.get("items/in", 0),
            "out": counts.get("items/out", 0),
            "quarantined": sum(items_quarantined.values()),
            "quarantined_by_reason": items_quarantined,
        },
        "events": {
            "in": counts.get("events/in", 0),
            "out": counts.get("events/train", 0) + counts.get("events/eval", 0),
            "train": counts.get("events/train", 0),
            "eval": counts.get("events/eval", 0),
            "quarantined": sum(events_quarantined.values()),
            "quarantined_by_reason": events_quarantined,
        },
        "split": {
            "eval_fraction": defaults.EVAL_FRACTION,
            "first_timestamp": time_range[0] if time_range else None,
            "last_timestamp": time_range[1] if time_range else None,
            "eval_after_timestamp": eval_cutoff(time_range),
        },
        "text": {
            "truncated": counts.get("text/truncated", 0),
            "distinct": counts.get("texts/distinct", 0),
            "cache_hits": counts.get("texts/cache_hits", 0),
            "encoded": counts.get("texts/encoded", 0),
        },
        "images": {
            "distinct": counts.get("images/distinct", 0),
            "cache_hits": counts.get("images/cache_hits", 0),
            "embedded": counts.get("images/embedded", 0),
            "cache_dir": cache_dir,
        },
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
    lines.append(
        f"  photos: {i['distinct']} distinct, {i['cache_hits']} from the cache, {i['embedded']} embedded "
        f"({summary['image_encoder']}/{summary['image_preset']}, grid {summary['grid']}, "
        f"{summary['num_patches']} x {summary['patch_dim']})"
    )
    t = summary["text"]
    lines.append(
        f"  texts: {t['distinct']} distinct, {t['cache_hits']} from the cache, {t['encoded']} encoded "
        f"({summary['text_encoder']}, {summary['num_text_tokens']} x {summary['text_dim']}); "
        f"{t['truncated']} truncated to {summary['max_text_length']} tokens"
    )
    lines.append(f"  quarantined rows: {summary['output']}/quarantine/; summary: {summary['output']}/summary.json")
    return "\n".join(lines)
