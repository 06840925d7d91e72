"""Where CameNN finds its repository files and keeps what set-up writes once (converted presets)."""

import os
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
SAMPLE_DATASET = REPO_ROOT / "data" / "sample"
DEFAULT_OUTPUTS = REPO_ROOT / "outputs"


def cache_dir() -> Path:
    """Folder for files set-up derives once (converted weights, presets).

    `$CAMENN_CACHE_DIR` when set, else `<venv>/share/camenn`: it lives and dies with the virtual
    environment that set-up creates, so a fresh set-up rebuilds it and nothing leaks into $HOME.
    """
    return Path(os.environ.get("CAMENN_CACHE_DIR", Path(sys.prefix) / "share" / "camenn"))


def presets_dir() -> Path:
    return cache_dir() / "presets"
