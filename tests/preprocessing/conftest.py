"""Preprocessing fixtures: a tiny sample, and the same sample with every kind of awkward or bad row added."""

from pathlib import Path

import pytest
from awkward_data import TINY, add_awkward_rows

from camenn.simulator.sample import build_sample


@pytest.fixture(scope="session")
def tiny_sample(grocery_store_dir, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("tiny_sample")
    build_sample(grocery_store_dir, folder, **TINY)
    return folder


@pytest.fixture(scope="session")
def awkward_dataset(grocery_store_dir, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("awkward_dataset")
    build_sample(grocery_store_dir, folder, **TINY)
    add_awkward_rows(folder)
    return folder
