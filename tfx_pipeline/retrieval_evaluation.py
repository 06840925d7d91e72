"""Recall@K of a retrieval SavedModel on held-out clicks, against popularity and random retrieval.

For every eval click (a shopper, the hour, the listing they clicked), the model retrieves its top K
listings for that shopper and hour; Recall@K is the share of clicks whose listing is among them. Two
baselines on the same clicks and the same listings (the model's index):
- popularity: everyone gets the K listings with the most clicks in the training split (ties by item id);
- random: K listings drawn at random, whose expected Recall@K is exactly min(K, N) / N for N listings.
TFMA has no metric over a retrieval index, hence this module (the `RetrievalEvaluator` step runs it).

Example (the measures, on given rankings):
```python
from camenn.tfx_pipeline.retrieval_evaluation import popularity_ranking, random_recall, recall_at_k

retrieved = [[b"a", b"b"], [b"c", b"a"]]  # per click, the retrieved item ids, best first
assert recall_at_k(retrieved, clicked=[b"b", b"a"], ks=(1, 2)) == {1: 0.0, 2: 1.0}
assert popularity_ranking([b"b", b"a", b"b"], listings=[b"a", b"b", b"c"]) == [b"b", b"a", b"c"]
assert random_recall(10, 40) == 0.25
```

Usage (on a pipeline run's retrieval SavedModel, its index filled, and `camenn preprocess`'s OUT):
```text
from camenn.tfx_pipeline.retrieval_evaluation import evaluate_saved_model, read_clicks

clicks = read_clicks("OUT/examples/eval/*.tfrecord.gz")
train = read_clicks("OUT/examples/train/*.tfrecord.gz")
result = evaluate_saved_model("outputs/serving_model/camenn_retrieval/1", train, clicks, ks=(10, 100))
result["recall@100"], result["popularity_recall@100"], result["random_recall@100"]
```
"""

import collections
from typing import Dict, List, Mapping, Sequence

import numpy as np
import tensorflow as tf

from camenn.model import features as F

CLICK_FEATURES = (F.SHOPPER_ID, F.HOUR, F.ITEM_ID)


def recall_at_k(retrieved: Sequence[Sequence[bytes]], clicked: Sequence[bytes], ks: Sequence[int]) -> Dict[int, float]:
    """Share of clicks whose listing is among the first k retrieved for its request, for each k.

    Args:
        retrieved: per click, the retrieved item ids, best first (at least max(ks) unless the catalog is smaller).
        clicked: per click, the item id clicked.
        ks: the cut-offs.
    """
    if len(retrieved) != len(clicked) or not len(clicked):
        raise ValueError(f"need one retrieved list per click, got {len(retrieved)} lists for {len(clicked)} clicks")
    result = {}
    for k in ks:
        hits = sum(1 for ranked, item in zip(retrieved, clicked) if item in list(ranked[:k]))
        result[int(k)] = hits / len(clicked)
    return result


def popularity_ranking(training_items: Sequence[bytes], listings: Sequence[bytes]) -> List[bytes]:
    """`listings` ordered by their clicks in `training_items`, most first, ties by item id."""
    counts = collections.Counter(training_items)
    return sorted(listings, key=lambda item: (-counts.get(item, 0), item))


def random_recall(k: int, num_listings: int) -> float:
    """Expected Recall@k of k listings drawn uniformly without replacement from num_listings."""
    return min(k, num_listings) / num_listings


def read_clicks(pattern: str, names: Sequence[str] = CLICK_FEATURES) -> Dict[str, np.ndarray]:
    """The named scalar features of every raw tf.Example in GZIP TFRecords matching `pattern`, parsed
    alone (the cached encodings each example also holds are skipped)."""
    files = sorted(tf.io.gfile.glob(pattern))
    if not files:
        raise FileNotFoundError(f"no files match {pattern}")
    spec = {name: tf.io.FixedLenFeature([], tf.int64 if name == F.HOUR else tf.string) for name in names}
    parts = collections.defaultdict(list)
    for batch in tf.data.TFRecordDataset(files, compression_type="GZIP").batch(1024):
        for name, value in tf.io.parse_example(batch, spec).items():
            parts[name].append(value.numpy())
    return {name: np.concatenate(parts[name]) for name in names}


