"""The retrieval model's steps after its Trainer: `RetrievalIndex`, `RetrievalEvaluator`, and the resolver
strategy that finds the last blessed retrieval model.

- `RetrievalIndex` fills the trained model's top-K index from the catalog (every good listing, clicked or
  not, through the model's own candidate tower) and the listing audit's out-of-fold alignment, as
  `ListingTable` does for the ranker; the evaluator judges and the Pusher pushes this model.
- `RetrievalEvaluator` computes Recall@K on the eval split against popularity and random
  (`camenn.tfx_pipeline.retrieval_evaluation`), and against the last blessed retrieval model when there is
  one, and writes a ModelBlessing the Pusher reads. TFMA has no metric over a retrieval index.
- Its blessing records the model under `retrieval_model_id`, not TFMA's `current_model_id`: TFX's
  LatestBlessedModelStrategy (the ranker's baseline resolver) then never takes a retrieval model for the
  ranker's baseline; `LatestBlessedRetrievalModelStrategy` resolves the retrieval model's own.
"""

import json
import logging
import os

from tfx import v1 as tfx
from tfx.dsl.input_resolution.strategies.latest_blessed_model_strategy import LatestBlessedModelStrategy
from tfx.types import artifact_utils
from tfx.utils import path_utils

from camenn.tfx_pipeline.components.artifacts import ItemFeatures, ListingAuditReport

logger = logging.getLogger(__name__)

RETRIEVAL_MODEL_ID = "retrieval_model_id"
METRICS_FILE = "retrieval_metrics.json"


class LatestBlessedRetrievalModelStrategy(LatestBlessedModelStrategy):
    """The latest Model whose ModelBlessing from `RetrievalEvaluator` says blessed (see the module docstring)."""

    def _resolve(self, input_dict, model_channel_key, model_blessing_channel_key):
        blessed = {
            a.get_int_custom_property(RETRIEVAL_MODEL_ID): a
            for a in input_dict[model_blessing_channel_key]
            if a.get_int_custom_property("blessed") == 1 and a.get_int_custom_property(RETRIEVAL_MODEL_ID)
        }
        for model in sorted(input_dict[model_channel_key], key=lambda a: a.id, reverse=True):
            if model.id in blessed:
                return {model_channel_key: [model], model_blessing_channel_key: [blessed[model.id]]}
        return {model_channel_key: [], model_blessing_channel_key: []}


@tfx.dsl.components.component
def RetrievalIndex(
    model: tfx.dsl.components.InputArtifact[tfx.types.standard_artifacts.Model],
    items: tfx.dsl.components.InputArtifact[ItemFeatures],
    indexed_model: tfx.dsl.components.OutputArtifact[tfx.types.standard_artifacts.Model],
    audit: tfx.dsl.components.InputArtifact[ListingAuditReport] = None,
    code_version: tfx.dsl.components.Parameter[str] = "",
) -> None:
    """Writes `model` with its index filled from `items` and `audit` (module docstring). `code_version` is
    part of the cache key only."""
    del code_version
    from camenn.serving import audit as audit_report
    from camenn.serving import retrieval_index
    from camenn.serving.listings import read_listing_features

    alignment = None
    if audit is not None:
        report = os.path.join(audit.uri, audit_report.REPORT_FILE)
        alignment = retrieval_index.read_alignment(report) if os.path.exists(report) else None
    counts = retrieval_index.write_index(
        path_utils.serving_model_path(model.uri),
        read_listing_features(items.uri),
        path_utils.serving_model_dir(indexed_model.uri),
        alignment,
    )
    for key, value in counts.items():
        indexed_model.set_int_custom_property(key, value)
    logger.info(
        "retrieval index: %d listings (%d clicked in training, %d with an audit alignment)",
        counts["listings"],
        counts["clicked"],
        counts["audited"],
    )


@tfx.dsl.components.component
def RetrievalEvaluator(
    model: tfx.dsl.components.InputArtifact[tfx.types.standard_artifacts.Model],
    examples: tfx.dsl.components.InputArtifact[tfx.types.standard_artifacts.Examples],
    evaluation: tfx.dsl.components.OutputArtifact[tfx.types.standard_artifacts.ModelEvaluation],
    blessing: tfx.dsl.components.OutputArtifact[tfx.types.standard_artifacts.ModelBlessing],
    recall_ks: tfx.dsl.components.Parameter[str] = "10,50,100",
    bless_k: tfx.dsl.components.Parameter[int] = 100,
    min_lift_over_popularity: tfx.dsl.components.Parameter[float] = 1.0,
    max_regression: tfx.dsl.components.Parameter[float] = 0.0,
    baseline_model: tfx.dsl.components.InputArtifact[tfx.types.standard_artifacts.Model] = None,
    code_version: tfx.dsl.components.Parameter[str] = "",
) -> None:
    """Recall@K of `model` on the eval split of the raw `examples` against popularity (from the train split)
    and random, and against `baseline_model` if given; blesses it when `retrieval_evaluation.judge` finds
    nothing wrong at Recall@`bless_k`. Writes `retrieval_metrics.json` into `evaluation`. `code_version` is
    part of the cache key only."""
    del code_version
    from camenn.tfx_pipeline import retrieval_evaluation as ev

    ks = sorted({int(k) for k in recall_ks.split(",") if k.strip()} | {int(bless_k)})
    split = lambda name: os.path.join(artifact_utils.get_split_uri([examples], name), "*")  # noqa: E731
    train, clicks = ev.read_clicks(split("train")), ev.read_clicks(split("eval"))
    result = ev.evaluate_saved_model(path_utils.serving_model_path(model.uri), train, clicks, ks)
    baseline = None
    if baseline_model is not None:
        baseline = ev.evaluate_saved_model(path_utils.serving_model_path(baseline_model.uri), train, clicks, ks)
    failures = ev.judge(result, int(bless_k), min_lift_over_popularity, baseline, max_regression)
    record = {
        "metrics": result,
        "baseline_metrics": baseline,
        "bless_k": int(bless_k),
        "failures": failures,
        "blessed": not failures,
    }
    with open(os.path.join(evaluation.uri, METRICS_FILE), "w") as f:
        json.dump(record, f, indent=2, sort_keys=True)
    evaluation.set_json_value_custom_property("metrics", result)
    blessing.set_int_custom_property("blessed", int(not failures))
    blessing.set_int_custom_property(RETRIEVAL_MODEL_ID, model.id)
    blessing.set_string_custom_property("retrieval_model", model.uri)
    if failures:
        blessing.set_json_value_custom_property("failures", failures)
    open(os.path.join(blessing.uri, "BLESSED" if not failures else "NOT_BLESSED"), "w").close()
    logger.info(
        "retrieval Recall@%d %.4f (popularity %.4f, random %.4f): %s",
        bless_k,
        result[f"recall@{bless_k}"],
        result[f"popularity_recall@{bless_k}"],
        result[f"random_recall@{bless_k}"],
        "blessed" if not failures else "not blessed: " + "; ".join(failures),
    )
