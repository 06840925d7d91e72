"""`camenn experiments`: CameNN against its baselines and ablations, on the same data with the same budget.

Every (model, seed) is one run of the TFX pipeline (`local_runner.run`) into one outputs folder and
metadata store: the first run preprocesses and transforms the data, every later run reuses them from the
cache and runs only the Trainer, the Evaluator (TFMA, the same eval_config and examples for every model,
judged without a baseline model) and what follows them. Each model trains the same steps on the same
batches. Then the trained SavedModel's `dense` signature scores, outside TFMA:
- retrieval: image-to-text and text-to-image Recall@1/5/10 over the dataset's products (one listing
  with an accurate text and photo per fine category): every product's photo against every product's
  text (ITA ranks the texts for a photo, TIA the photos for a text);
- listing flaws: how well a low ITA (TIA) finds the listings whose text (photo) the dataset's truth file
  calls inaccurate (ROC AUC against the accurate listings).
`results.json` records every run; RESULTS.md and the plots are rendered from it (`camenn.tfx_pipeline.
experiment_report`).
"""
import json
import logging
import os
import time

import numpy as np

from camenn.model import features as F

logger = logging.getLogger(__name__)

# name -> (model family, model arguments over the family's preset). A family's preset is
# f"{family}_{size}" (e.g. camenn_small, dnn_ranker_small).
MODELS = {
    "camenn": ("camenn", {}),
    "camenn_without_mixture": ("camenn", {"num_experts": 0}),
    "camenn_cvr_only": ("camenn", {"task_names": [F.CVR]}),
    "camenn_text_only": ("camenn", {"modalities": ["text"]}),
    "camenn_image_only": ("camenn", {"modalities": ["image"]}),
    "dnn": ("dnn_ranker", {}),
    "mmoe": ("mmoe", {}),
}
RECALL_AT = (1, 5, 10)
GOOD_QUALITY = "ok"
FLAWS = {F.ITA: "inaccurate_text", F.TIA: "vague_photo"}  # the flaw each alignment head should find
RESULTS_FILE = "results.json"


def run_config(base, model, size, seed, common_options):
    """The pipeline config of one experiment run."""
    family, options = MODELS[model]
    return base.replace(model_preset=f"{family}_{size}", seed=seed,
                        model_options=json.dumps({**common_options, **options}, sort_keys=True))


def _node_seconds(node):
    execution = node.execution
    return max(0.0, (execution.last_update_time_since_epoch - execution.create_time_since_epoch) / 1000.0)


def latest_run_record(config):
    """What the latest pipeline run made: artifact uris, component states and seconds, metrics."""
    from camenn.tfx_pipeline import run_summary

    summary = run_summary.summarize(config)
    nodes = run_summary.node_runs(run_summary.open_store(config.metadata_path), summary["run_id"])
    return {
        "run_id": summary["run_id"],
        "components": summary["components"],
        "component_seconds": {name: round(_node_seconds(node), 2) for name, node in nodes.items()
                              if node.state == "COMPLETE"},
        "serving_model": os.path.join(nodes["Trainer"].output("model").uri, "Format-Serving"),
        "model_run": nodes["Trainer"].output("model_run").uri,
        "evaluation": nodes["Evaluator"].output("evaluation").uri,
        "items": nodes["PreprocessDataset"].output("items").uri,
        "blessed": summary["blessed"],
        # A one-output model's TFMA metrics carry no output name (evaluation._model_spec).
        "metrics": {f"{config.model_tasks[0]}/{name}" if len(config.model_tasks) == 1 and name != "example_count"
                    else name: value for name, value in summary["metrics"].items()},
    }


def calibration_buckets(evaluation_uri, output=F.CVR, bins=10):
    """TFMA's CVR calibration histogram (whole eval set) re-binned into `bins` equal prediction ranges:
    per bin [weight, sum of labels, sum of predictions]."""
    import tensorflow_model_analysis as tfma

    binned = np.zeros((bins, 3))
    for plots in tfma.load_plots(evaluation_uri):
        if plots.slice_key.single_slice_keys:
            continue
        for entry in plots.plot_keys_and_values:
            if entry.key.output_name not in (output, ""):  # "": a one-output model
                continue
            for bucket in entry.value.calibration_histogram_buckets.buckets:
                if bucket.num_weighted_examples.value <= 0:
                    continue
                mean = bucket.total_weighted_refined_prediction.value / bucket.num_weighted_examples.value
                index = min(max(int(mean * bins), 0), bins - 1)
                binned[index] += [bucket.num_weighted_examples.value, bucket.total_weighted_label.value,
                                  bucket.total_weighted_refined_prediction.value]
    return binned.round(6).tolist()


