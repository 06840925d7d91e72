"""The Evaluator's TFMA configuration: metrics per task, slices, and the thresholds that bless a model.

TFMA runs the pushed-to-be SavedModel's `serving_default` signature (serialized raw tf.Examples) on the
rows of AlignmentEvalExamples: per-task labels and example weights select the rows each head is judged
on (see components/alignment_eval.py). A model is blessed only when, on the overall slice, every bound
below holds and no AUC is worse than the last blessed model's by more than `max_regression`.
"""
import json

import tensorflow_model_analysis as tfma

from camenn.model import features as F
from camenn.tfx_pipeline.configs import PipelineConfig


def _overall(threshold: tfma.MetricThreshold):
    # A threshold on a MetricConfig applies to every slice; blessing looks at the whole eval set only
    # (a small slice's noise must not block a push), the slices are there to read.
    return [tfma.PerSliceMetricThreshold(slicing_specs=[tfma.SlicingSpec()], threshold=threshold)]


def _auc_config(lower_bound: float, max_regression: float) -> tfma.MetricConfig:
    return tfma.MetricConfig(class_name="AUC", per_slice_thresholds=_overall(tfma.MetricThreshold(
        value_threshold=tfma.GenericValueThreshold(lower_bound={"value": lower_bound}),
        # "No worse than the last blessed model": the change (candidate - baseline) must stay above
        # -max_regression; the tiny negative margin lets an identical model pass.
        change_threshold=tfma.GenericChangeThreshold(
            direction=tfma.MetricDirection.HIGHER_IS_BETTER, absolute={"value": -max_regression - 1e-10}))))


def eval_config(config: PipelineConfig) -> tfma.EvalConfig:
    cvr_metrics = [
        _auc_config(config.min_cvr_auc, config.max_regression),
        tfma.MetricConfig(class_name="GAUC", module="camenn.tfx_pipeline.metrics",
                          config=json.dumps({"group_key": F.SHOPPER_ID})),
        tfma.MetricConfig(
            class_name="BinaryCrossentropy", config=json.dumps({"name": "log_loss"}),
            per_slice_thresholds=_overall(tfma.MetricThreshold(
                value_threshold=tfma.GenericValueThreshold(upper_bound={"value": config.max_cvr_log_loss})))),
        tfma.MetricConfig(class_name="MeanLabel"),
        tfma.MetricConfig(class_name="MeanPrediction"),
        tfma.MetricConfig(class_name="Calibration"),  # mean prediction / mean label
        tfma.MetricConfig(class_name="CalibrationPlot"),
        tfma.MetricConfig(class_name="WeightedExampleCount"),
    ]
    return tfma.EvalConfig(
        model_specs=[tfma.ModelSpec(
            signature_name="serving_default",
            prediction_keys={task: task for task in F.TASKS},
            label_keys=dict(F.EVAL_LABELS),
            example_weight_keys=dict(F.EVAL_WEIGHTS),
        )],
        metrics_specs=[
            tfma.MetricsSpec(metrics=[tfma.MetricConfig(class_name="ExampleCount")]),
            tfma.MetricsSpec(output_names=[F.CVR], metrics=cvr_metrics),
            tfma.MetricsSpec(output_names=[F.ITA], metrics=[
                _auc_config(config.min_ita_auc, config.max_regression),
                tfma.MetricConfig(class_name="WeightedExampleCount")]),
            tfma.MetricsSpec(output_names=[F.TIA], metrics=[
                _auc_config(config.min_tia_auc, config.max_regression),
                tfma.MetricConfig(class_name="WeightedExampleCount")]),
        ],
        slicing_specs=[tfma.SlicingSpec()] + [tfma.SlicingSpec(feature_keys=[name])
                                               for name in config.slice_features],
    )
