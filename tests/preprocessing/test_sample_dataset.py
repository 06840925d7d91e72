"""The embedded sample and its simulator: determinism, the committed copy, and the simulator's rules."""

import csv
import io
from pathlib import Path

import numpy as np
import pytest
from awkward_data import TINY

from camenn import paths
from camenn.preprocessing import dataset
from camenn.simulator import sample
from camenn.simulator.sample import build_sample


def files(folder: Path) -> dict:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def read(folder: Path, name: str):
    return list(csv.DictReader(io.StringIO((folder / name).read_bytes().decode("utf-8", "replace"), newline="")))


def test_same_seed_gives_byte_identical_files(grocery_store_dir, tiny_sample, tmp_path):
    build_sample(grocery_store_dir, tmp_path / "again", **TINY)
    assert files(tmp_path / "again") == files(tiny_sample)


def test_another_seed_gives_another_sample(grocery_store_dir, tiny_sample, tmp_path):
    build_sample(grocery_store_dir, tmp_path / "other", **{**TINY, "seed": 1})
    other, first = files(tmp_path / "other"), files(tiny_sample)
    assert other.keys() == first.keys()
    for name in ("items.csv", "events.csv", "truth.csv"):
        assert other[name] != first[name]


def test_committed_sample_is_what_the_builder_writes(grocery_store_dir, tmp_path):
    """data/sample is `camenn sample --seed 0` with the defaults, byte for byte, and stays small."""
    rebuilt = tmp_path / "sample"
    build_sample(grocery_store_dir, rebuilt, seed=0)
    committed = files(paths.SAMPLE_DATASET)
    assert committed == files(rebuilt)
    assert sum(len(data) for data in committed.values()) < 7_000_000  # a few MB: photos 5.3, clicks 1.1


def test_the_sample_has_its_shape_and_hidden_truth(tiny_sample):
    items, events, truth = (
        read(tiny_sample, "items.csv"),
        read(tiny_sample, "events.csv"),
        read(tiny_sample, "truth.csv"),
    )
    assert len(items) == TINY["num_listings"] + len(sample.BAD_ITEMS)
    assert len(events) == TINY["num_events"] + len(sample.BAD_ITEMS) * sample.BAD_CLICKS_PER_ITEM + len(
        sample.BAD_EVENTS
    )
    assert [t["item_id"] for t in truth] == [i["item_id"] for i in items]
    quality = [t["quality"] for t in truth]
    assert quality.count("inaccurate_text") + quality.count("vague_photo") == round(0.2 * TINY["num_listings"])
    assert [t["detail"] for t in truth if t["quality"] == "bad_row"] == [r for _, r in sample.BAD_ITEMS]
    for item in items[: TINY["num_listings"]]:
        assert (tiny_sample / item["image_path"]).is_file()
        assert {"title", "description", "price", "store_lat"} <= item.keys()
    timestamps = [int(e["timestamp"]) for e in events]
    assert timestamps == sorted(timestamps)
    assert (tiny_sample / "LICENSE").read_text().startswith("MIT License")
    assert "Klasson" in (tiny_sample / "README.md").read_text()


def test_inaccurate_texts_carry_another_class_text(tiny_sample, grocery_store_dir):
    classes = {c.name: c for c in sample.read_classes(grocery_store_dir)}
    items = {i["item_id"]: i for i in read(tiny_sample, "items.csv")}
    for t in read(tiny_sample, "truth.csv"):
        item = items[t["item_id"]]
        own = classes.get(item["category"])
        if t["quality"] == "inaccurate_text":
            other = classes[t["detail"].removeprefix("text of ")]
            assert item["title"] == other.title and other.coarse != own.coarse
        elif t["quality"] in ("ok", "vague_photo"):
            assert item["title"] == own.title and item["description"] == own.description


def test_committed_sample_follows_the_simulator_rules():
    """Degraded listings come mostly from small merchants and convert less; merchants come in sizes."""
    folder = paths.SAMPLE_DATASET
    items = read(folder, "items.csv")[:480]
    quality = {t["item_id"]: t["quality"] for t in read(folder, "truth.csv")}
    per_merchant = {}
    for item in items:
        per_merchant[item["merchant_id"]] = per_merchant.get(item["merchant_id"], 0) + 1
    size = {m: dataset.merchant_size_label(n) for m, n in per_merchant.items()}
    assert {"small", "medium", "large"} == set(size.values())
    assert sum(s == "small" for s in size.values()) > 2 * sum(s == "large" for s in size.values())

    def degraded_share(label):
        chosen = [quality[i["item_id"]] != "ok" for i in items if size[i["merchant_id"]] == label]
        return np.mean(chosen)

    assert degraded_share("small") > 2 * degraded_share("large")
    assert 0.18 <= np.mean([quality[i["item_id"]] != "ok" for i in items]) <= 0.22

    events = [
        e
        for e in read(folder, "events.csv")
        if e["item_id"] in quality and quality[e["item_id"]] != "bad_row" and e["converted"] in ("0", "1")
    ]
    rate = {
        q: np.mean([e["converted"] == "1" for e in events if quality[e["item_id"]] == q])
        for q in ("ok", "inaccurate_text", "vague_photo")
    }
    assert rate["inaccurate_text"] < rate["vague_photo"] < rate["ok"]
    assert 0.1 < np.mean([e["converted"] == "1" for e in events]) < 0.4


@pytest.mark.parametrize("bad", [{"num_listings": 0}, {"num_events": 0}, {"num_shoppers": 0}])
def test_sizes_must_be_positive(grocery_store_dir, tmp_path, bad):
    with pytest.raises(ValueError):
        build_sample(grocery_store_dir, tmp_path / "x", **{**TINY, **bad})