class ListingScorer:
    """Scores (photo, text, listing features) combinations of a dataset's listings with a SavedModel's
    `dense` signature: the other features of a row come from one listing, its text and photo from any.
    The shopper is unknown (the model's OOV shopper), at noon and the serving client's default distance,
    as `camenn audit` asks."""

    def __init__(self, serving_model_dir, items_dir):
        import tensorflow as tf

        from camenn.serving import defaults, examples
        from camenn.serving.audit import AUDIT_HOUR, AUDIT_SHOPPER

        self.signature = tf.saved_model.load(serving_model_dir).signatures["dense"]
        self.columns = examples.parse_columns(examples.read_tfrecords(examples.tfrecord_pattern(items_dir)))
        self.item_ids = [v.decode() for v in self.columns[F.ITEM_ID]]
        n = len(self.item_ids)
        self.columns[F.SHOPPER_ID] = np.full(n, AUDIT_SHOPPER.encode(), dtype=object)
        self.columns[F.HOUR] = np.full(n, AUDIT_HOUR, dtype=np.int64)
        self.columns[F.DISTANCE_KM] = np.full(n, defaults.DISTANCE_KM, dtype=np.float32)
        self.tasks = tuple(self.signature.structured_outputs)

    def score(self, listing_rows, text_rows, image_rows, batch_size=256):
        """{task: float [N]} for rows whose features come from `listing_rows`, text from `text_rows` and
        photo from `image_rows` (indices into the listings)."""
        import tensorflow as tf

        inputs = self.signature.structured_input_signature[1]
        listing_rows, text_rows, image_rows = (np.asarray(r) for r in (listing_rows, text_rows, image_rows))
        scores = {task: [] for task in self.tasks}
        for start in range(0, len(listing_rows), batch_size):
            part = slice(start, start + batch_size)
            rows = {F.TEXT_TOKEN_IDS: text_rows[part], F.PATCH_EMBEDDINGS: image_rows[part]}
            columns = {name: self.columns[name][rows.get(name, listing_rows[part])] for name in inputs}
            outputs = self.signature(**{name: tf.constant(value, dtype=inputs[name].dtype)
                                        for name, value in columns.items()})
            for task in self.tasks:
                scores[task].append(outputs[task].numpy())
        return {task: np.concatenate(values) for task, values in scores.items()}


def recall_at_k(scores, k):
    """Share of queries (rows of a [query, candidate] matrix whose true candidate is on the diagonal) whose
    true candidate ranks in the top k; a tie counts against the true candidate."""
    true = np.diag(scores)[:, None]
    rank = (scores >= true).sum(axis=1) - 1
    return float((rank < k).mean())


def product_listings(scorer, quality):
    """One listing per fine category, the first by item id whose text and photo the truth calls accurate
    (or, with no truth, the first): the products that retrieval ranks."""
    chosen = {}
    for row in sorted(range(len(scorer.item_ids)), key=lambda r: scorer.item_ids[r]):
        category = scorer.columns[F.CATEGORY][row]
        if category not in chosen and quality.get(scorer.item_ids[row], GOOD_QUALITY) == GOOD_QUALITY:
            chosen[category] = row
    return [chosen[c] for c in sorted(chosen)]


def retrieval_metrics(scorer, products):
    """Image-to-text (ITA) and text-to-image (TIA) Recall@K over `products` (listing rows)."""
    n = len(products)
    products = np.asarray(products)
    outer, inner = products[np.repeat(np.arange(n), n)], products[np.tile(np.arange(n), n)]
    result = {"products": n}
    # Rows in batches of n that share one text, so the text encoder runs once per batch.
    if F.ITA in scorer.tasks:
        # For every text (outer), every product's photo with that product's features: transposed to
        # [photo query, text candidate].
        ita = scorer.score(inner, outer, inner, batch_size=n)[F.ITA].reshape(n, n).T
        result.update({f"image_to_text_recall@{k}": recall_at_k(ita, k) for k in RECALL_AT})
    if F.TIA in scorer.tasks:
        # For every product's text and features (the query), every product's photo.
        tia = scorer.score(outer, outer, inner, batch_size=n)[F.TIA].reshape(n, n)
        result.update({f"text_to_image_recall@{k}": recall_at_k(tia, k) for k in RECALL_AT})
    return result


