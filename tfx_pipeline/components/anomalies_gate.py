"""`AnomaliesGate`: stops the run when ExampleValidator found anomalies, before anything trains.

ExampleValidator records anomalies but lets the pipeline go on; Transform runs only after this gate, so a
dataset that breaks the schema (a changed column type, a missing feature, an out-of-range value) fails the
run here, naming each anomaly, and nothing downstream of it runs or gets pushed.
"""

import os

import tensorflow as tf
from tensorflow_metadata.proto.v0 import anomalies_pb2
from tfx import v1 as tfx
from tfx.types import artifact_utils

from camenn.tfx_pipeline.components.artifacts import PreprocessingReport


class DataAnomaliesError(RuntimeError):
    """The examples do not match the schema; the message lists every anomaly by feature."""


def describe_anomalies(anomalies_uri: str, split_names) -> list:
    problems = []
    for split in split_names:
        path = os.path.join(anomalies_uri, f"Split-{split}", "SchemaDiff.pb")
        if not tf.io.gfile.exists(path):
            continue
        anomalies = anomalies_pb2.Anomalies()
        anomalies.ParseFromString(tf.io.gfile.GFile(path, "rb").read())
        if anomalies.data_missing:
            # TFDV reports an empty split this way, without an anomaly_info entry, and ExampleValidator
            # still blesses it: every row quarantined must stop the run too.
            problems.append(f"{split}: no examples at all (every row was quarantined, or the split is empty)")
        for feature, info in sorted(anomalies.anomaly_info.items()):
            reasons = "; ".join(r.description or anomalies_pb2.AnomalyInfo.Type.Name(r.type) for r in info.reason)
            problems.append(f"{split}: feature '{feature}': {info.short_description}: {reasons}")
        if anomalies.HasField("dataset_anomaly_info"):
            info = anomalies.dataset_anomaly_info
            reasons = "; ".join(r.description for r in info.reason)
            problems.append(f"{split}: dataset: {info.short_description}: {reasons}")
    return problems


def describe_quarantine(summary: dict) -> list:
    """What preprocessing quarantined, by reason: a column that changed type shows up here first."""
    lines = []
    for kind in ("items", "events"):
        counts = summary.get(kind) or {}
        reasons = ", ".join(f"{r} {int(n)}" for r, n in (counts.get("quarantined_by_reason") or {}).items())
        lines.append(
            f"preprocessing quarantined {int(counts.get('quarantined', 0))} of {int(counts.get('in', 0))} "
            f"{kind}" + (f" ({reasons})" if reasons else "")
        )
    return lines


@tfx.dsl.components.component
def AnomaliesGate(
    anomalies: tfx.dsl.components.InputArtifact[tfx.types.standard_artifacts.ExampleAnomalies],
    report: tfx.dsl.components.InputArtifact[PreprocessingReport],
    code_version: tfx.dsl.components.Parameter[str] = "",
) -> None:
    """Raises DataAnomaliesError listing every anomaly ExampleValidator found (module docstring), with
    what preprocessing quarantined, so that the cause of, say, an empty split is in the same message."""
    del code_version  # part of the cache key only (code_version.py)
    blessed = anomalies.get_json_value_custom_property("blessed") or {}
    problems = describe_anomalies(anomalies.uri, artifact_utils.decode_split_names(anomalies.split_names))
    if problems or not all(blessed.values()):
        lines = (problems or [f"splits not blessed: {blessed}"]) + describe_quarantine(
            report.get_json_value_custom_property("summary") or {}
        )
        raise DataAnomaliesError(
            "ExampleValidator found anomalies; the run stops before Transform and Trainer:\n  " + "\n  ".join(lines)
        )
