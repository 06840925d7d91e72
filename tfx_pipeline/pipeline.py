"""The CameNN TFX pipeline: from a dataset folder to a blessed, pushed SavedModel.

`create_pipeline` lists the components in data-flow order; the runners (local_runner.py,
kubeflow_v2_runner.py) decide where it runs. Every knob comes from configs.PipelineConfig.
"""
import functools
import hashlib
import json
import os
from pathlib import Path

from tfx import v1 as tfx

from camenn.tfx_pipeline import configs, evaluation
from camenn.tfx_pipeline.components.alignment_eval import AlignmentEvalExamples
from camenn.tfx_pipeline.components.anomalies_gate import AnomaliesGate
from camenn.tfx_pipeline.components.contract_schema import ContractSchemaGen
from camenn.tfx_pipeline.components.evaluation_tensorboard import EvaluationTensorBoard
from camenn.tfx_pipeline.components.listing_audit import ListingAudit
from camenn.tfx_pipeline.components.listing_table import ListingTable
from camenn.tfx_pipeline.components.preprocess import PreprocessDataset, dataset_fingerprint
from camenn.tfx_pipeline.components.serving_bundle import ServingBundle

_CODE_ROOTS = ("model", "preprocessing", "serving", "tfx_pipeline")


@functools.lru_cache(maxsize=None)
def code_version() -> str:
    """A hash of CameNN's Python sources as this process first found them: part of the cache key of the
    steps that run CameNN code, so that a run with changed code does not reuse their old outputs."""
    repo = Path(__file__).resolve().parents[1]
    digest = hashlib.sha256()
    for root in _CODE_ROOTS:
        for path in sorted((repo / root).rglob("*.py")):
            if path.is_relative_to(repo / "tfx_pipeline" / "experiments"):
                continue  # the experiments run the pipeline; they are not part of it
            digest.update(str(path.relative_to(repo)).encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def create_pipeline(config: configs.PipelineConfig, metadata_connection_config=None,
                    trainer_run_fn: str = "camenn.tfx_pipeline.trainer.run_fn") -> tfx.dsl.Pipeline:
    """Builds the pipeline.

    Args:
        config: every knob (see configs.py).
        metadata_connection_config: the ML Metadata store (the local runner's SQLite file); None on
            Kubeflow, which brings its own.
        trainer_run_fn: the Trainer's `run_fn`, as a module path.
    """
    version = code_version()
    trainer_config = dict(
        model_preset=config.model_preset, batch_size=config.batch_size, epochs=config.epochs,
        early_stopping_patience=config.early_stopping_patience,
        steps_per_epoch=config.steps_per_epoch, learning_rate=config.learning_rate,
        hard_negatives=config.hard_negatives, mixed_precision=config.mixed_precision,
        checkpoint_every_steps=config.checkpoint_every_steps, validate_each_epoch=config.validate_each_epoch,
        seed=config.seed, model_options=config.model_options, num_oov_buckets=config.num_oov_buckets,
        num_patches=config.grid[0] * config.grid[1], num_text_tokens=config.num_text_tokens,
        encoding=config.listing_encoding(),
        checkpoint_root=config.checkpoint_dir, code_version=version,
        run_fn=trainer_run_fn)  # part of the checkpoint key: another trainer never resumes this one's state

    # Beam job: tokens, cached text and patch encodings per listing, events joined to listings, split by time.
    preprocess = PreprocessDataset(
        dataset_dir=config.dataset_dir, dataset_fingerprint=dataset_fingerprint(config.dataset_dir),
        code_version=version, image_encoder=config.image_encoder, image_preset=config.image_preset,
        grid="x".join(str(n) for n in config.grid), max_text_length=config.max_text_length,
        text_encoder=config.text_encoder, num_text_tokens=config.num_text_tokens,
        beam_args=json.dumps(config.beam_pipeline_args()), embedding_cache_dir=config.embedding_cache_dir)
    # Per-split feature statistics (TFDV) for validation and for a look in TensorBoard / Facets.
    statistics_gen = tfx.components.StatisticsGen(examples=preprocess.outputs["examples"])
    # The schema the data must follow, from the data contract rather than inferred from the data itself.
    schema_gen = ContractSchemaGen(report=preprocess.outputs["report"])
    # Statistics against the schema: changed types, missing features, out-of-range values.
    example_validator = tfx.components.ExampleValidator(
        statistics=statistics_gen.outputs["statistics"], schema=schema_gen.outputs["schema"])
    # Any anomaly fails the run here, before anything trains.
    anomalies_gate = AnomaliesGate(anomalies=example_validator.outputs["anomalies"],
                                   report=preprocess.outputs["report"])
    # Vocabularies with OOV buckets for ids, normalised numbers; the same graph goes into the SavedModel.
    transform = tfx.components.Transform(
        examples=preprocess.outputs["examples"], schema=schema_gen.outputs["schema"],
        preprocessing_fn="camenn.tfx_pipeline.transform.preprocessing_fn",
        custom_config=dict(num_oov_buckets=config.num_oov_buckets,
                           vocabulary_min_frequency=config.vocabulary_min_frequency, code_version=version))
    transform.add_upstream_node(anomalies_gate)
    # Every listing's ITA/TIA from a model that never trained on it (out of fold), for `camenn audit`.
    listing_audit = ListingAudit(
        items=preprocess.outputs["items"], transform_graph=transform.outputs["transform_graph"],
        model_preset=config.model_preset, num_text_tokens=config.num_text_tokens,
        num_patches=config.grid[0] * config.grid[1], num_oov_buckets=config.num_oov_buckets, code_version=version,
        num_folds=config.audit_folds, epochs=config.audit_epochs, batch_size=config.batch_size,
        learning_rate=config.learning_rate, seed=config.seed,
        listing_quality_file=config.resolved_listing_quality_file() or "")
    # Keras 3 CameNN on the transformed examples; exports the Transform graph plus model.
    trainer = tfx.components.Trainer(
        run_fn=trainer_run_fn, examples=transform.outputs["transformed_examples"],
        transform_graph=transform.outputs["transform_graph"], schema=schema_gen.outputs["schema"],
        train_args=tfx.proto.TrainArgs(splits=["train"]), eval_args=tfx.proto.EvalArgs(splits=["eval"]),
        custom_config=trainer_config)
    # Every listing's states through the trained model, once per version, in the SavedModel's listing table.
    listing_table = ListingTable(model=trainer.outputs["model"], items=preprocess.outputs["items"])
    # Eval events plus ITA/TIA negatives and per-task weights, so TFMA can score all three heads.
    alignment_eval = AlignmentEvalExamples(
        examples=preprocess.outputs["examples"], items=preprocess.outputs["items"],
        listing_quality_file=config.resolved_listing_quality_file() or "")
    # The last blessed model, the baseline a new model must not fall behind.
    baseline = tfx.dsl.Resolver(
        strategy_class=tfx.dsl.experimental.LatestBlessedModelStrategy,
        model=tfx.dsl.Channel(type=tfx.types.standard_artifacts.Model),
        model_blessing=tfx.dsl.Channel(type=tfx.types.standard_artifacts.ModelBlessing),
    ).with_id("latest_blessed_model_resolver")
    # TFMA: CVR AUC, GAUC, LogLoss, calibration; ITA/TIA AUC; slices; blessing against thresholds and baseline.
    evaluator = tfx.components.Evaluator(
        examples=alignment_eval.outputs["eval_examples"], model=listing_table.outputs["table_model"],
        baseline_model=baseline.outputs["model"] if config.bless_against_last else None,
        eval_config=evaluation.eval_config(config))
    # The TFMA metrics, overall and per slice, as TensorBoard scalars beside the Trainer's.
    evaluation_tensorboard = EvaluationTensorBoard(evaluation=evaluator.outputs["evaluation"],
                                                   model_run=trainer.outputs["model_run"])
    # Copies a blessed model to <serving base>/camenn/<version>/; does nothing for an unblessed one.
    pusher = tfx.components.Pusher(
        model=listing_table.outputs["table_model"], model_blessing=evaluator.outputs["blessing"],
        push_destination=tfx.proto.PushDestination(filesystem=tfx.proto.PushDestination.Filesystem(
            base_directory=os.path.join(config.serving_model_dir, configs.MODEL_NAME))))
    # TensorFlow Serving bundle and warmup requests for the pushed version.
    serving_bundle = ServingBundle(
        pushed_model=pusher.outputs["pushed_model"], examples=preprocess.outputs["examples"],
        serving_base=config.serving_model_dir, model_name=configs.MODEL_NAME)

    components = [preprocess, statistics_gen, schema_gen, example_validator, anomalies_gate, transform, listing_audit,
                  trainer, listing_table, alignment_eval, baseline, evaluator, evaluation_tensorboard, pusher,
                  serving_bundle]
    return tfx.dsl.Pipeline(
        pipeline_name=config.pipeline_name,
        pipeline_root=config.pipeline_root,
        components=components,
        enable_cache=config.enable_cache,
        metadata_connection_config=metadata_connection_config,
        beam_pipeline_args=config.beam_pipeline_args(),
    )
