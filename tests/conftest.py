"""Shared test set-up: quiet TensorFlow logs and paths every test may use."""
import os
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED = REPO_ROOT.parent / "shared"


@pytest.fixture(scope="session")
def grocery_store_dir():
    path = SHARED / "data" / "grocery_store"
    if not path.is_dir():
        pytest.fail(f"{path} is missing: CI and developers have ../shared beside the checkout")
    return path
