"""The ceiling of the experiments: each simulated click's true conversion probability.

`camenn sample` draws every click's `converted` label from a probability it records in the dataset's
`events_truth.csv` (request_id, item_id, probability; `camenn.simulator.sample.EVENTS_TRUTH_FILE`).
Scoring the eval clicks with those probabilities is the best any model can do on that data (the Bayes
ranking): its AUC is the ceiling each model's AUC is read against. Training never reads the file; the
experiments attach it to the eval rows only, after every model has been trained.

Usage:
```text
probabilities = read_event_probabilities("data/sample/events_truth.csv")
oracle = attach(request_ids, item_ids, probabilities)   # [N], NaN where a row has no truth
```
"""

import csv
from pathlib import Path
from typing import Dict, Sequence, Tuple, Union

import numpy as np

from camenn.simulator.sample import EVENTS_TRUTH_FILE

Key = Tuple[bytes, bytes]


def truth_path(dataset_dir: Union[str, Path]) -> Path:
    """Where a dataset folder keeps its click truth (it may not exist: real logs have none)."""
    return Path(dataset_dir) / EVENTS_TRUTH_FILE


def read_event_probabilities(path: Union[str, Path]) -> Dict[Key, float]:
    """(request_id, item_id) -> the click's true conversion probability.

    Args:
        path: an `events_truth.csv` with columns request_id, item_id and probability.

    Raises:
        ValueError: a column is missing, or a probability is outside [0, 1].
    """
    probabilities = {}
    with Path(path).open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        missing = {"request_id", "item_id", "probability"} - set(reader.fieldnames or ())
        if missing:
            raise ValueError(f"{path} lacks column(s) {sorted(missing)}")
        for row in reader:
            p = float(row["probability"])
            if not 0.0 <= p <= 1.0:
                raise ValueError(f"{path}: probability {p} of {row['request_id']}/{row['item_id']} is not in [0, 1]")
            probabilities[(row["request_id"].encode(), row["item_id"].encode())] = p
    return probabilities


def attach(request_ids: Sequence[bytes], item_ids: Sequence[bytes], probabilities: Dict[Key, float]) -> np.ndarray:
    """The true probability of each (request_id, item_id) row: [N] float64, NaN where the truth has none."""
    return np.array(
        [probabilities.get((bytes(r), bytes(i)), np.nan) for r, i in zip(request_ids, item_ids)], dtype=np.float64
    )
