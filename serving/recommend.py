"""Recommendations for a shopper: retrieval, then ranking, two gRPC calls.

1. One Predict to the retrieval model (`camenn_retrieval`, `serving_default`): the shopper and the hour
   in, the top 100 listings of its index out, with their titles, category, price and the listing audit's
   alignment. A shopper the retrieval model does not know (no click in its training data) gets the most
   clicked listings instead, and the answer says so (`Recommendations.known_shopper`).
2. One Predict to the ranker (`camenn`, `rank`): those candidates by item id, the shopper and the context
   in; CVR, ITA and TIA out (`RankingClient.score`). A candidate the ranker's version does not know is left
   out and reported, as `camenn rank` does.
3. The candidates ordered by CVR, with the demotion rule below, and the first k returned.

Demotion rule: a listing whose out-of-fold alignment min(ITA, TIA), from the pipeline's listing audit
(`camenn audit`: a model that never trained on the listing scored its photo against its text), is under
`demote_below` (default 0.5, the threshold at which `camenn audit` flags it) moves below every listing
that is not, keeping CVR order within each group. The audit's scores, not the served ranker's ITA and
TIA, because the served ranker trained on every listing's own photo and text as a matching pair, flawed
or not, so its alignment scores on catalog listings are inflated exactly where they matter (the audit
measures how well its scores find the sample's known flawed listings; the served ones would grade their
own homework). The audit's alignment travels inside the retrieval model's version (its index), so the
rule needs no file at serving time. A listing the audit did not score (added after it ran) is not
demoted. `demote_below=None` turns the rule off. The table still shows the ranker's ITA and TIA.

Example (the demotion rule, on given scores):
```python
import numpy as np
from camenn.serving.recommend import order

cvr = np.array([0.9, 0.5, 0.7, 0.2])
alignment = np.array([0.1, 0.8, np.nan, 0.9])  # the audit's min(ITA, TIA); NaN: not audited
assert order(cvr, alignment, demote_below=0.5) == [2, 1, 3, 0]  # listing 0 flagged: last despite its CVR
assert order(cvr, alignment, demote_below=None) == [0, 2, 1, 3]  # CVR alone
```

Usage (needs a server with both models, the ranker and `camenn_retrieval`: `camenn serve
--model_config_file outputs/serving_model/local_models.config`, after a pipeline run):
```text
from camenn.serving.recommend import RecommendationClient

with RecommendationClient(port=8500) as client:
    recommendations = client.recommend("s0088", k=10, hour=18)
    for item in recommendations:
        print(item.item_id, item.title, item.category, item.price, item.cvr, item.ita, item.tia)
    print(recommendations.known_shopper, recommendations.unknown_item_ids)
```
"""

import dataclasses
import datetime
import math
from typing import List, Optional, Sequence

import numpy as np

from camenn.model import features
from camenn.serving import defaults
from camenn.serving.client import RankingClient, UnknownItemsError, _encoded

RETRIEVAL_SIGNATURE = "serving_default"
DEMOTE_BELOW = 0.5  # camenn.serving.audit.DEFAULT_THRESHOLD: the audit flags a listing under it


@dataclasses.dataclass(frozen=True)
class Recommendation:
    item_id: str
    title: str
    category: str
    price: float
    cvr: float
    ita: float
    tia: float
    retrieval_score: float
    alignment: float  # out-of-fold min(ITA, TIA) from the listing audit; NaN when not audited
    demoted: bool


class Recommendations(list):
    """The top k, best first. `known_shopper`: False when retrieval fell back to popular listings;
    `candidates`: how many listings retrieval handed to the ranker; `unknown_item_ids`: candidates the
    ranker's version does not know (left out)."""

    def __init__(
        self,
        items: Sequence[Recommendation] = (),
        known_shopper: bool = True,
        candidates: int = 0,
        unknown_item_ids: Sequence[str] = (),
    ):
        super().__init__(items)
        self.known_shopper = known_shopper
        self.candidates = candidates
        self.unknown_item_ids = list(unknown_item_ids)


def order(cvr: np.ndarray, alignment: np.ndarray, demote_below: Optional[float]) -> List[int]:
    """Indices by the demotion rule (module docstring): not demoted first, each group by CVR, highest first."""
    demoted = np.zeros(len(cvr), bool) if demote_below is None else np.nan_to_num(alignment, nan=np.inf) < demote_below
    return sorted(range(len(cvr)), key=lambda i: (bool(demoted[i]), -float(cvr[i])))


