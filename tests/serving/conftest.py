"""Serving fixtures (helpers and the models they build: serving_helpers.py)."""

import contextlib
import os
import shutil
from pathlib import Path

import pytest
import tensorflow as tf
from serving_helpers import Stubs, export_camenn_model, export_toy_model, item_example, make_catalog


@pytest.fixture(scope="session")
def catalog():
    return make_catalog()


@pytest.fixture(scope="session")
def item_features_dir(tmp_path_factory, catalog):
    """OUT of `camenn preprocess` as serving reads it: OUT/items/*.tfrecord.gz, split over two shards."""
    items, _ = catalog
    out = tmp_path_factory.mktemp("preprocessed")
    (out / "items").mkdir()
    options = tf.io.TFRecordOptions(compression_type="GZIP")
    for shard in range(2):
        with tf.io.TFRecordWriter(str(out / "items" / f"items-{shard:05d}-of-00002.tfrecord.gz"), options) as writer:
            for item in items[shard::2]:
                writer.write(item_example(item))
    return out / "items"


@pytest.fixture(scope="session")
def model_v1(tmp_path_factory, catalog):
    """A pristine CameNN export (version 1), copied into each test's own base path."""
    items, _ = catalog
    return export_camenn_model(tmp_path_factory.mktemp("camenn_export") / "1", items)


@pytest.fixture(scope="session")
def toy_v1(tmp_path_factory, catalog):
    """A ToyCameNN export (version 1): alignment scores that mean something."""
    items, _ = catalog
    return export_toy_model(tmp_path_factory.mktemp("toy_export") / "1", items)


@pytest.fixture
def push(catalog):
    """push(base, version, source=None, cvr_bias=...): a version appears in base the way a pusher writes it."""
    items, _ = catalog

    def push_version(base, version, source=None, cvr_bias=0.0):
        staging = Path(base).parent / f".staging-{Path(base).name}-{version}"
        if source is not None:
            shutil.copytree(source, staging)
        else:
            export_toy_model(staging, items, cvr_bias)
        Path(base).mkdir(parents=True, exist_ok=True)
        os.replace(staging, Path(base) / str(version))
        return Path(base) / str(version)

    return push_version


def _base_with(tmp_path, version_dir):
    base = tmp_path / "serving_model" / "camenn"
    base.mkdir(parents=True)
    shutil.copytree(version_dir, base / "1")
    return base


@pytest.fixture
def model_base(tmp_path, model_v1):
    """A base path (…/serving_model/camenn) holding the CameNN export as version 1."""
    return _base_with(tmp_path, model_v1)


@pytest.fixture
def toy_base(tmp_path, toy_v1):
    """A base path holding the ToyCameNN export as version 1 (loads in a second: for tests of mechanics)."""
    return _base_with(tmp_path, toy_v1)


@contextlib.contextmanager
def _serving(root, version_dir):
    from camenn.serving.servables import ModelConfig
    from camenn.serving.server import ModelServer

    base = _base_with(root, version_dir)
    server = ModelServer([ModelConfig("camenn", str(base))], port=0, poll_seconds=0.1, max_batch_size=64).start()
    stubs = Stubs(server.port)
    try:
        yield server, stubs
    finally:
        stubs.channel.close()
        server.stop(0)


@pytest.fixture(scope="module")
def served(tmp_path_factory, model_v1):
    """An in-process `camenn serve` over its own base path holding the CameNN export; yields (server, stubs)."""
    with _serving(tmp_path_factory.mktemp("served"), model_v1) as pair:
        yield pair


@pytest.fixture(scope="module")
def served_toy(tmp_path_factory, toy_v1):
    """The same over the ToyCameNN export."""
    with _serving(tmp_path_factory.mktemp("served_toy"), toy_v1) as pair:
        yield pair