def flaw_metrics(scorer, quality):
    """ROC AUC of 1 - ITA against inaccurate texts, of 1 - TIA against vague photos (each against the
    accurate listings), and of 1 - min(ITA, TIA) against any flaw; listings the truth lacks are left out."""
    from sklearn.metrics import roc_auc_score

    rows = [r for r, item in enumerate(scorer.item_ids) if item in quality]
    if not rows or not set(FLAWS) <= set(scorer.tasks):
        return {}
    scores = scorer.score(rows, rows, rows)
    labels = np.array([quality[scorer.item_ids[r]] for r in rows])
    good = labels == GOOD_QUALITY
    result = {"listings": len(rows)}
    for task, flaw in FLAWS.items():
        keep = good | (labels == flaw)
        if (labels == flaw).any():
            result[f"{task}_finds_{flaw}_auc"] = float(roc_auc_score(labels[keep] == flaw, 1 - scores[task][keep]))
    if (~good).any():
        result["alignment_finds_any_flaw_auc"] = float(roc_auc_score(~good, 1 - np.minimum(scores[F.ITA],
                                                                                          scores[F.TIA])))
    return result


def expert_load(model_run_dir):
    """The last epoch's routing statistics the Trainer recorded (`{task}_expert_{e}_load`, ...), if any."""
    import tensorflow as tf

    path = os.path.join(model_run_dir, "history.json")
    if not tf.io.gfile.exists(path):
        return {}
    with tf.io.gfile.GFile(path) as f:
        history = json.load(f)
    record = {"train_seconds": float(sum(history.get("epoch_seconds", []))),
              "train_steps": int(sum(history.get("epoch_steps", [])))}
    record["routing"] = {k: v[-1] for k, v in history["history"].items()
                         if ("_expert_" in k and k.endswith("_load")) or k == "expert_overflow"}
    return record


def read_quality(config):
    from camenn.serving.audit import read_truth

    path = config.resolved_listing_quality_file()
    return read_truth(path) if path else {}


def run_one(config, model, seed):
    """Runs the pipeline for one (model, seed) and measures the trained model; returns its record."""
    from camenn.tfx_pipeline import local_runner

    started_at, start = time.time(), time.perf_counter()
    local_runner.run(config)
    pipeline_seconds = time.perf_counter() - start
    record = latest_run_record(config)
    scoring_start = time.perf_counter()
    quality = read_quality(config)
    scorer = ListingScorer(record["serving_model"], record["items"])
    record.update(
        model=model, seed=seed, model_preset=config.model_preset, model_options=json.loads(config.model_options),
        retrieval=retrieval_metrics(scorer, product_listings(scorer, quality)),
        flaws=flaw_metrics(scorer, quality), calibration=calibration_buckets(record["evaluation"]),
        **expert_load(record["model_run"]))
    record["pipeline_seconds"] = round(pipeline_seconds, 2)
    record["scoring_seconds"] = round(time.perf_counter() - scoring_start, 2)
    record["wall_seconds"] = round(time.perf_counter() - start, 2)
    record.update(started_at=round(started_at, 1), finished_at=round(time.time(), 1))
    return record


def run_experiments(base_config, models, seeds, size, common_options, results_dir, shard=(0, 1), render=True):
    """Runs every (seed, model) of this `shard` (index, count) of the plan not yet in
    `results_dir/results.json` under the same settings, appending each record as it finishes (a killed
    command resumes), then renders RESULTS.md and the plots."""
    from camenn.tfx_pipeline import experiment_report

    unknown = sorted(set(models) - set(MODELS))
    if unknown:
        raise ValueError(f"unknown models {unknown}; choose from {sorted(MODELS)}")
    settings = {"models": list(models), "seeds": list(seeds), "size": size, "common_options": common_options,
                "pipeline": json.loads(base_config.to_json()), "shard": list(shard)}
    os.makedirs(results_dir, exist_ok=True)
    path = os.path.join(results_dir, RESULTS_FILE)
    results = {"settings": settings, "runs": []}
    if os.path.exists(path):
        with open(path) as f:
            previous = json.load(f)
        if previous.get("settings") == settings:
            results = previous
            logger.info("resuming: %d runs already in %s", len(results["runs"]), path)
    done = {(r["model"], r["seed"]) for r in results["runs"]}
    plan = [(model, seed) for seed in seeds for model in models][shard[0]::shard[1]]
    plan = [(model, seed) for model, seed in plan if (model, seed) not in done]
    for i, (model, seed) in enumerate(plan, 1):
        config = run_config(base_config, model, size, seed, common_options)
        logger.info("experiment %d/%d: %s (%s, %s), seed %d", i, len(plan), model, config.model_preset,
                    config.model_options, seed)
        record = run_one(config, model, seed)
        logger.info("  %s seed %d: %.0f s, CVR AUC %.4f", model, seed, record["wall_seconds"],
                    record["metrics"].get(f"{F.CVR}/auc", float("nan")))
        results["runs"].append(record)
        results["total_seconds"] = round(sum(r["wall_seconds"] for r in results["runs"]), 2)
        with open(path + ".tmp", "w") as f:
            json.dump(results, f, indent=1, sort_keys=True)
        os.replace(path + ".tmp", path)
    if render:
        experiment_report.render(results, results_dir)
    return results


