"""Every knob of the CameNN pipeline, with its default, in one place (the TFX template's `configs.py`).

A `PipelineConfig` is built from a named profile (`tiny` for tests and CI, `small` for a CPU, `base` for
GPUs) plus overrides; `camenn pipeline run` and `compile` take `--profile` and `--set KEY=VALUE`.
"""

import dataclasses
import json
import os
from typing import Optional, Tuple

from camenn import paths
from camenn.model import features as F
from camenn.preprocessing import defaults as preprocessing_defaults
from camenn.serving import defaults as serving_defaults

PIPELINE_NAME = "camenn"
MODEL_NAME = serving_defaults.MODEL_NAME  # the serving name: <serving base>/camenn/<version>/
RETRIEVAL_MODEL_NAME = serving_defaults.RETRIEVAL_MODEL_NAME  # <serving base>/camenn_retrieval/<version>/


@dataclasses.dataclass(frozen=True)
class PipelineConfig:
    # --- Where things are. Everything a run writes goes under `outputs_dir`.
    dataset_dir: str = str(paths.SAMPLE_DATASET)
    outputs_dir: str = str(paths.DEFAULT_OUTPUTS)
    pipeline_name: str = PIPELINE_NAME
    # Optional per-listing quality file (the sample's simulator truth): used ONLY to slice the Evaluator's
    # metrics by listing quality and to measure the audit; never a model input. Empty:
    # `<dataset>/truth.csv` if present.
    listing_quality_file: str = ""

    # --- Preprocessing (Beam: tokens, cached text and patch encodings per listing, events joined to items).
    text_encoder: str = preprocessing_defaults.TEXT_ENCODER
    num_text_tokens: int = preprocessing_defaults.NUM_TEXT_TOKENS  # pooled text tokens per listing
    image_encoder: str = preprocessing_defaults.IMAGE_ENCODER
    image_preset: str = preprocessing_defaults.IMAGE_PRESET
    grid: Tuple[int, int] = preprocessing_defaults.GRID
    max_text_length: int = preprocessing_defaults.MAX_TEXT_LENGTH
    # Content-hash cache of text and patch encodings; empty: camenn's cache dir (see camenn.paths.cache_dir).
    embedding_cache_dir: str = ""

    # --- Transform.
    num_oov_buckets: int = 8  # per id feature: unseen shoppers, items, merchants share these buckets
    vocabulary_min_frequency: int = 1
    numeric_buckets: int = 16  # quantile buckets per numeric feature

    # --- Model and training.
    model_preset: str = "camenn_small"
    batch_size: int = 64
    epochs: int = 3  # at most: training stops early once the eval loss stops improving
    early_stopping_patience: int = 2  # epochs without a better eval loss before stopping; 0: never stop early
    steps_per_epoch: int = 0  # 0: one pass over the training split per epoch
    learning_rate: float = 0.0  # 0: the model's default (CameNNMultiTask.compile)
    hard_negatives: bool = True  # ITA/TIA negatives from the same coarse category where the batch has one
    mixed_precision: str = "auto"  # auto: mixed_float16 on GPU, float32 on CPU; or "float32" / "mixed_float16"
    checkpoint_every_steps: int = 50  # BackupAndRestore frequency inside an epoch
    validate_each_epoch: bool = True  # eval-split loss and AUCs per epoch in TensorBoard (the Evaluator judges)
    seed: int = 1234
    # JSON object of model arguments over the preset's, e.g. {"num_experts": 0} or {"task_names": ["cvr"]}
    # (the ablations of `camenn experiments`); the preset's name picks the family (CameNN or a baseline).
    model_options: str = ""

    # --- Candidate retrieval (TensorFlow Recommenders, beside the ranker): a second Trainer on the same
    # Transform output, its top-K index over the catalog, Recall@K evaluation, its own push.
    enable_retrieval: bool = True  # false: the ranker alone (e.g. for `camenn experiments`, which compares rankers)
    retrieval_preset: str = "retrieval_small"  # camenn.model.retrieval presets
    retrieval_epochs: int = 10  # passes over the training clicks (~15 s for the sample on 2 CPU cores)
    retrieval_batch_size: int = 128  # clicks per batch: each click's negatives are the batch's other listings
    retrieval_learning_rate: float = 0.0  # 0: the model's default (Adam, 0.01)
    retrieval_top_k: int = 100  # listings the served model returns per request: the ranker's candidates
    retrieval_recall_ks: Tuple[int, ...] = (10, 50, 100)  # Recall@K the evaluator reports
    # Blessed when Recall@retrieval_top_k is at least this times the popularity baseline's, above random's,
    # and not below the last blessed retrieval model's by more than `max_regression`.
    min_retrieval_lift: float = 1.0

    # --- The listing audit: each listing's ITA/TIA from a model trained on the other folds' listings.
    audit_model_preset: str = "camenn_mini"  # the fold models' architecture (alignment heads only)
    audit_folds: int = 5
    audit_epochs: int = 30  # passes over a fold model's listings (a few steps each)

    # --- Evaluation and blessing (TFMA). A model is pushed only if every bound holds AND it is no worse
    # than the last blessed model by more than `max_regression` on each AUC. The defaults refuse a model
    # that ranks worse than chance, whose CVR log loss does not beat predicting the training conversion
    # rate for every eval row (metrics.LogLossVsPrior, whatever the rate), or whose normalized entropy
    # is not below 1; the baseline rule refuses one worse than what is served. Raise the bounds for data
    # with more signal.
    min_cvr_auc: float = 0.5
    min_ita_auc: float = 0.5
    min_tia_auc: float = 0.5
    max_cvr_log_loss_vs_prior: float = 1.0  # blessed only strictly below this
    max_cvr_normalized_entropy: float = 1.0  # blessed only strictly below this
    max_regression: float = 0.0
    # False: the Evaluator judges the model on the bounds alone, without the last blessed model (then
    # TFMA runs one model, not two; `camenn experiments` compares families, not versions).
    bless_against_last: bool = True
    slice_features: Tuple[str, ...] = (F.CATEGORY, F.MERCHANT_SIZE, F.LISTING_QUALITY, F.NEGATIVE_KIND)

    # --- Beam (every Beam-based component). `extra_beam_args` selects Dataflow, Flink or Spark (README).
    # The DirectRunner in this process by default: on the sample with 2 CPUs, multi_processing with 2
    # workers was 2 to 7 times slower per component (each worker process imports TensorFlow and TFX,
    # more than the work itself; bench/pipeline.py). Use multi_processing for data that fills the CPUs.
    beam_direct_running_mode: str = "in_memory"  # or multi_processing, multi_threading
    beam_num_workers: int = 0  # 0: one per CPU (in_memory always uses one)
    extra_beam_args: Tuple[str, ...] = ()

    # --- Orchestration.
    enable_cache: bool = True
    # Kubeflow: the container image (CameNN and its pins installed, tfx_pipeline/Dockerfile) every
    # component runs in.
    kubeflow_image: str = "gcr.io/YOUR_PROJECT/camenn:latest"

    # Derived paths.
    @property
    def pipeline_root(self) -> str:
        return os.path.join(self.outputs_dir, "pipelines", self.pipeline_name)

    @property
    def metadata_path(self) -> str:
        return os.path.join(self.outputs_dir, "metadata", self.pipeline_name, "metadata.db")

    @property
    def serving_model_dir(self) -> str:
        """Serving base: pushed versions land in `<this>/camenn/<version>/`."""
        return os.path.join(self.outputs_dir, "serving_model")

    @property
    def retrieval_bless_k(self) -> int:
        """The K the retrieval blessing judges: the candidates the ranker gets."""
        return self.retrieval_top_k

    @property
    def checkpoint_dir(self) -> str:
        """Trainer checkpoints, keyed by the Trainer's inputs, so a killed run resumes on the next."""
        return os.path.join(self.outputs_dir, "checkpoints", self.pipeline_name)

    @property
    def schema_dir(self) -> str:
        return os.path.join(self.outputs_dir, "schema", self.pipeline_name)

    def resolved_listing_quality_file(self) -> Optional[str]:
        if self.listing_quality_file:
            return self.listing_quality_file
        default = os.path.join(self.dataset_dir, "truth.csv")
        return default if os.path.exists(default) else None

    def listing_encoding(self) -> dict:
        """How preprocessing encodes a listing: recorded in every exported version, so that
        `camenn listings add` encodes new listings the same way."""
        return {
            "text_encoder": self.text_encoder,
            "num_text_tokens": self.num_text_tokens,
            "image_encoder": self.image_encoder,
            "image_preset": self.image_preset,
            "grid": "x".join(str(n) for n in self.grid),
            "max_text_length": self.max_text_length,
        }

    def beam_pipeline_args(self):
        if self.extra_beam_args and any(a.startswith("--runner") for a in self.extra_beam_args):
            return list(self.extra_beam_args)
        in_memory = self.beam_direct_running_mode == "in_memory"
        workers = 1 if in_memory else self.beam_num_workers or os.cpu_count() or 1
        return [
            f"--direct_running_mode={self.beam_direct_running_mode}",
            f"--direct_num_workers={workers}",
            *self.extra_beam_args,
        ]

    @property
    def model_tasks(self) -> Tuple[str, ...]:
        """The tasks the trained model has outputs for (all three unless `model_options` names fewer)."""
        return tuple(model_arguments(self.model_options).get("task_names", F.TASKS))

    def replace(self, **overrides) -> "PipelineConfig":
        return dataclasses.replace(self, **overrides)

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "PipelineConfig":
        values = json.loads(text)
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})


