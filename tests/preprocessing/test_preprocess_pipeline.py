"""`camenn preprocess` end to end with Beam's DirectRunner and the tiny InceptionV4 encoder.

One cold run over the awkward dataset (the tiny sample plus every kind of awkward or bad row), then a warm
run through the command line that must take every photo from the cache and write the same examples.
"""

import contextlib
import csv
import glob
import io
import json
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from awkward_data import KEPT_PHOTOS, expected_event_reasons, expected_item_reasons

from camenn import cli
from camenn.model import features
from camenn.preprocessing import dataset, pipeline
from camenn.preprocessing.dataset import DatasetFormatError

ENCODER, PRESET, PATCH_DIM = "inception_v4", "inception_v4_tiny", 192
TEXT_ENCODER, TEXT_TOKENS, TEXT_DIM = "bert_tiny", 3, 32
MAX_TEXT_LENGTH = 24


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("embedding_cache")


@pytest.fixture(scope="module")
def cold(awkward_dataset, cache_dir, tmp_path_factory):
    output = tmp_path_factory.mktemp("preprocessed")
    summary = pipeline.preprocess(
        awkward_dataset,
        output,
        ENCODER,
        PRESET,
        (2, 2),
        MAX_TEXT_LENGTH,
        [],
        cache_dir,
        text_encoder=TEXT_ENCODER,
        num_text_tokens=TEXT_TOKENS,
    )
    return output, summary


@pytest.fixture(scope="module")
def warm(cold, awkward_dataset, cache_dir):
    """The same dataset again, through the command line (Beam options after `--`): (output, summary, printed)."""
    output, _ = cold
    second = output.parent / "second"
    printed = io.StringIO()
    with pytest.raises(SystemExit) as exit_code, contextlib.redirect_stdout(printed):
        cli.main(
            [
                "preprocess",
                "--dataset",
                str(awkward_dataset),
                "--output",
                str(second),
                "--image-encoder",
                ENCODER,
                "--image-preset",
                PRESET,
                "--max-text-length",
                str(MAX_TEXT_LENGTH),
                "--cache-dir",
                str(cache_dir),
                "--text-encoder",
                TEXT_ENCODER,
                "--text-tokens",
                str(TEXT_TOKENS),
                "--",
                "--direct_num_workers=1",
            ]
        )
    assert exit_code.value.code == 0
    return second, json.loads((second / "summary.json").read_text()), printed.getvalue()


def spec(summary) -> dict:
    kinds = {"bytes": tf.string, "float": tf.float32, "int64": tf.int64}
    return {name: tf.io.FixedLenFeature([f["length"]], kinds[f["dtype"]]) for name, f in summary["features"].items()}


def read_examples(pattern: str, feature_spec: dict) -> dict:
    files = sorted(glob.glob(pattern))
    assert files, pattern
    records = list(tf.data.TFRecordDataset(files, compression_type="GZIP").batch(10_000))
    if not records:
        return {name: np.zeros((0,)) for name in feature_spec}
    return {name: value.numpy() for name, value in tf.io.parse_example(records[0], feature_spec).items()}


def quarantine(output: Path, name: str):
    with open(output / "quarantine" / f"{name}.csv", newline="", encoding="utf-8") as file:
        return list(csv.DictReader(file))


@pytest.mark.slow
def test_quarantine_arithmetic_and_every_reason(cold, awkward_dataset):
    output, summary = cold
    items, events = summary["items"], summary["events"]
    assert items["quarantined_by_reason"] == expected_item_reasons()
    assert events["quarantined_by_reason"] == expected_event_reasons()
    assert items["in"] == items["out"] + items["quarantined"]
    assert events["in"] == events["out"] + events["quarantined"]
    assert events["out"] == events["train"] + events["eval"]
    # Input rows, counted independently of the pipeline (the sample's items.csv has quoted newlines).
    with open(awkward_dataset / "items.csv", newline="", encoding="utf-8", errors="replace") as file:
        assert items["in"] == sum(1 for row in csv.reader(file) if row) - 1
    with open(awkward_dataset / "events.csv", newline="", encoding="utf-8") as file:
        assert events["in"] == sum(1 for row in csv.reader(file) if row) - 1
    # Every quarantined row is in the quarantine files, with its reason and its source row.
    for name, counts in (("items", items), ("events", events)):
        rows = quarantine(output, name)
        assert len(rows) == counts["quarantined"]
        assert {r["reason"] for r in rows} == set(counts["quarantined_by_reason"])
        assert all(r["detail"] and int(r["row"]) >= 1 for r in rows)
    bomb_clicks = [r for r in quarantine(output, "events") if r[features.ITEM_ID] == "bomb"]
    assert bomb_clicks and all(
        r["reason"] == "item_quarantined" and "image_too_large" in r["detail"] for r in bomb_clicks
    )


