"""Each stage of `camenn preprocess` on its own: a few in-memory rows through Beam's TestPipeline.

The encoders are fakes (a beam.Map), so these run in seconds; test_preprocess_pipeline.py runs the stages
together with the real encoders on the awkward dataset.
"""

import json

import apache_beam as beam
import numpy as np
import pytest
import tensorflow as tf
from apache_beam.testing import test_pipeline
from apache_beam.testing.util import assert_that, equal_to
from awkward_data import jpeg, photo
from PIL import Image

from camenn.model import features
from camenn.preprocessing import dataset
from camenn.preprocessing.dataset import Rejected
from camenn.preprocessing.embedding_cache import EmbedListingPhotos, EmbedListingTexts
from camenn.preprocessing.transforms import (
    TIME_RANGE,
    ItemExamples,
    JoinEvents,
    Listing,
    ReadAndCheckEvents,
    ReadAndCheckListings,
    SplitByTime,
    TokenizeTexts,
    WriteExamples,
    WriteQuarantine,
    WriteStats,
)

ITEM_HEADER = "item_id,merchant_id,title,description,category,price,image_path"
EVENT_HEADER = "request_id,shopper_id,item_id,timestamp,hour,distance_km,converted"


def listing(item_id, row=1, merchant_id="m1", title="Pink Lady", description="", image_path="images/a.jpg", **arrays):
    fields = {
        "item_id": item_id,
        "merchant_id": merchant_id,
        "title": title,
        "description": description,
        "category": "Apple",
        "price": "2.50",
        "image_path": image_path,
    }
    return Listing(row, fields, dataset.parse_item(fields), **arrays)


def summed(counts, label="Sum"):
    return counts | label >> beam.CombinePerKey(sum)


def reasons(rejected, label="Reasons"):
    return rejected | label >> beam.Map(lambda r: (r.file, r.row, r.reason))


def test_read_and_check_listings_keeps_the_first_row_per_item_id_and_rejects_the_rest(tmp_path):
    path = tmp_path / "items.csv"
    path.write_text(
        "\n".join(
            [
                ITEM_HEADER,
                "a,m1,Apple,Crisp,Apple,1.50,images/a.jpg",
                "b,m1,Pear,,Pear,-2,images/b.jpg",
                "a,m2,Apple again,,Apple,2,images/a.jpg",
                "c,m1,only three fields",
                "d,m2,Plum,,Plum,3,images/d.jpg",
            ]
        )
        + "\n"
    )
    with test_pipeline.TestPipeline() as pipeline:
        listings, rejected, counts = pipeline | ReadAndCheckListings(str(path))
        assert_that(
            listings | beam.Map(lambda listing: (listing.item.item_id, listing.row, listing.item.price)),
            equal_to([("a", 1, 1.5), ("d", 5, 3.0)]),
            label="Listings",
        )
        assert_that(
            reasons(rejected),
            equal_to(
                [
                    ("items.csv", 2, "bad_price"),
                    ("items.csv", 3, "duplicate_item_id"),
                    ("items.csv", 4, "malformed_row"),
                ]
            ),
            label="Rejected",
        )
        assert_that(summed(counts), equal_to([("items/in", 5)]), label="Counts")


def test_read_and_check_events_keys_good_rows_by_listing(tmp_path):
    path = tmp_path / "events.csv"
    path.write_text(f"{EVENT_HEADER}\nr1,s1,a,100,9,1.5,1\nr2,s1,b,200,24,1.5,0\n")
    with test_pipeline.TestPipeline() as pipeline:
        events, rejected, counts = pipeline | ReadAndCheckEvents(str(path))
        assert_that(
            events | beam.Map(lambda kv: (kv[0], kv[1][0], kv[1][2].converted)), equal_to([("a", 1, 1)]), label="Events"
        )
        assert_that(reasons(rejected), equal_to([("events.csv", 2, "bad_hour")]), label="Rejected")
        assert_that(summed(counts), equal_to([("events/in", 2)]), label="Counts")


