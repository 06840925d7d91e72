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


def _auc_config(lower_bound: float, max_regression) -> tfma.MetricConfig:
    """AUC bounded below; with a `max_regression` (None: no baseline model), also against the baseline."""
    threshold = tfma.MetricThreshold(value_threshold=tfma.GenericValueThreshold(lower_bound={"value": lower_bound}))
    if max_regression is not None:
        # "No worse than the last blessed model": the change (candidate - baseline) must stay above
        # -max_regression; the tiny negative margin lets an identical model pass.
        threshold.change_threshold.CopyFrom(
            tfma.GenericChangeThreshold(
                direction=tfma.MetricDirection.HIGHER_IS_BETTER, absolute={"value": -max_regression - 1e-10}
            )
        )
    return tfma.MetricConfig(class_name="AUC", per_slice_thresholds=_overall(threshold))


def _model_spec(tasks) -> tfma.ModelSpec:
    """Which output, label and weight each task reads. TFMA unwraps a one-output model's dict, so a
    CVR-only model is specified by single keys and its metrics carry no output name."""
    if len(tasks) == 1:
        return tfma.ModelSpec(
            signature_name="serving_default",
            prediction_key=tasks[0],
            label_key=F.EVAL_LABELS[tasks[0]],
            example_weight_key=F.EVAL_WEIGHTS[tasks[0]],
        )
    return tfma.ModelSpec(
        signature_name="serving_default",
        prediction_keys={task: task for task in tasks},
        label_keys={task: F.EVAL_LABELS[task] for task in tasks},
        example_weight_keys={task: F.EVAL_WEIGHTS[task] for task in tasks},
    )


def eval_config(config: PipelineConfig) -> tfma.EvalConfig:
    """Metrics for the tasks the model has (`config.model_tasks`: an ablation may have CVR only)."""
    max_regression = config.max_regression if config.bless_against_last else None
    tasks = config.model_tasks
    cvr_metrics = [
        _auc_config(config.min_cvr_auc, max_regression),
        tfma.MetricConfig(
            class_name="GAUC", module="camenn.tfx_pipeline.metrics", config=json.dumps({"group_key": F.SHOPPER_ID})
        ),
        tfma.MetricConfig(class_name="LogLoss", module="camenn.tfx_pipeline.metrics"),
        # Blessed only when the log loss beats predicting the training rate on these rows, and the
        # normalized entropy is below its bound (both strictly below 1 by default).
        tfma.MetricConfig(
            class_name="LogLossVsPrior",
            module="camenn.tfx_pipeline.metrics",
            per_slice_thresholds=_overall(
                tfma.MetricThreshold(
                    value_threshold=tfma.GenericValueThreshold(
                        upper_bound={"value": config.max_cvr_log_loss_vs_prior - 1e-9}
                    )
                )
            ),
        ),
        tfma.MetricConfig(
            class_name="NormalizedEntropy",
            module="camenn.tfx_pipeline.metrics",
            per_slice_thresholds=_overall(
                tfma.MetricThreshold(
                    value_threshold=tfma.GenericValueThreshold(
                        upper_bound={"value": config.max_cvr_normalized_entropy - 1e-9}
                    )
                )
            ),
        ),
        tfma.MetricConfig(class_name="MeanLabel"),
        tfma.MetricConfig(class_name="MeanPrediction"),
        tfma.MetricConfig(class_name="Calibration"),  # mean prediction / mean label
        tfma.MetricConfig(class_name="CalibrationPlot"),
        tfma.MetricConfig(class_name="WeightedExampleCount"),
    ]
    return tfma.EvalConfig(
        model_specs=[_model_spec(tasks)],
        metrics_specs=[
            tfma.MetricsSpec(metrics=[tfma.MetricConfig(class_name="ExampleCount")]),
            tfma.MetricsSpec(output_names=[F.CVR] if len(tasks) > 1 else [], metrics=cvr_metrics),
        ]
        + [
            tfma.MetricsSpec(
                output_names=[task],
                metrics=[
                    _auc_config(lower_bound, max_regression),
                    tfma.MetricConfig(class_name="WeightedExampleCount"),
                ],
            )
            for task, lower_bound in ((F.ITA, config.min_ita_auc), (F.TIA, config.min_tia_auc))
            if task in tasks
        ],
        slicing_specs=[tfma.SlicingSpec()] + [tfma.SlicingSpec(feature_keys=[name]) for name in config.slice_features],
    )
