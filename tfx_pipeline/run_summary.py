"""What the latest pipeline run did, read back from ML Metadata: rows in and quarantined, metrics, blessing,
the pushed path and the TensorBoard command. `camenn pipeline run` prints it at the end; tests and the
benchmark read the same record.
"""

import dataclasses
import math
from typing import Dict, List, Optional

from ml_metadata.metadata_store import metadata_store
from ml_metadata.proto import metadata_store_pb2

from camenn.model import features as F
from camenn.tfx_pipeline.configs import PipelineConfig

_STATES = metadata_store_pb2.Execution.State


@dataclasses.dataclass
class NodeRun:
    """One component's execution in a run and its output artifacts by output name."""

    node_id: str
    execution: metadata_store_pb2.Execution
    outputs: Dict[str, List[metadata_store_pb2.Artifact]]

    @property
    def state(self) -> str:
        return _STATES.Name(self.execution.last_known_state)

    def output(self, key: str) -> Optional[metadata_store_pb2.Artifact]:
        artifacts = self.outputs.get(key) or []
        return artifacts[0] if artifacts else None


def open_store(metadata_path: str) -> metadata_store.MetadataStore:
    config = metadata_store_pb2.ConnectionConfig()
    config.sqlite.filename_uri = metadata_path
    config.sqlite.connection_mode = metadata_store_pb2.SqliteMetadataSourceConfig.READONLY
    return metadata_store.MetadataStore(config)


def run_ids(store, pipeline_name: str) -> List[str]:
    """Ids of the pipeline's runs, oldest first."""
    pipeline = store.get_context_by_type_and_name("pipeline", pipeline_name)
    if pipeline is None:
        return []
    runs = [c for c in store.get_children_contexts_by_context(pipeline.id) if c.type == "pipeline_run"] or [
        c for c in store.get_contexts_by_type("pipeline_run")
    ]
    return [c.name for c in sorted(runs, key=lambda c: c.create_time_since_epoch)]


def node_runs(store, run_id: str) -> Dict[str, NodeRun]:
    """node id -> its execution in run `run_id` (the last one, if a node ran twice)."""
    run = store.get_context_by_type_and_name("pipeline_run", run_id)
    if run is None:
        raise KeyError(f"no pipeline run {run_id!r} in the metadata store")
    result = {}
    for execution in sorted(store.get_executions_by_context(run.id), key=lambda e: e.id):
        nodes = [c.name.split(".", 1)[-1] for c in store.get_contexts_by_execution(execution.id) if c.type == "node"]
        if not nodes:
            continue
        outputs: Dict[str, List[metadata_store_pb2.Artifact]] = {}
        events = [
            e
            for e in store.get_events_by_execution_ids([execution.id])
            if e.type in (metadata_store_pb2.Event.OUTPUT, metadata_store_pb2.Event.DECLARED_OUTPUT)
        ]
        artifacts = {a.id: a for a in store.get_artifacts_by_id([e.artifact_id for e in events])}
        for event in events:
            outputs.setdefault(event.path.steps[0].key, []).append(artifacts[event.artifact_id])
        result[nodes[0]] = NodeRun(nodes[0], execution, outputs)
    return result


def _custom(artifact, name, default=None):
    if artifact is None or name not in artifact.custom_properties:
        return default
    value = artifact.custom_properties[name]
    kind = value.WhichOneof("value")
    if kind == "struct_value":
        from google.protobuf import json_format

        return json_format.MessageToDict(value.struct_value)
    return getattr(value, kind)


def overall_metrics(evaluation_uri: str) -> Dict[str, float]:
    """'task/metric' -> value on the whole eval set (TFMA's overall slice), candidate model only."""
    import tensorflow_model_analysis as tfma

    metrics = {}
    for slice_metrics in tfma.load_metrics(evaluation_uri):
        if slice_metrics.slice_key.single_slice_keys:
            continue
        for entry in slice_metrics.metric_keys_and_values:
            # With a baseline TFMA also reports the last blessed model's metrics and the differences.
            if (
                entry.key.is_diff
                or entry.key.model_name == tfma.BASELINE_KEY
                or not entry.value.HasField("double_value")
            ):
                continue
            name = f"{entry.key.output_name}/{entry.key.name}" if entry.key.output_name else entry.key.name
            metrics[name] = entry.value.double_value.value
    return metrics