def test_read_and_check_events_without_a_file_reads_nothing():
    with test_pipeline.TestPipeline() as pipeline:
        events, rejected, counts = pipeline | ReadAndCheckEvents(None)
        for label, pcoll in (("Events", events), ("Rejected", rejected), ("Counts", counts)):
            assert_that(pcoll, equal_to([]), label=label)


def test_tokenize_texts_pads_or_cuts_to_the_length_and_counts_the_cuts():
    texts = [
        listing("long", title="Pink Lady apple", description="Crisp and sweet, from Italy."),
        listing("short", title="Pear"),
    ]
    with test_pipeline.TestPipeline() as pipeline:
        tokenized, counts = pipeline | beam.Create(texts) | TokenizeTexts(max_text_length=8)
        assert_that(
            tokenized | beam.Map(lambda listing: (listing.item.item_id, listing.token_ids.shape, listing.truncated)),
            equal_to([("long", (8,), True), ("short", (8,), False)]),
            label="Tokens",
        )
        assert_that(counts, equal_to([("text/truncated", 1)]), label="Counts")


def fake_text_encoder(value):
    """(key, token ids) -> (key, [2, 3] filled with `value` + the first id): which texts were encoded shows."""
    return beam.Map(lambda kv: (kv[0], np.full((2, 3), value + kv[1][0], np.float32)))


def test_embed_listing_texts_encodes_each_distinct_text_once_then_reads_the_cache(tmp_path):
    texts = [
        listing("a", token_ids=np.array([10, 2, 3])),
        listing("b", token_ids=np.array([10, 2, 3])),
        listing("c", token_ids=np.array([20, 5, 0])),
    ]
    expected = [("a", 10.0), ("b", 10.0), ("c", 20.0)]
    for run, encoder_value, expected_counts in (
        ("cold", 0.0, [("texts/distinct", 2), ("texts/encoded", 2), ("text_dim/3", 2)]),
        # the encoder would now give other values: the cached ones must come back
        ("warm", 1000.0, [("texts/distinct", 2), ("texts/cache_hits", 2), ("text_dim/3", 2)]),
    ):
        with test_pipeline.TestPipeline() as pipeline:
            with_texts, counts = (
                pipeline
                | beam.Create(texts)
                | EmbedListingTexts(str(tmp_path / "texts"), "|fake|2|v1", 2, fake_text_encoder(encoder_value))
            )
            assert_that(
                with_texts | beam.Map(lambda listing: (listing.item.item_id, float(listing.text_embeddings[0, 0]))),
                equal_to(expected),
                label="Embeddings",
            )
            assert_that(summed(counts), equal_to(expected_counts), label="Counts")
        assert len(list((tmp_path / "texts").rglob("*.npy"))) == 2, run


@pytest.fixture
def photos(tmp_path):
    (tmp_path / "images").mkdir()
    data = jpeg(Image.fromarray(photo(1)))
    (tmp_path / "images" / "a.jpg").write_bytes(data)
    (tmp_path / "images" / "copy.jpg").write_bytes(data)
    (tmp_path / "images" / "bad.jpg").write_bytes(b"not an image")
    return tmp_path


def test_embed_listing_photos_embeds_each_distinct_photo_once_and_rejects_unreadable_ones(photos, tmp_path):
    listings = [
        listing(item_id, row=row, image_path=f"images/{item_id}.jpg")
        for row, item_id in enumerate(("a", "copy", "bad", "gone"), 1)
    ]
    cache = tmp_path / "cache"
    for run, expected_counts in (
        ("cold", [("images/distinct", 2), ("images/embedded", 1), ("patch_dim/5", 1)]),
        ("warm", [("images/distinct", 2), ("images/cache_hits", 1), ("patch_dim/5", 1)]),
    ):
        with test_pipeline.TestPipeline() as pipeline:
            good, rejected, counts = (
                pipeline
                | beam.Create(listings)
                | EmbedListingPhotos(
                    str(photos),
                    str(cache),
                    "|fake|2x2|v1",
                    (2, 2),
                    beam.Map(lambda kv: (kv[0], np.ones((len(kv[1]), 5), np.float32))),
                )
            )
            assert_that(
                good | beam.Map(lambda listing: (listing.item.item_id, listing.patch_embeddings.shape)),
                equal_to([("a", (4, 5)), ("copy", (4, 5))]),
                label="Good",
            )
            assert_that(
                reasons(rejected),
                equal_to([("items.csv", 3, "corrupt_image"), ("items.csv", 4, "missing_image")]),
                label="Rejected",
            )
            assert_that(summed(counts), equal_to(expected_counts), label="Counts")
        assert len(list(cache.rglob("*.npy"))) == 1, run


