"""The baselines a practitioner tries first: a logistic regression and gradient-boosted trees on a few
hand-made features, trained on the same training clicks as the neural models (Transform's `train`
split) and scored on the same eval clicks. They predict CVR only: no ITA or TIA, so they cannot audit a
listing.

Features (`FEATURES`), all from the training split alone:
- the distance and the hour (as Transform gives them) and hour bands: night 22-06 h, morning 07-10 h,
  evening 17-21 h (midday is the reference);
- the price against its category: the listing's normalised log price minus the median of its fine
  category's listings in the training split;
- smoothed target encodings, `log((orders + m * rate) / (clicks + m))` with m = `SMOOTHING` prior
  clicks at the training rate: of the item, the shopper, the merchant, the fine category, and of the
  shopper x coarse category pair (a shopper's taste). A training click's encodings come from the other
  folds of the training split (`FOLDS` folds, out of fold), so a row's own label never enters its
  features; an eval click's come from the whole training split.

`logistic_regression` is scikit-learn's (standardised features, L2, C = 1); `gradient_boosted_trees` is
YDF's `GradientBoostedTreesLearner` (its defaults: 300 trees of depth 6, shrinkage 0.1, early stopping
on 10% of the training clicks).

Usage:
```text
table = FeatureTable.fit(train_columns, train_labels, seed=0)
model = logistic_regression(table.train, train_labels, seed=0)
cvr = model(table.transform(eval_columns))        # [N] probabilities
```
"""

import dataclasses
from typing import Callable, Dict, Mapping

import numpy as np

from camenn.model import features as F
from camenn.tfx_pipeline.training_data import LISTING_ROW

SMOOTHING = 20.0
FOLDS = 5
# Target-encoded keys: one id, or a pair (shopper x coarse category).
ENCODED = {
    "item": (F.ITEM_ID,),
    "shopper": (F.SHOPPER_ID,),
    "merchant": (F.MERCHANT_ID,),
    "category": (F.CATEGORY,),
    "shopper_x_coarse": (F.SHOPPER_ID, F.COARSE_CATEGORY),
}
FEATURES = ("distance", "hour", "night", "morning", "evening", "price_vs_category", *(f"te_{name}" for name in ENCODED))
NARROW = (*F.ID_FEATURES, F.HOUR, *F.NUMERIC_FEATURES)
Predictor = Callable[[np.ndarray], np.ndarray]


def click_columns(clicks: Mapping[str, np.ndarray], listings: Mapping[str, np.ndarray]) -> Dict[str, np.ndarray]:
    """Per-click narrow features of a `ClickData` (its listings' features gathered onto the clicks)."""
    rows = clicks[LISTING_ROW]
    return {name: clicks[name] if name in clicks else listings[name][rows] for name in NARROW}


def _keys(columns: Mapping[str, np.ndarray], names) -> np.ndarray:
    key = np.zeros(len(columns[names[0]]), np.int64)
    for name in names:
        key = key * 1_000_003 + columns[name].astype(np.int64)
    return key


def _encode(train_keys, train_labels, keys, rate):
    """Smoothed log rate of each of `keys` from (train_keys, train_labels)."""
    unique, inverse = np.unique(train_keys, return_inverse=True)
    clicks = np.bincount(inverse, minlength=len(unique)).astype(np.float64)
    orders = np.bincount(inverse, weights=train_labels, minlength=len(unique))
    position = np.clip(np.searchsorted(unique, keys), 0, max(len(unique) - 1, 0))
    found = (unique[position] == keys) if len(unique) else np.zeros(len(keys), bool)
    n = np.where(found, clicks[position] if len(unique) else 0.0, 0.0)
    k = np.where(found, orders[position] if len(unique) else 0.0, 0.0)
    return np.log((k + SMOOTHING * rate) / (n + SMOOTHING))