@pytest.mark.slow
def test_photos_outside_the_folder_or_not_files_are_refused_with_why(cold):
    output, _ = cold
    rows = {r[features.ITEM_ID]: r for r in quarantine(output, "items")}
    for item_id in ("symlink_out", "symlinked_folder"):  # readable photos, but not the dataset's
        assert rows[item_id]["reason"] == "bad_image_path", rows[item_id]
        assert "symlink" in rows[item_id]["detail"] and "outside the dataset folder" in rows[item_id]["detail"]
    assert rows["control_char"]["reason"] == "bad_image_path"
    assert rows["fifo"]["reason"] == "missing_image" and "FIFO" in rows["fifo"]["detail"]
    assert rows["endless"]["reason"] == "image_too_large" and "byte limit" in rows["endless"]["detail"]


@pytest.mark.slow
def test_examples_follow_contract_2(cold):
    output, summary = cold
    assert summary["patch_dim"] == PATCH_DIM and summary["num_patches"] == 4 and summary["grid"] == "2x2"
    assert summary["features"][features.PATCH_EMBEDDINGS]["length"] == 4 * PATCH_DIM
    assert summary["features"][features.TEXT_TOKEN_IDS]["length"] == MAX_TEXT_LENGTH
    assert summary["features"][features.TEXT_EMBEDDINGS]["length"] == TEXT_TOKENS * TEXT_DIM
    assert (summary["text_encoder"], summary["num_text_tokens"], summary["text_dim"]) == (
        TEXT_ENCODER,
        TEXT_TOKENS,
        TEXT_DIM,
    )
    assert (summary["image_encoder"], summary["image_preset"]) == (ENCODER, PRESET)
    event_spec = spec(summary)
    train = read_examples(str(output / "examples/train/*.tfrecord.gz"), event_spec)
    evaluation = read_examples(str(output / "examples/eval/*.tfrecord.gz"), event_spec)
    assert len(train[features.LABEL]) == summary["events"]["train"] > 0
    assert len(evaluation[features.LABEL]) == summary["events"]["eval"] > 0
    # Split by time: the last 20% of the time range is eval.
    assert train[features.TIMESTAMP].max() < evaluation[features.TIMESTAMP].min()
    assert evaluation[features.TIMESTAMP].min() > summary["split"]["eval_after_timestamp"]
    for split in (train, evaluation):
        assert set(split[features.LABEL][:, 0]) <= {0, 1}
        assert (split[features.TEXT_TOKEN_IDS][:, 0] == 101).all()  # [CLS]
        assert np.isfinite(split[features.PATCH_EMBEDDINGS]).all()
        assert np.isfinite(split[features.TEXT_EMBEDDINGS]).all()
    assert features.TITLE not in event_spec  # display only: never in the model's examples

    item_spec = spec({"features": summary["item_features"]})
    assert tuple(summary["item_features"]) == features.ITEM_FEATURES
    items = read_examples(str(output / "items/*.tfrecord.gz"), item_spec)
    item_ids = [i.decode() for i in items[features.ITEM_ID][:, 0]]
    assert len(item_ids) == len(set(item_ids)) == summary["items"]["out"]
    assert set(KEPT_PHOTOS) <= set(item_ids)  # grayscale, RGBA, CMYK, 16-bit PNG, 8000x8000: converted, kept
    merchants = [m.decode() for m in items[features.MERCHANT_ID][:, 0]]
    for merchant, size in zip(merchants, items[features.MERCHANT_SIZE][:, 0]):
        assert size.decode() == dataset.merchant_size_label(merchants.count(merchant))
    # An event carries its listing's features unchanged.
    by_id = {item_id: k for k, item_id in enumerate(item_ids)}
    for k, item_id in enumerate(train[features.ITEM_ID][:20, 0]):
        j = by_id[item_id.decode()]
        np.testing.assert_array_equal(train[features.PATCH_EMBEDDINGS][k], items[features.PATCH_EMBEDDINGS][j])
        np.testing.assert_array_equal(train[features.TEXT_TOKEN_IDS][k], items[features.TEXT_TOKEN_IDS][j])
        np.testing.assert_array_equal(train[features.TEXT_EMBEDDINGS][k], items[features.TEXT_EMBEDDINGS][j])
    # A text's tokens are its encoder's pooled states, computed once per distinct text.
    from camenn.model.text_encoders import load_text_encoder

    encoder = load_text_encoder(TEXT_ENCODER, TEXT_TOKENS)
    expected = encoder(items[features.TEXT_TOKEN_IDS][:8]).reshape(8, -1)
    np.testing.assert_allclose(items[features.TEXT_EMBEDDINGS][:8], expected, rtol=1e-4, atol=1e-5)
    distinct_texts = {bytes(row) for row in items[features.TEXT_TOKEN_IDS].astype("<i8")}
    assert summary["text"]["distinct"] == len(distinct_texts) == summary["text"]["encoded"]
    assert items[features.TITLE].dtype == object and all(items[features.TITLE][:, 0])