def test_item_examples_take_merchant_size_from_the_listings_kept():
    arrays = dict(token_ids=np.array([101, 102]), text_embeddings=np.zeros((1, 2)), patch_embeddings=np.ones((4, 2)))
    big = [f"big-{n}" for n in range(dataset.MEDIUM_MERCHANT_LISTINGS)]
    listings = [listing(item_id, merchant_id="big", **arrays) for item_id in big]
    listings.append(listing("lone", merchant_id="small", **arrays))

    def summary(kv):
        feature = tf.train.Example.FromString(kv[1]).features.feature
        return (
            kv[0],
            feature[features.ITEM_ID].bytes_list.value[0].decode(),
            feature[features.MERCHANT_SIZE].bytes_list.value[0].decode(),
            len(feature[features.PATCH_EMBEDDINGS].float_list.value),
        )

    with test_pipeline.TestPipeline() as pipeline:
        examples, counts = pipeline | beam.Create(listings) | ItemExamples()
        assert_that(
            examples | beam.Map(summary),
            equal_to([(item_id, item_id, "medium", 8) for item_id in big] + [("lone", "lone", "small", 8)]),
            label="Examples",
        )
        assert_that(summed(counts), equal_to([("items/out", len(big) + 1)]), label="Counts")


def test_join_events_adds_the_listing_features_or_says_why_not():
    item = tf.train.Example()
    item.features.feature[features.ITEM_ID].bytes_list.value.append(b"a")
    item.features.feature[features.TITLE].bytes_list.value.append(b"Pink Lady")
    event_rows = [(1, "a", 1), (2, "q", 0), (3, "z", 0)]
    events = [
        (item_id, (row, {"item_id": item_id}, dataset.Event(f"r{row}", "s1", item_id, 100 + row, 9, 1.5, label)))
        for row, item_id, label in event_rows
    ]
    quarantined = Rejected(dataset.ITEMS_FILE, 7, "bad_price", "price '-2' is not a number > 0", {"item_id": "q"})

    def summary(kv):
        feature = tf.train.Example.FromString(kv[1]).features.feature
        return kv[0], sorted(feature), feature[features.LABEL].int64_list.value[0]

    with test_pipeline.TestPipeline() as pipeline:
        examples, rejected = {
            "events": pipeline | "Events" >> beam.Create(events),
            "items": pipeline | "Items" >> beam.Create([("a", item.SerializeToString())]),
            "rejected_items": pipeline | "RejectedItems" >> beam.Create([quarantined]),
        } | JoinEvents()
        keys = sorted(
            [
                features.ITEM_ID,
                features.REQUEST_ID,
                features.SHOPPER_ID,
                features.TIMESTAMP,
                features.HOUR,
                features.DISTANCE_KM,
                features.LABEL,
            ]
        )  # the title is display only: dropped
        assert_that(examples | beam.Map(summary), equal_to([(101, keys, 1)]), label="Examples")
        assert_that(
            rejected | beam.Map(lambda r: (r.row, r.reason, r.detail)),
            equal_to(
                [
                    (2, "item_quarantined", "bad_price: price '-2' is not a number > 0 (items.csv row 7)"),
                    (3, "unknown_item", "item_id 'z' is not in items.csv"),
                ]
            ),
            label="Rejected",
        )