def run_in_workers(argv, workers, outputs_dir, results_dir):
    """Runs the plan in `workers` child processes (`--shard i/workers`), each with its own pipeline outputs
    and metadata store under `outputs_dir/worker-i` (each preprocesses the same data once, with the same
    code; its results.json beside them), then merges their results into `results_dir` and renders them.

    Most of a run's fixed cost (graph tracing, TFMA's Beam job, ML Metadata) keeps one core busy, so two
    workers on two cores finish sooner than one."""
    import subprocess
    import sys

    from camenn.tfx_pipeline import experiment_report

    start, started_at = time.perf_counter(), time.time()
    children = []
    for i in range(workers):
        worker_dir = os.path.join(outputs_dir, f"worker-{i}")
        args = [sys.executable, "-m", "camenn", "experiments", *argv, "--workers", "1", "--shard", f"{i}/{workers}",
                "--outputs", worker_dir, "--results", os.path.join(worker_dir, "results")]
        log = open(os.path.join(outputs_dir, f"worker-{i}.log"), "ab")
        logger.info("worker %d: %s (log: %s)", i, " ".join(args[3:]), log.name)
        children.append((subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT), log))
    failed = []
    for i, (child, log) in enumerate(children):
        if child.wait():
            failed.append(f"worker {i} exited with {child.returncode} (see {log.name})")
        log.close()
    if failed:
        raise RuntimeError("; ".join(failed))
    results = merge_workers(outputs_dir, results_dir, workers, elapsed=time.perf_counter() - start,
                            started_at=started_at)
    experiment_report.render(results, results_dir)
    return results


def merge_workers(outputs_dir, results_dir, workers, elapsed=None, started_at=None):
    """Merges the workers' results.json (those that exist, with what they finished so far) into
    `results_dir/results.json`. `elapsed`: the wall time of a command that began at `started_at` (epoch
    seconds); it is not the whole command's when some runs are older (a resumed command), and then stays
    unknown (None). Without it: the span from the first run's start to the last run's end when every run
    recorded both."""
    shards = []
    for i in range(workers):
        path = os.path.join(outputs_dir, f"worker-{i}", "results", RESULTS_FILE)
        if os.path.exists(path):
            with open(path) as f:
                shards.append(json.load(f))
    if not shards:
        raise FileNotFoundError(f"no worker results under {outputs_dir}")
    settings = dict(shards[0]["settings"], shard=[0, 1], workers=workers)
    settings["pipeline"] = dict(settings["pipeline"], outputs_dir=outputs_dir)
    order = {(m, s): n for n, (m, s) in enumerate((m, s) for s in settings["seeds"] for m in settings["models"])}
    runs = sorted((r for shard in shards for r in shard["runs"]), key=lambda r: order[(r["model"], r["seed"])])
    if started_at is not None and any(r.get("started_at", 0) < started_at for r in runs):
        elapsed = None  # resumed: this invocation's time is not the command's
    elif elapsed is None and runs and all("started_at" in r for r in runs):
        elapsed = max(r["finished_at"] for r in runs) - min(r["started_at"] for r in runs)
    planned = len(settings["seeds"]) * len(settings["models"])
    results = {"settings": settings, "runs": runs, "total_seconds": None if elapsed is None else round(elapsed, 2),
               "planned_runs": planned,
               "run_seconds": round(sum(r["wall_seconds"] for r in runs), 2)}
    os.makedirs(results_dir, exist_ok=True)
    with open(os.path.join(results_dir, RESULTS_FILE), "w") as f:
        json.dump(results, f, indent=1, sort_keys=True)
    return results


# --- The `camenn experiments` verb.
DEFAULT_STEPS = 32
# The measured budget on 2 CPU cores (docs/RESULTS.md): `mini` presets (frozen MiniLM, width 64), texts cut
# to 32 tokens, the Evaluator without slices, 2 workers.
EXPERIMENT_SETTINGS = dict(epochs=1, validate_each_epoch=False, bless_against_last=False, max_text_length=32,
                           slice_features=(), learning_rate=5e-4)