def model_arguments(model_options: str) -> dict:
    """The model arguments a `model_options` JSON object string names (empty: none)."""
    arguments = json.loads(model_options or "{}")
    if not isinstance(arguments, dict):
        raise ValueError(f"model_options must be a JSON object of model arguments, got {model_options!r}")
    return arguments


@dataclasses.dataclass(frozen=True)
class TrainerSettings:
    """What the Trainer reads, passed to it as JSON in its `custom_config` (`TrainerSettings.of(config)`).

    Only these are part of the Trainer's cache and checkpoint keys, so a changed blessing bound or Beam
    option does not train again. Names and meanings as in `PipelineConfig`, plus what derives from it.
    """

    model_preset: str
    model_options: str
    batch_size: int
    epochs: int
    early_stopping_patience: int
    steps_per_epoch: int
    learning_rate: float
    hard_negatives: bool
    mixed_precision: str
    checkpoint_every_steps: int
    validate_each_epoch: bool
    seed: int
    num_oov_buckets: int
    num_text_tokens: int
    num_patches: int
    encoding: dict  # PipelineConfig.listing_encoding(), recorded in every exported version
    checkpoint_root: str  # PipelineConfig.checkpoint_dir

    @classmethod
    def of(cls, config: PipelineConfig) -> "TrainerSettings":
        derived = {
            "num_patches": config.grid[0] * config.grid[1],
            "encoding": config.listing_encoding(),
            "checkpoint_root": config.checkpoint_dir,
        }
        return cls(
            **{
                f.name: derived[f.name] if f.name in derived else getattr(config, f.name)
                for f in dataclasses.fields(cls)
            }
        )

    @property
    def model_arguments(self) -> dict:
        return model_arguments(self.model_options)

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "TrainerSettings":
        return cls(**json.loads(text))