@pytest.mark.slow
def test_second_run_takes_every_photo_and_text_from_the_cache(cold, warm):
    (first_output, first), (second_output, second, printed) = cold, warm
    # "linked" is the "gray" photo through a symlink: one photo, embedded once for both listings.
    assert first["images"]["cache_hits"] == 0 and first["images"]["embedded"] == first["items"]["out"] - 1
    assert second["images"]["embedded"] == 0
    assert second["images"]["cache_hits"] == first["images"]["embedded"]
    assert first["text"]["cache_hits"] == 0 and second["text"]["encoded"] == 0
    assert second["text"]["cache_hits"] == first["text"]["encoded"] > 0
    for key in ("items", "events", "features", "split"):
        assert second[key] == first[key]
    assert f"items: {first['items']['in']} in, {first['items']['out']} out" in printed
    assert (
        f"image_too_large: {expected_item_reasons()['image_too_large']}" in printed
        and f"{second['images']['cache_hits']} from the cache" in printed
    )
    event_spec = spec(first)
    for split in ("train", "eval"):
        a = read_examples(str(first_output / f"examples/{split}/*.tfrecord.gz"), event_spec)
        b = read_examples(str(second_output / f"examples/{split}/*.tfrecord.gz"), event_spec)
        order_a, order_b = np.argsort(a[features.REQUEST_ID][:, 0]), np.argsort(b[features.REQUEST_ID][:, 0])
        for name in event_spec:
            np.testing.assert_array_equal(a[name][order_a], b[name][order_b])


def test_missing_column_is_a_clear_error_before_any_work(tmp_path, capsys):
    (tmp_path / "items.csv").write_text("item_id,title,price\ni1,Apple,1\n")
    (tmp_path / "events.csv").write_text("request_id\n")
    with pytest.raises(DatasetFormatError, match="items.csv lacks required column.*merchant_id"):
        pipeline.preprocess(tmp_path, tmp_path / "out", ENCODER, PRESET)
    with pytest.raises(SystemExit) as exit_code:
        cli.main(["preprocess", "--dataset", str(tmp_path), "--output", str(tmp_path / "out")])
    assert exit_code.value.code == 2 and "merchant_id" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_missing_dataset_file_is_a_clear_error(tmp_path):
    with pytest.raises(DatasetFormatError, match="items.csv does not exist"):
        pipeline.preprocess(tmp_path, tmp_path / "out", ENCODER, PRESET)


def test_eval_cutoff():
    assert pipeline.eval_cutoff((100, 200)) == 180
    assert pipeline.eval_cutoff(None) is None