def register(subparsers) -> None:
    import argparse

    parser = subparsers.add_parser(
        "experiments", help="train CameNN, its ablations and baselines over seeds; write docs/RESULTS.md",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=(
            "Runs the TFX pipeline once per (model, seed) on one dataset (preprocessing and Transform once,\n"
            "from the cache after that), every model with the same steps and batch, then scores each trained\n"
            f"model's retrieval Recall@K and how well it finds the truth file's flawed listings. Models:\n"
            f"{', '.join(MODELS)}.\n\n"
            "Writes:\n"
            "  --outputs (default outputs/experiments)  every run's pipeline artifacts and ML Metadata; TensorBoard:\n"
            "                                          tensorboard --logdir <outputs>/pipelines/camenn\n"
            "  --results (default docs/)               results.json (every run; a rerun with the same settings\n"
            "                                          resumes), RESULTS.md, calibration.png, expert_load.png"))
    parser.add_argument("--dataset", default=None, help="dataset folder (default: the embedded sample)")
    parser.add_argument("--outputs", default=None, help="pipeline outputs (default outputs/experiments)")
    parser.add_argument("--results", default=None, help="where results.json, RESULTS.md and plots go (default docs/)")
    parser.add_argument("--models", default=",".join(MODELS), help="comma-separated, default all: %(default)s")
    parser.add_argument("--seeds", type=int, default=3, help="seeds 0..N-1 (default %(default)s)")
    parser.add_argument("--size", default="mini", choices=("tiny", "mini", "small", "base"),
                        help="model presets <family>_<size> (default %(default)s)")
    parser.add_argument("--steps", type=int, default=DEFAULT_STEPS,
                        help="training steps of every model (default %(default)s; docs/RESULTS.md: the budget)")
    parser.add_argument("--model-options", default="{}",
                        help="JSON model arguments for every model over its preset's, e.g. '{\"dropout\": 0.2}'")
    parser.add_argument("--preset", default="small", help="pipeline preset for everything else (default %(default)s)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a knob of tfx_pipeline/configs.py (repeatable)")
    parser.add_argument("--workers", type=int, default=2, help="parallel worker processes (default %(default)s)")
    parser.add_argument("--shard", default="0/1", help=argparse.SUPPRESS)  # a worker's part: INDEX/COUNT
    parser.add_argument("--render-only", action="store_true", help="only render RESULTS.md from results.json")
    parser.set_defaults(func=_run)


def _run(args) -> int:
    from camenn import paths
    from camenn.tfx_pipeline import configs, experiment_report

    results_dir = os.path.abspath(args.results or os.path.join(paths.REPO_ROOT, "docs"))
    outputs_dir = os.path.abspath(args.outputs or os.path.join(paths.DEFAULT_OUTPUTS, "experiments"))
    if args.render_only:
        if args.workers > 1:  # what the workers finished so far
            results = merge_workers(outputs_dir, results_dir, args.workers)
        else:
            with open(os.path.join(results_dir, RESULTS_FILE)) as f:
                results = json.load(f)
        print(experiment_report.render(results, results_dir))
        return 0
    if args.workers > 1:
        os.makedirs(outputs_dir, exist_ok=True)
        argv = ["--models", args.models, "--seeds", str(args.seeds), "--size", args.size, "--steps", str(args.steps),
                "--model-options", args.model_options, "--preset", args.preset,
                *(["--dataset", os.path.abspath(args.dataset)] if args.dataset else []),
                *(f"--set={assignment}" for assignment in args.set)]
        results = run_in_workers(argv, args.workers, outputs_dir, results_dir)
    else:
        overrides = dict(EXPERIMENT_SETTINGS, outputs_dir=outputs_dir, steps_per_epoch=args.steps)
        if args.dataset:
            overrides["dataset_dir"] = os.path.abspath(args.dataset)
        config = configs.from_preset(args.preset, **overrides)
        for assignment in args.set:
            config = configs.parse_override(config, assignment)
        shard = tuple(int(n) for n in args.shard.split("/"))
        results = run_experiments(config, [m for m in args.models.split(",") if m], list(range(args.seeds)),
                                  args.size, json.loads(args.model_options), results_dir, shard=shard,
                                  render=shard == (0, 1))
    print(f"{len(results['runs'])} runs in {results['total_seconds'] / 60:.1f} min; wrote {results_dir}")
    return 0