def metrics_by_slice(evaluation_uri: str, feature: str) -> Dict[str, Dict[str, float]]:
    """value of `feature` -> {'task/metric': value} on that slice, candidate model only."""
    import tensorflow_model_analysis as tfma

    result: Dict[str, Dict[str, float]] = {}
    for slice_metrics in tfma.load_metrics(evaluation_uri):
        keys = slice_metrics.slice_key.single_slice_keys
        if len(keys) != 1 or keys[0].column != feature:
            continue
        value = keys[0].bytes_value.decode() if keys[0].HasField("bytes_value") else str(keys[0])
        for entry in slice_metrics.metric_keys_and_values:
            if (
                entry.key.is_diff
                or entry.key.model_name == tfma.BASELINE_KEY
                or not entry.value.HasField("double_value")
            ):
                continue
            name = f"{entry.key.output_name}/{entry.key.name}" if entry.key.output_name else entry.key.name
            result.setdefault(value, {})[name] = entry.value.double_value.value
    return result


def validation_failures(evaluation_uri: str) -> List[str]:
    import tensorflow_model_analysis as tfma

    result = tfma.load_validation_result(evaluation_uri)
    failures = []
    for per_slice in result.metric_validations_per_slice:
        for failure in per_slice.failures:
            key = failure.metric_key
            kind = "change vs last blessed" if key.is_diff else "value"
            failures.append(f"{key.output_name}/{key.name} ({kind}): {failure.metric_value.double_value.value:.4f}")
    return failures


def summarize(config: PipelineConfig, run_id: Optional[str] = None) -> dict:
    """The record of run `run_id` (default: the latest run) as a plain dict."""
    store = open_store(config.metadata_path)
    ids = run_ids(store, config.pipeline_name)
    if not ids:
        raise FileNotFoundError(f"no run of pipeline {config.pipeline_name!r} in {config.metadata_path}")
    run_id = run_id or ids[-1]
    nodes = node_runs(store, run_id)
    summary = {"run_id": run_id, "components": {n: r.state for n, r in nodes.items()}}
    if "PreprocessDataset" in nodes:
        summary["preprocessing"] = _custom(nodes["PreprocessDataset"].output("report"), "summary")
    if "Trainer" in nodes:
        model_run = nodes["Trainer"].output("model_run")
        summary["tensorboard_logdir"] = model_run.uri if model_run else None
    if "Evaluator" in nodes:
        evaluation = nodes["Evaluator"].output("evaluation")
        blessing = nodes["Evaluator"].output("blessing")
        summary["metrics"] = overall_metrics(evaluation.uri)
        summary["metrics_by_negative_kind"] = metrics_by_slice(evaluation.uri, F.NEGATIVE_KIND)
        summary["failures"] = validation_failures(evaluation.uri)
        summary["blessed"] = bool(_custom(blessing, "blessed", 0))
    if "Pusher" in nodes:
        pushed = nodes["Pusher"].output("pushed_model")
        summary["pushed"] = bool(_custom(pushed, "pushed", 0))
        summary["pushed_path"] = _custom(pushed, "pushed_destination") if summary["pushed"] else None
    if "RetrievalEvaluator" in nodes:
        import json
        import os

        evaluation = nodes["RetrievalEvaluator"].output("evaluation")
        with open(os.path.join(evaluation.uri, "retrieval_metrics.json")) as f:
            summary["retrieval"] = json.load(f)
    if "RetrievalPusher" in nodes:
        pushed = nodes["RetrievalPusher"].output("pushed_model")
        summary["retrieval_pushed"] = bool(_custom(pushed, "pushed", 0))
        summary["retrieval_pushed_path"] = (
            _custom(pushed, "pushed_destination") if summary["retrieval_pushed"] else None
        )
    return summary