@pytest.mark.parametrize(
    "timestamps, train, evaluation, time_range",
    [
        (range(11), list(range(9)), [9, 10], (0, 10)),  # cutoff 0 + 0.8 * 10 = 8: later is eval
        ([], [], [], None),  # a run over the listings alone
    ],
)
def test_split_by_time_puts_the_last_fifth_of_the_time_range_in_eval(timestamps, train, evaluation, time_range):
    with test_pipeline.TestPipeline() as pipeline:
        split = pipeline | beam.Create([(t, f"e{t}".encode()) for t in timestamps]) | SplitByTime()
        train_examples, eval_examples, time_ranges, counts = split
        assert_that(train_examples | "TrainKeys" >> beam.Keys(), equal_to(train), label="Train")
        assert_that(eval_examples | "EvalKeys" >> beam.Keys(), equal_to(evaluation), label="Eval")
        assert_that(time_ranges, equal_to([time_range]), label="TimeRange")
        assert_that(
            summed(counts),
            equal_to([(name, n) for name, n in (("events/train", len(train)), ("events/eval", len(evaluation))) if n]),
            label="Counts",
        )


def test_write_examples_writes_where_example_gen_reads(tmp_path):
    examples = {"items": [("a", b"item-a")], "train": [(1, b"t1"), (2, b"t2")], "eval": [(3, b"e3")]}
    with test_pipeline.TestPipeline() as pipeline:
        _ = {kind: pipeline | kind >> beam.Create(elements) for kind, elements in examples.items()} | WriteExamples(
            str(tmp_path)
        )
    written = {}
    for kind, folder in (("items", "items"), ("train", "examples/train"), ("eval", "examples/eval")):
        [path] = (tmp_path / folder).glob("*")
        assert path.name == f"{kind}-00000-of-00001.tfrecord.gz"
        written[kind] = sorted((r.numpy() for r in tf.data.TFRecordDataset(str(path), compression_type="GZIP")))
    assert written == {"items": [b"item-a"], "train": [b"t1", b"t2"], "eval": [b"e3"]}


def test_write_quarantine_writes_each_row_with_its_reason_and_counts_the_reasons(tmp_path):
    header = ["item_id", "odd, name"]
    rejected = [
        Rejected(dataset.ITEMS_FILE, 2, "bad_price", "price 'x'", {"item_id": "b", "odd, name": "v"}),
        Rejected(dataset.ITEMS_FILE, 3, "bad_price", "price 'y'", {"item_id": "c"}),
        Rejected(dataset.ITEMS_FILE, 4, "malformed_row", "2 fields, header has 7", {}),
    ]
    with test_pipeline.TestPipeline() as pipeline:
        counts = pipeline | beam.Create(rejected) | WriteQuarantine(str(tmp_path), "items", header)
        assert_that(
            summed(counts), equal_to([("items/quarantined/bad_price", 2), ("items/quarantined/malformed_row", 1)])
        )
    lines = (tmp_path / "quarantine" / "items.csv").read_text(encoding="utf-8").splitlines()
    assert lines[0] == 'reason,detail,row,item_id,"odd, name"'
    assert sorted(lines[1:]) == [
        "bad_price,price 'x',2,b,v",
        "bad_price,price 'y',3,c,",
        'malformed_row,"2 fields, header has 7",4,,',
    ]


def test_write_stats_sums_each_count_and_keeps_the_time_range(tmp_path):
    path = tmp_path / "stats"
    with test_pipeline.TestPipeline() as pipeline:
        counts = pipeline | "Counts" >> beam.Create([("items/in", 1), ("items/in", 1), ("items/out", 1)])
        time_range = pipeline | "TimeRange" >> beam.Create([(100, 200)])
        _ = {"counts": counts, "time_range": time_range} | WriteStats(str(path))
    stats = sorted(json.loads(line) for line in path.read_text().splitlines())
    assert stats == [["items/in", 2], ["items/out", 1], [TIME_RANGE, [100, 200]]]