@dataclasses.dataclass
class FeatureTable:
    """The hand features of the training clicks (`train`, [N, len(FEATURES)]) and what `transform` needs
    to make the same features for other clicks."""

    train: np.ndarray
    rate: float
    category_median_price: Dict[int, float]
    train_keys: Dict[str, np.ndarray]
    train_labels: np.ndarray

    @classmethod
    def fit(cls, columns: Mapping[str, np.ndarray], labels: np.ndarray, seed: int) -> "FeatureTable":
        """Features of the training clicks `columns` (`click_columns`), encodings out of fold.

        Args:
            columns: per-click narrow features of the training split.
            labels: [N] the clicks' order labels.
            seed: seeds the fold of each click.
        """
        labels = np.asarray(labels, np.float64)
        rate = float(labels.mean())
        medians = {}
        for category in np.unique(columns[F.CATEGORY]):
            medians[int(category)] = float(np.median(columns[F.PRICE][columns[F.CATEGORY] == category]))
        keys = {name: _keys(columns, names) for name, names in ENCODED.items()}
        folds = np.random.default_rng(seed).permutation(len(labels)) % FOLDS
        encodings = {name: np.empty(len(labels)) for name in ENCODED}
        for fold in range(FOLDS):
            held, rest = folds == fold, folds != fold
            for name in ENCODED:
                encodings[name][held] = _encode(keys[name][rest], labels[rest], keys[name][held], rate)
        table = cls(np.empty((0, len(FEATURES))), rate, medians, keys, labels)
        table.train = table._features(columns, encodings)
        return table

    def transform(self, columns: Mapping[str, np.ndarray]) -> np.ndarray:
        """[N, len(FEATURES)] features of other clicks, encodings from the whole training split."""
        encodings = {
            name: _encode(self.train_keys[name], self.train_labels, _keys(columns, names), self.rate)
            for name, names in ENCODED.items()
        }
        return self._features(columns, encodings)

    def _features(self, columns, encodings) -> np.ndarray:
        hour = columns[F.HOUR].astype(np.int64)
        median = np.array([self.category_median_price.get(int(c), np.nan) for c in columns[F.CATEGORY]])
        price = columns[F.PRICE].astype(np.float64)
        values = {
            "distance": columns[F.DISTANCE_KM].astype(np.float64),
            "hour": hour.astype(np.float64),
            "night": ((hour >= 22) | (hour <= 6)).astype(np.float64),
            "morning": ((hour >= 7) & (hour <= 10)).astype(np.float64),
            "evening": ((hour >= 17) & (hour <= 21)).astype(np.float64),
            "price_vs_category": np.where(np.isnan(median), 0.0, price - np.nan_to_num(median)),
            **{f"te_{name}": value for name, value in encodings.items()},
        }
        return np.stack([values[name] for name in FEATURES], axis=1)


def logistic_regression(features: np.ndarray, labels: np.ndarray, seed: int) -> Predictor:
    """scikit-learn's L2 logistic regression on standardised features; returns P(order)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    model = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=2000, random_state=seed))
    model.fit(features, np.asarray(labels, np.int64))
    return lambda x: model.predict_proba(x)[:, 1]


def gradient_boosted_trees(features: np.ndarray, labels: np.ndarray, seed: int) -> Predictor:
    """YDF's gradient-boosted trees (its defaults, early stopping on 10% of the given clicks); returns P(order)."""
    import ydf

    def table(x):
        return {name: x[:, i].astype(np.float32) for i, name in enumerate(FEATURES)}

    data = table(features)
    data["label"] = np.asarray(labels, np.int64)
    model = ydf.GradientBoostedTreesLearner(label="label", task=ydf.Task.CLASSIFICATION, random_seed=seed).train(
        data, verbose=0
    )
    return lambda x: np.asarray(model.predict(table(x)), np.float64).reshape(-1)


LEARNERS = {"logistic_regression": logistic_regression, "gradient_boosted_trees": gradient_boosted_trees}