PROFILES = {
    # CI and tests: the tiny model and image encoder, a couple of short epochs.
    "tiny": dict(
        model_preset="camenn_tiny",
        audit_model_preset="camenn_tiny",
        text_encoder="bert_tiny",
        image_encoder="inception_v4",
        image_preset="inception_v4_tiny",
        audit_epochs=5,
        max_text_length=32,
        batch_size=32,
        epochs=2,
        checkpoint_every_steps=5,
        retrieval_preset="retrieval_tiny",
        retrieval_epochs=5,
        retrieval_batch_size=64,
        retrieval_top_k=20,
        retrieval_recall_ks=(5, 10, 20),
    ),
    # A CPU: the demo on the embedded sample. At most 8 epochs of the sample's 73 steps of 64 clicks (a
    # few tens of seconds each on 2 cores, bench/train.py); early stopping on the eval CVR loss ends it
    # sooner.
    "small": dict(model_preset="camenn_small", epochs=8),
    # GPUs: the base model, bigger batches. (The paper's InceptionV4 encoder: convert ImageNet weights into
    # a preset folder, then --set image_encoder=inception_v4 --set image_preset=FOLDER.)
    "base": dict(model_preset="camenn_base", batch_size=256, epochs=10, checkpoint_every_steps=200),
}


def from_profile(name: str = "small", **overrides) -> PipelineConfig:
    """The profile's knobs over `PipelineConfig`'s defaults, then `overrides`."""
    if name not in PROFILES:
        raise ValueError(f"unknown pipeline profile {name!r}; choose one of {sorted(PROFILES)}")
    return PipelineConfig(**{**PROFILES[name], **overrides})


def parse_override(config: PipelineConfig, assignment: str) -> PipelineConfig:
    """Applies one `KEY=VALUE` (as `--set` gives it), converting VALUE to the field's type."""
    key, sep, value = assignment.partition("=")
    fields = {f.name: f for f in dataclasses.fields(PipelineConfig)}
    if not sep or key not in fields:
        raise ValueError(f"--set takes KEY=VALUE with KEY one of: {', '.join(sorted(fields))}; got {assignment!r}")
    current = getattr(config, key)
    if isinstance(current, bool):
        if value.lower() not in ("true", "false", "1", "0"):
            raise ValueError(f"{key} takes true or false, got {value!r}")
        parsed = value.lower() in ("true", "1")
    elif isinstance(current, tuple):
        items = [v for v in value.split(",") if v]
        parsed = tuple(int(v) for v in items) if key in ("grid", "retrieval_recall_ks") else tuple(items)
    else:
        parsed = type(current)(value)
    return config.replace(**{key: parsed})