_SHOWN_METRICS = (
    (f"{F.CVR}/auc", "CVR AUC"),
    (f"{F.CVR}/gauc", "CVR GAUC"),
    (f"{F.CVR}/log_loss", "CVR LogLoss"),
    (f"{F.CVR}/normalized_entropy", "CVR normalized entropy (log loss / entropy of the training rate)"),
    (f"{F.CVR}/log_loss_vs_prior", "CVR log loss / log loss of predicting the training rate"),
    (f"{F.CVR}/calibration", "CVR calibration (mean prediction / mean label)"),
    (f"{F.ITA}/auc", "ITA AUC"),
    (f"{F.TIA}/auc", "TIA AUC"),
)


def format_summary(summary: dict) -> str:
    lines = [
        f"pipeline run {summary['run_id']}: "
        + ", ".join(f"{node} {state.lower()}" for node, state in summary["components"].items())
    ]
    pre = summary.get("preprocessing")
    if pre:
        for kind in ("items", "events"):
            c = pre[kind]
            # Sorted: ML Metadata keeps a struct property's keys in no fixed order.
            reasons = ", ".join(f"{r} {int(n)}" for r, n in sorted(c["quarantined_by_reason"].items()))
            lines.append(
                f"  {kind}: {int(c['in'])} rows in, {int(c['out'])} out, {int(c['quarantined'])} quarantined"
                + (f" ({reasons})" if reasons else "")
            )
    if "metrics" in summary:
        m = summary["metrics"]
        for key, label in _SHOWN_METRICS:
            value = m.get(key)
            lines.append(
                f"  {label}: {value:.4f}" if value is not None and not math.isnan(value) else f"  {label}: n/a"
            )
        by_kind = summary.get("metrics_by_negative_kind", {})
        for task in (F.ITA, F.TIA):
            parts = [
                f"{kind} {by_kind[kind][f'{task}/auc']:.4f}"
                for kind in (F.OTHER_COARSE_NEGATIVE, F.HARD_NEGATIVE)
                if f"{task}/auc" in by_kind.get(kind, {})
            ]
            if parts:
                lines.append(f"  {task.upper()} AUC against negatives of: " + ", ".join(parts))
        lines.append(f"  blessed: {'yes' if summary['blessed'] else 'no'}")
        for failure in summary["failures"]:
            lines.append(f"    failed: {failure}")
    if "pushed" in summary:
        lines.append(f"  pushed: {summary['pushed_path'] if summary['pushed'] else 'no (not blessed)'}")
    retrieval = summary.get("retrieval")
    if retrieval:
        m = retrieval["metrics"]
        ks = sorted(int(key.split("@")[1]) for key in m if key.startswith("recall@"))
        lines.append(
            f"  retrieval over {int(m['listings'])} listings, {int(m['eval_clicks'])} eval clicks "
            f"(Recall@K: model / popularity / random):"
        )
        for k in ks:
            lines.append(
                f"    @{k}: {m[f'recall@{k}']:.4f} / {m[f'popularity_recall@{k}']:.4f} / "
                f"{m[f'random_recall@{k}']:.4f}  ({m[f'lift_over_popularity@{k}']:.2f}x popularity)"
            )
        lines.append(f"  retrieval blessed: {'yes' if retrieval['blessed'] else 'no'}")
        for failure in retrieval["failures"]:
            lines.append(f"    failed: {failure}")
    if "retrieval_pushed" in summary:
        lines.append(f"  retrieval pushed: {summary['retrieval_pushed_path'] if summary['retrieval_pushed'] else 'no'}")
    if summary.get("tensorboard_logdir"):
        lines.append(f"  TensorBoard: tensorboard --logdir {summary['tensorboard_logdir']}")
    return "\n".join(lines)
