"""The listing table of a served version: what it holds equals a fresh encoding of the catalog, and
`camenn listings add` adds new and edited listings as the next version, without retraining and without
Keras, which a running server then serves."""

import argparse
import shutil
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf
from serving_helpers import WITHOUT_KERAS, catalog_columns, item_example, make_catalog

from camenn.model import features as F
from camenn.serving import cli, listings
from camenn.serving.client import RankingClient, UnknownItemsError
from camenn.serving.servables import ModelConfig
from camenn.serving.server import ModelServer


def run_verb(*argv):
    parser = argparse.ArgumentParser()
    cli.register(parser.add_subparsers())
    args = parser.parse_args(argv)
    return args.func(args)


def test_the_versions_listing_table_is_a_fresh_encoding_of_the_catalog(model_v1, catalog):
    items, _ = catalog
    loaded = tf.saved_model.load(str(model_v1))
    table = listings.read_table(loaded)
    fresh = listings.encode(loaded, catalog_columns(items))
    order = {item_id: row for row, item_id in enumerate(table["item_ids"])}
    rows = [order[item[F.ITEM_ID].encode()] for item in items]
    assert len(table["item_ids"]) == len(items)
    for name, value in fresh.items():
        np.testing.assert_allclose(table[name][rows], value, rtol=1e-5, atol=1e-6, err_msg=name)
    assert [t.decode() for t in table[F.TITLE][rows]] == [item[F.TITLE] for item in items]


@pytest.fixture
def new_listings(tmp_path, catalog):
    """OUT/items of `camenn preprocess` for two listings: item_000 edited (another category's text) and a new one."""
    items, _ = catalog
    edited = dict(items[0], **{F.TEXT_EMBEDDINGS: items[1][F.TEXT_EMBEDDINGS], F.TITLE: "edited title"})
    new = dict(make_catalog(num_items=40, seed=9)[0][38], **{F.ITEM_ID: "item_new", F.TITLE: "a new listing"})
    folder = tmp_path / "new" / "items"
    folder.mkdir(parents=True)
    with tf.io.TFRecordWriter(str(folder / "items-00000-of-00001.tfrecord.gz"), "GZIP") as writer:
        for item in (edited, new):
            writer.write(item_example(item))
    return folder


def test_listings_add_writes_the_next_version_which_a_running_server_serves(model_base, new_listings, capsys):
    with ModelServer([ModelConfig("camenn", str(model_base))], port=0, poll_seconds=0.1) as server:
        with RankingClient(port=server.port) as client:
            before = client.score("shopper_1", ["item_000", "item_001"], hour=9)
            with pytest.raises(UnknownItemsError):
                client.score("shopper_1", ["item_new"], hour=9)
            code = run_verb("listings", "add", "--items", str(new_listings), "--model_base_path", str(model_base))
            out = capsys.readouterr().out
            assert code == 0 and "37 listings (1 added, 1 replaced)" in out
            deadline = time.monotonic() + 30
            while client.listings(["item_000"])[F.TITLE][0] != b"edited title":
                assert time.monotonic() < deadline, "the server did not load the new version"
                time.sleep(0.1)
            after = client.score("shopper_1", ["item_000", "item_001", "item_new"], hour=9)
    assert after[F.ITA][0] != pytest.approx(before[F.ITA][0])  # the edited text was encoded again
    assert after[F.ITA][1] == pytest.approx(before[F.ITA][1])  # the others are as they were
    assert sorted(p.name for p in model_base.iterdir()) == ["1", "2"]
    assert len(listings.read_table(tf.saved_model.load(str(model_base / "1")))["item_ids"]) == 36  # untouched


def test_listings_are_added_without_keras(model_base, new_listings):
    code = (
        "import sys\nfrom camenn.serving import listings\n"
        "version, counts = listings.add_listings(sys.argv[1], listings.read_listing_features(sys.argv[2]))\n"
        "print('ADDED', counts)\n"
    )
    result = subprocess.run(
        [sys.executable, str(WITHOUT_KERAS), "-c", code, str(model_base), str(new_listings)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "ADDED {'listings': 37, 'added': 1, 'replaced': 1}" in result.stdout


def test_adding_needs_a_version_and_the_listings_the_model_encodes(tmp_path, model_base, new_listings, capsys):
    code = run_verb("listings", "add", "--items", str(new_listings), "--model_base_path", str(tmp_path / "none"))
    assert code == 2 and "no SavedModel version" in capsys.readouterr().err
    with pytest.raises(KeyError, match="patch_embeddings"):
        features = listings.read_listing_features(str(new_listings))
        del features[F.PATCH_EMBEDDINGS]
        listings.add_listings(str(model_base), features)
    shutil.rmtree(model_base / "1" / "assets.extra", ignore_errors=True)
    code = run_verb("listings", "add", "--dataset", str(tmp_path), "--model_base_path", str(model_base))
    assert code == 2 and "camenn_encoding.json is missing" in capsys.readouterr().err