def retrieve(loaded, shopper_ids: np.ndarray, hours: np.ndarray, batch_size: int = 256) -> Dict[str, np.ndarray]:
    """The model's `serving_default` over every request: `item_id` [n, K] and `known_shopper` [n]."""
    signature = loaded.signatures["serving_default"]
    items, known = [], []
    for start in range(0, len(shopper_ids), batch_size):
        out = signature(
            shopper_id=tf.constant(shopper_ids[start : start + batch_size]),
            hour=tf.constant(hours[start : start + batch_size], tf.int64),
        )
        items.append(out[F.ITEM_ID].numpy())
        known.append(out["known_shopper"].numpy())
    return {F.ITEM_ID: np.concatenate(items), "known_shopper": np.concatenate(known)}


def evaluate_saved_model(
    saved_model_dir: str,
    training_clicks: Mapping[str, np.ndarray],
    eval_clicks: Mapping[str, np.ndarray],
    ks: Sequence[int],
) -> Dict[str, float]:
    """Recall@K of the model and of both baselines (module docstring) on `eval_clicks`.

    Returns a flat dict: `recall@k`, `popularity_recall@k`, `random_recall@k`, `lift_over_popularity@k`
    for each k, and `eval_clicks`, `listings`, `unknown_shopper_clicks` (clicks of shoppers the model
    has no vector for: it answers them with popularity), `clicks_outside_index` (counted as misses).
    """
    loaded = tf.saved_model.load(saved_model_dir)
    listings = list(loaded.index.item_ids.numpy())
    if not listings:
        raise ValueError(f"{saved_model_dir}: the retrieval index is empty")
    retrieved = retrieve(loaded, eval_clicks[F.SHOPPER_ID], eval_clicks[F.HOUR])
    clicked = list(eval_clicks[F.ITEM_ID])
    model = recall_at_k(retrieved[F.ITEM_ID], clicked, ks)
    popular = popularity_ranking(list(training_clicks[F.ITEM_ID]), listings)
    popularity = recall_at_k([popular] * len(clicked), clicked, ks)
    indexed = set(listings)
    result = {
        "eval_clicks": float(len(clicked)),
        "listings": float(len(listings)),
        "unknown_shopper_clicks": float((~retrieved["known_shopper"]).sum()),
        "clicks_outside_index": float(sum(1 for item in clicked if item not in indexed)),
    }
    for k in ks:
        result[f"recall@{k}"] = model[k]
        result[f"popularity_recall@{k}"] = popularity[k]
        result[f"random_recall@{k}"] = random_recall(k, len(listings))
        result[f"lift_over_popularity@{k}"] = model[k] / popularity[k] if popularity[k] else float("inf")
    return result


def judge(
    result: Mapping[str, float],
    k: int,
    min_lift: float,
    baseline: Mapping[str, float] = None,
    max_regression: float = 0.0,
) -> List[str]:
    """Why the model is not blessed (empty: blessed), judged at Recall@k.

    Bounds: Recall@k at least `min_lift` times popularity's, above random's (unless k retrieves every
    listing, when every retrieval is perfect), and not below `baseline`'s (the last blessed model's, on
    the same clicks) by more than `max_regression`.
    """
    failures = []
    recall, popular, random = result[f"recall@{k}"], result[f"popularity_recall@{k}"], result[f"random_recall@{k}"]
    if recall < min_lift * popular:
        failures.append(f"recall@{k} {recall:.4f} < {min_lift} x popularity's {popular:.4f}")
    if random < 1.0 and recall <= random:
        failures.append(f"recall@{k} {recall:.4f} <= random's {random:.4f}")
    if baseline is not None and recall < baseline[f"recall@{k}"] - max_regression:
        failures.append(
            f"recall@{k} {recall:.4f} < the last blessed model's {baseline[f'recall@{k}']:.4f} - {max_regression}"
        )
    return failures
