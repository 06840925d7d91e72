"""The CameNN TFX pipeline: from a dataset folder to a blessed, pushed SavedModel.

`create_pipeline` lists the components in data-flow order; the runners (local_runner.py,
kubeflow_v2_runner.py) decide where it runs. Every knob comes from configs.PipelineConfig.
"""

import dataclasses
import json
import os

from tfx import v1 as tfx

from camenn.tfx_pipeline import configs, evaluation
from camenn.tfx_pipeline.code_version import code_version
from camenn.tfx_pipeline.components.alignment_eval import AlignmentEvalExamples
from camenn.tfx_pipeline.components.anomalies_gate import AnomaliesGate
from camenn.tfx_pipeline.components.contract_schema import ContractSchemaGen
from camenn.tfx_pipeline.components.evaluation_tensorboard import EvaluationTensorBoard
from camenn.tfx_pipeline.components.listing_audit import ListingAudit
from camenn.tfx_pipeline.components.listing_table import ListingTable
from camenn.tfx_pipeline.components.preprocess import PreprocessDataset, dataset_fingerprint
from camenn.tfx_pipeline.components.retrieval import (
    LatestBlessedRetrievalModelStrategy,
    RetrievalEvaluator,
    RetrievalIndex,
)
from camenn.tfx_pipeline.components.serving_bundle import ServingBundle
from camenn.tfx_pipeline.out_of_fold import AUDIT_TASKS

_COMPONENTS = "camenn.tfx_pipeline.components"


def _versions(trainer_run_fn: str):
    """Each step's code version: the modules it runs (code_version.py)."""
    trainer_module = trainer_run_fn.rsplit(".", 1)[0]
    if not trainer_module.startswith("camenn."):  # a run_fn outside the package (tests): ours is what it wraps
        trainer_module = "camenn.tfx_pipeline.trainer"
    steps = {
        "preprocess": f"{_COMPONENTS}.preprocess",
        "schema": f"{_COMPONENTS}.contract_schema",
        "gate": f"{_COMPONENTS}.anomalies_gate",
        "transform": "camenn.tfx_pipeline.transform",
        "audit": f"{_COMPONENTS}.listing_audit",
        "trainer": trainer_module,
        "table": f"{_COMPONENTS}.listing_table",
        "alignment_eval": f"{_COMPONENTS}.alignment_eval",
        "tensorboard": f"{_COMPONENTS}.evaluation_tensorboard",
        "bundle": f"{_COMPONENTS}.serving_bundle",
        "retrieval_trainer": "camenn.tfx_pipeline.retrieval_trainer",
        "retrieval": f"{_COMPONENTS}.retrieval",
    }
    return {step: code_version(module) for step, module in steps.items()}