class RecommendationClient:
    """Retrieval then ranking through a PredictionService serving both models (`camenn serve` with the
    bundle's models.config, or TensorFlow Serving).

    Args:
        host, port: the server (default 127.0.0.1:8500).
        model_name: the ranker (default camenn); retrieval_model_name: the retrieval model
            (default camenn_retrieval).
        timeout: seconds per request.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = defaults.GRPC_PORT,
        model_name: str = defaults.MODEL_NAME,
        retrieval_model_name: str = defaults.RETRIEVAL_MODEL_NAME,
        timeout: float = 30.0,
    ):
        self.ranker = RankingClient(host, port, model_name, timeout=timeout)  # one channel for both models
        self.retrieval_model_name = retrieval_model_name

    def close(self) -> None:
        self.ranker.close()

    def __enter__(self) -> "RecommendationClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def retrieve(self, shopper_id: str, hour: int) -> dict:
        """One Predict to the retrieval model: its top listings for the shopper at that hour (arrays [K],
        `known_shopper` a bool)."""
        out = self.ranker._predict(
            RETRIEVAL_SIGNATURE,
            {features.SHOPPER_ID: _encoded([shopper_id]), features.HOUR: np.array([hour], np.int64)},
            model_name=self.retrieval_model_name,
        )
        result = {name: value[0] for name, value in out.items()}
        result["known_shopper"] = bool(result["known_shopper"])
        return result

    def recommend(
        self,
        shopper_id: str,
        k: int = 10,
        hour: Optional[int] = None,
        distance_km: float = defaults.DISTANCE_KM,
        demote_below: Optional[float] = DEMOTE_BELOW,
        candidates: Optional[int] = None,
    ) -> Recommendations:
        """The k best listings for the shopper (module docstring): retrieval's top `candidates` (default:
        all it returns, 100 in the pipeline's export) ranked by the ranker's CVR, audit-flagged listings
        demoted unless `demote_below` is None."""
        if k < 1:
            raise ValueError(f"k must be at least 1, got {k}")
        hour = datetime.datetime.now().hour if hour is None else hour
        if not 0 <= hour <= 23:
            raise ValueError(f"hour must be 0..23, got {hour}")
        found = self.retrieve(shopper_id, hour)
        keep = slice(0, candidates)
        item_ids = [i.decode() for i in found[features.ITEM_ID][keep]]
        if not item_ids:
            return Recommendations([], found["known_shopper"], 0)
        unknown: List[str] = []
        try:
            scores = self.ranker.score(shopper_id, item_ids, hour, distance_km)
            rows = list(range(len(item_ids)))
        except UnknownItemsError as error:  # listings the ranker's version lacks: rank the rest
            unknown = [i for i in item_ids if i in set(error.item_ids)]
            rows = [r for r, i in enumerate(item_ids) if i not in set(unknown)]
            if not rows:
                return Recommendations([], found["known_shopper"], len(item_ids), unknown)
            scores = self.ranker.score(shopper_id, [item_ids[r] for r in rows], hour, distance_km)
        alignment = found["alignment"][keep][rows]
        ranked = order(scores[features.CVR], alignment, demote_below)[:k]
        items = []
        for j in ranked:
            r = rows[j]
            a = float(alignment[j])
            items.append(
                Recommendation(
                    item_ids[r],
                    found[features.TITLE][r].decode(),
                    found[features.CATEGORY][r].decode(),
                    float(found[features.PRICE][r]),
                    *(float(scores[t][j]) for t in features.TASKS),
                    retrieval_score=float(found["score"][r]),
                    alignment=a,
                    demoted=demote_below is not None and not math.isnan(a) and a < demote_below,
                )
            )
        return Recommendations(items, found["known_shopper"], len(item_ids), unknown)


def format_table(recommendations: Recommendations) -> str:
    """The recommendations as a text table (what `camenn recommend` prints)."""
    rows = [
        (
            str(n),
            r.item_id,
            r.title[:36],
            r.category[:18],
            f"{r.price:.2f}",
            f"{r.cvr:.4f}",
            f"{r.ita:.4f}",
            f"{r.tia:.4f}",
            "demoted: audit flags photo/text" if r.demoted else "",
        )
        for n, r in enumerate(recommendations, 1)
    ]
    header = ("rank", "item", "title", "category", "price", "CVR", "ITA", "TIA", "")
    widths = [max(len(h), *(len(row[i]) for row in rows)) if rows else len(h) for i, h in enumerate(header)]
    right = {0, 4, 5, 6, 7}

    def line(cells):
        return "  ".join(
            c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths))
        ).rstrip()

    return "\n".join([line(header)] + [line(row) for row in rows])