def create_pipeline(
    config: configs.PipelineConfig,
    metadata_connection_config=None,
    trainer_run_fn: str = "camenn.tfx_pipeline.trainer.run_fn",
    retrieval_run_fn: str = "camenn.tfx_pipeline.retrieval_trainer.run_fn",
) -> tfx.dsl.Pipeline:
    """Builds the pipeline.

    Args:
        config: every knob (see configs.py).
        metadata_connection_config: the ML Metadata store (the local runner's SQLite file); None on
            Kubeflow, which brings its own.
        trainer_run_fn: the Trainer's `run_fn`, as a module path.
        retrieval_run_fn: the retrieval Trainer's `run_fn`, as a module path.
    """
    versions = _versions(trainer_run_fn)
    # What the Trainer reads, typed (configs.TrainerSettings); the run_fn is part of the checkpoint key too, so
    # that another trainer never resumes this one's state.
    trainer_config = {
        "settings": configs.TrainerSettings.of(config).to_json(),
        "code_version": versions["trainer"],
        "run_fn": trainer_run_fn,
    }
    retrieval_config = dict(
        preset=config.retrieval_preset,
        epochs=config.retrieval_epochs,
        batch_size=config.retrieval_batch_size,
        learning_rate=config.retrieval_learning_rate,
        top_k=config.retrieval_top_k,
        seed=config.seed,
        num_oov_buckets=config.num_oov_buckets,
        num_patches=config.grid[0] * config.grid[1],
        num_text_tokens=config.num_text_tokens,
        code_version=versions["retrieval_trainer"],
    )

    # Beam job: tokens, cached text and patch encodings per listing, events joined to listings, split by time.
    preprocess = PreprocessDataset(
        dataset_dir=config.dataset_dir,
        dataset_fingerprint=dataset_fingerprint(config.dataset_dir),
        code_version=versions["preprocess"],
        image_encoder=config.image_encoder,
        image_preset=config.image_preset,
        grid="x".join(str(n) for n in config.grid),
        max_text_length=config.max_text_length,
        text_encoder=config.text_encoder,
        num_text_tokens=config.num_text_tokens,
        beam_args=json.dumps(config.beam_pipeline_args()),
        embedding_cache_dir=config.embedding_cache_dir,
    )
    # Per-split feature statistics (TFDV) for validation and for a look in TensorBoard / Facets.
    statistics_gen = tfx.components.StatisticsGen(examples=preprocess.outputs["examples"])
    # The schema the data must follow, from the data contract rather than inferred from the data itself.
    schema_gen = ContractSchemaGen(report=preprocess.outputs["report"], code_version=versions["schema"])
    # Statistics against the schema: changed types, missing features, out-of-range values.
    example_validator = tfx.components.ExampleValidator(
        statistics=statistics_gen.outputs["statistics"], schema=schema_gen.outputs["schema"]
    )
    # Any anomaly fails the run here, before anything trains.
    anomalies_gate = AnomaliesGate(
        anomalies=example_validator.outputs["anomalies"],
        report=preprocess.outputs["report"],
        code_version=versions["gate"],
    )
    # Vocabularies with OOV buckets for ids, normalised numbers; the same graph goes into the SavedModel.
    transform = tfx.components.Transform(
        examples=preprocess.outputs["examples"],
        schema=schema_gen.outputs["schema"],
        preprocessing_fn="camenn.tfx_pipeline.transform.preprocessing_fn",
        custom_config=dict(
            num_oov_buckets=config.num_oov_buckets,
            vocabulary_min_frequency=config.vocabulary_min_frequency,
            code_version=versions["transform"],
        ),
    )
    transform.add_upstream_node(anomalies_gate)
    # Every listing's ITA/TIA from a model that never trained on it (out of fold), for `camenn audit`.
    audit_settings = dataclasses.replace(
        configs.TrainerSettings.of(config),
        model_preset=config.audit_model_preset,
        model_options=json.dumps({"task_names": list(AUDIT_TASKS)}),
    )
    listing_audit = ListingAudit(
        items=preprocess.outputs["items"],
        transform_graph=transform.outputs["transform_graph"],
        settings=audit_settings.to_json(),
        code_version=versions["audit"],
        num_folds=config.audit_folds,
        epochs=config.audit_epochs,
        listing_quality_file=config.resolved_listing_quality_file() or "",
    )
    # Keras 3 CameNN on the transformed examples; exports the Transform graph plus model.
    trainer = tfx.components.Trainer(
        run_fn=trainer_run_fn,
        examples=transform.outputs["transformed_examples"],
        transform_graph=transform.outputs["transform_graph"],
        schema=schema_gen.outputs["schema"],
        train_args=tfx.proto.TrainArgs(splits=["train"]),
        eval_args=tfx.proto.EvalArgs(splits=["eval"]),
        custom_config=trainer_config,
    )
    # The retrieval model (TFRS, Keras 2) on the same transformed clicks: shopper and hour -> top-K listings.
    retrieval_trainer = tfx.components.Trainer(
        run_fn=retrieval_run_fn,
        examples=transform.outputs["transformed_examples"],
        transform_graph=transform.outputs["transform_graph"],
        schema=schema_gen.outputs["schema"],
        train_args=tfx.proto.TrainArgs(splits=["train"]),
        eval_args=tfx.proto.EvalArgs(splits=["eval"]),
        custom_config=retrieval_config,
    ).with_id("RetrievalTrainer")
    # Every listing's candidate vector (clicked or not) and out-of-fold alignment in the model's top-K index.
    retrieval_index = RetrievalIndex(
        model=retrieval_trainer.outputs["model"],
        items=preprocess.outputs["items"],
        audit=listing_audit.outputs["audit"],
        code_version=versions["retrieval"],
    )
    # The last blessed retrieval model, the baseline the new one must not fall behind. Local runs only:
    # Kubeflow V2 compiles TFX's own two resolver strategies and no other, so there the bounds alone judge.
    with_retrieval_baseline = config.bless_against_last and metadata_connection_config is not None
    retrieval_baseline = tfx.dsl.Resolver(
        strategy_class=LatestBlessedRetrievalModelStrategy,
        model=tfx.dsl.Channel(type=tfx.types.standard_artifacts.Model),
        model_blessing=tfx.dsl.Channel(type=tfx.types.standard_artifacts.ModelBlessing),
    ).with_id("latest_blessed_retrieval_model_resolver")
    # Recall@K on the eval split against popularity, random and the last blessed model; blesses or not.
    retrieval_evaluator = RetrievalEvaluator(
        model=retrieval_index.outputs["indexed_model"],
        examples=preprocess.outputs["examples"],
        baseline_model=retrieval_baseline.outputs["model"] if with_retrieval_baseline else None,
        recall_ks=",".join(str(k) for k in config.retrieval_recall_ks),
        bless_k=config.retrieval_bless_k,
        min_lift_over_popularity=config.min_retrieval_lift,
        max_regression=config.max_regression,
        code_version=versions["retrieval"],
    )
    # Copies a blessed retrieval model to <serving base>/camenn_retrieval/<version>/.
    retrieval_pusher = tfx.components.Pusher(
        model=retrieval_index.outputs["indexed_model"],
        model_blessing=retrieval_evaluator.outputs["blessing"],
        push_destination=tfx.proto.PushDestination(
            filesystem=tfx.proto.PushDestination.Filesystem(
                base_directory=os.path.join(config.serving_model_dir, configs.RETRIEVAL_MODEL_NAME)
            )
        ),
    ).with_id("RetrievalPusher")
    # Every listing's states through the trained model, once per version, in the SavedModel's listing table.
    listing_table = ListingTable(
        model=trainer.outputs["model"], items=preprocess.outputs["items"], code_version=versions["table"]
    )
    # Eval events plus ITA/TIA negatives and per-task weights, so TFMA can score all three heads.
    alignment_eval = AlignmentEvalExamples(
        examples=preprocess.outputs["examples"],
        items=preprocess.outputs["items"],
        listing_quality_file=config.resolved_listing_quality_file() or "",
        code_version=versions["alignment_eval"],
    )
    # The last blessed model, the baseline a new model must not fall behind.
    baseline = tfx.dsl.Resolver(
        strategy_class=tfx.dsl.experimental.LatestBlessedModelStrategy,
        model=tfx.dsl.Channel(type=tfx.types.standard_artifacts.Model),
        model_blessing=tfx.dsl.Channel(type=tfx.types.standard_artifacts.ModelBlessing),
    ).with_id("latest_blessed_model_resolver")
    # TFMA: CVR AUC, GAUC, LogLoss, calibration; ITA/TIA AUC; slices; blessing against thresholds and baseline.
    evaluator = tfx.components.Evaluator(
        examples=alignment_eval.outputs["eval_examples"],
        model=listing_table.outputs["table_model"],
        baseline_model=baseline.outputs["model"] if config.bless_against_last else None,
        eval_config=evaluation.eval_config(config),
    )
    # The TFMA metrics, overall and per slice, as TensorBoard scalars beside the Trainer's.
    evaluation_tensorboard = EvaluationTensorBoard(
        evaluation=evaluator.outputs["evaluation"],
        model_run=trainer.outputs["model_run"],
        code_version=versions["tensorboard"],
    )
    # Copies a blessed model to <serving base>/camenn/<version>/; does nothing for an unblessed one.
    pusher = tfx.components.Pusher(
        model=listing_table.outputs["table_model"],
        model_blessing=evaluator.outputs["blessing"],
        push_destination=tfx.proto.PushDestination(
            filesystem=tfx.proto.PushDestination.Filesystem(
                base_directory=os.path.join(config.serving_model_dir, configs.MODEL_NAME)
            )
        ),
    )
    # TensorFlow Serving bundle listing both models, and warmup requests for the pushed versions.
    retrieval = config.enable_retrieval
    serving_bundle = ServingBundle(
        pushed_model=pusher.outputs["pushed_model"],
        examples=preprocess.outputs["examples"],
        serving_base=config.serving_model_dir,
        model_name=configs.MODEL_NAME,
        code_version=versions["bundle"],
        **(
            dict(
                retrieval_pushed_model=retrieval_pusher.outputs["pushed_model"],
                retrieval_model_name=configs.RETRIEVAL_MODEL_NAME,
            )
            if retrieval
            else {}
        ),
    )

    retrieval_components = (
        [
            retrieval_trainer,
            retrieval_index,
            *([retrieval_baseline] if with_retrieval_baseline else []),
            retrieval_evaluator,
            retrieval_pusher,
        ]
        if retrieval
        else []
    )
    components = [
        preprocess,
        statistics_gen,
        schema_gen,
        example_validator,
        anomalies_gate,
        transform,
        listing_audit,
        *retrieval_components,
        trainer,
        listing_table,
        alignment_eval,
        baseline,
        evaluator,
        evaluation_tensorboard,
        pusher,
        serving_bundle,
    ]
    return tfx.dsl.Pipeline(
        pipeline_name=config.pipeline_name,
        pipeline_root=config.pipeline_root,
        components=components,
        enable_cache=config.enable_cache,
        metadata_connection_config=metadata_connection_config,
        beam_pipeline_args=config.beam_pipeline_args(),
    )
