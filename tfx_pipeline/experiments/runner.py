"""`camenn experiments`: CameNN against its ablations, two pooled neural baselines and two practitioner's
baselines, on the embedded sample and on a 60,000-click simulated set, read against the oracle.

How a result is made (the same for every model):
1. Prepare, once per dataset (`prepare`): one run of the whole TFX pipeline (PreprocessDataset ...
   Transform, ListingAudit, a CameNN Trainer, AlignmentEvalExamples, TFMA Evaluator). The experiments
   then read back its Transform output (training clicks), AlignmentEvalExamples' rows (what TFMA
   judges), the catalog and the out-of-fold listing audit; the simulator's click truth gives the
   oracle. As a check of the experiments' own metric code, the pipeline's model is scored on the same
   rows through its `serving_default` signature and its metrics are recorded beside TFMA's.
2. Train and score each (dataset, model, seed) in this process (`run_one`): a neural model with the
   Trainer's own code (`training.train_neural`: same model builder, optimizer, prior start, batches and
   negatives), for the same number of clicks as every other neural model on that dataset, its eval CVR
   AUC recorded along the way (the learning curve); a practitioner's model (`practitioner`) on the same
   training clicks. Every model is scored on the same eval rows with the same metric code (`scoring`).
3. Judge the paper's claims (`claims`) from the saved eval predictions, and render RESULTS.md.

The plan runs in `--workers` processes, each with its share of (dataset, model, seed); each finished run
is appended to its worker's results file at once, so a killed command, started again with the same
settings, resumes with what is missing. `--render-only` re-renders from results.json.
"""

import json
import logging
import os
import time
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np

from camenn.model import features as F

logger = logging.getLogger(__name__)

# name -> (family, model arguments over the family's preset f"{family}_{size}").
NEURAL_MODELS = {
    "camenn": ("camenn", {}),
    "camenn_without_mixture": ("camenn", {"num_experts": 0}),
    "camenn_cvr_only": ("camenn", {"task_names": [F.CVR]}),
    "camenn_text_only": ("camenn", {"modalities": ["text"]}),
    "camenn_image_only": ("camenn", {"modalities": ["image"]}),
    "dnn": ("dnn_ranker", {}),
    "mmoe": ("mmoe", {}),
}
PRACTITIONER_MODELS = ("logistic_regression", "gradient_boosted_trees")
MODELS = (*NEURAL_MODELS, *PRACTITIONER_MODELS)
SAMPLE, LARGE = "sample", "sample_60k"
LARGE_EVENTS = 60000
RESULTS_FILE = "results.json"
PREPARED_FILE = "prepared.json"


# --- Datasets.


def dataset_dirs(outputs_dir: str, settings: dict) -> Dict[str, str]:
    """Dataset name -> folder. The sample is the embedded one; the 60k set is built on the fly under
    `outputs_dir/datasets/` (same seed, so the same 480 listings, shoppers and merchants, with 60,000
    clicks and without the deliberately bad rows), never committed; any other name is a folder of
    `settings["dataset_paths"]`."""
    from camenn import paths

    source, dirs = settings["source"], {}
    for name in settings["datasets"]:
        if name == SAMPLE:
            dirs[name] = str(paths.SAMPLE_DATASET)
        elif name == LARGE:
            folder = Path(outputs_dir) / "datasets" / LARGE
            if not (folder / "events.csv").exists():
                from camenn.simulator.sample import build_sample

                logger.info("building the 60k set in %s from %s", folder, source)
                build_sample(Path(source), folder, seed=0, num_events=LARGE_EVENTS, include_bad_rows=False)
            dirs[name] = str(folder)
        else:
            dirs[name] = settings["dataset_paths"][name]
    return dirs


# --- Step 1: one pipeline run per dataset.


def pipeline_config(base, dataset_dir: str, outputs_dir: str):
    return base.replace(dataset_dir=dataset_dir, outputs_dir=outputs_dir)


def pipeline_artifacts(config) -> dict:
    """Artifact uris and component times of the latest pipeline run of `config`."""
    from camenn.tfx_pipeline import run_summary

    summary = run_summary.summarize(config)
    nodes = run_summary.node_runs(run_summary.open_store(config.metadata_path), summary["run_id"])

    def uri(node, key):
        return nodes[node].output(key).uri

    def seconds(node):
        e = node.execution
        return round(max(0.0, (e.last_update_time_since_epoch - e.create_time_since_epoch) / 1000.0), 2)

    return {
        "transform_graph": uri("Transform", "transform_graph"),
        "transformed_examples": uri("Transform", "transformed_examples"),
        "items": uri("PreprocessDataset", "items"),
        "eval_examples": uri("AlignmentEvalExamples", "eval_examples"),
        "audit": uri("ListingAudit", "audit"),
        "table_model": uri("ListingTable", "table_model"),
        "components": summary["components"],
        "component_seconds": {n: seconds(node) for n, node in nodes.items() if node.state == "COMPLETE"},
        "tfma_metrics": summary["metrics"],
    }


def score_serialized(model_dir: str, eval_examples_uri: str, batch_size: int = 512) -> Dict[str, np.ndarray]:
    """The outputs of a pipeline SavedModel's `serving_default` on AlignmentEvalExamples' serialized rows,
    in file order (the order `data.read_eval_rows` reads them), as TFMA feeds them."""
    import tensorflow as tf

    from camenn.tfx_pipeline.experiments.data import _records, _split_files

    signature = tf.saved_model.load(model_dir).signatures["serving_default"]
    outputs: Dict[str, list] = {}
    for batch in _records(_split_files(eval_examples_uri, "eval")).batch(batch_size):
        for task, value in signature(examples=batch).items():
            outputs.setdefault(task, []).append(value.numpy().reshape(-1))
    return {task: np.concatenate(v).astype(np.float64) for task, v in outputs.items()}


def prepare(name: str, dataset_dir: str, base, outputs_dir: str) -> dict:
    """Runs the pipeline on one dataset (cached after the first time) and records what the experiments
    need from it (`describe`) in `outputs_dir/<name>/prepared.json`."""
    from camenn.tfx_pipeline import local_runner

    folder = os.path.join(outputs_dir, name)
    config = pipeline_config(base, dataset_dir, folder)
    start, prepared_at = time.perf_counter(), time.time()
    local_runner.run(config)
    record = describe(name, dataset_dir, config, time.perf_counter() - start)
    record["prepared_at"] = round(prepared_at, 1)
    record["seconds"] = round(time.perf_counter() - start, 2)
    with open(os.path.join(folder, PREPARED_FILE), "w") as f:
        json.dump(record, f, indent=1, sort_keys=True)
    return record


def describe(name: str, dataset_dir: str, config, pipeline_seconds: float) -> dict:
    """What `prepare` records about a finished pipeline run (and the eval clicks' labels and oracle
    probabilities beside it, `eval_clicks.npz`)."""
    import tensorflow_transform as tft
    from tfx.utils import path_utils

    from camenn.serving import audit as audit_report
    from camenn.tfx_pipeline.experiments import claims, data, oracle, scoring

    folder = config.outputs_dir
    artifacts = pipeline_artifacts(config)
    tft_output = tft.TFTransformOutput(artifacts["transform_graph"])
    rows = data.read_eval_rows(artifacts["eval_examples"], tft_output)
    truth_file = oracle.truth_path(dataset_dir)
    if truth_file.exists():
        rows = data.attach_oracle(rows, oracle.read_event_probabilities(truth_file))
    train = data.read_train_clicks(artifacts["transformed_examples"], tft_output)
    cvr_rows = rows.task_rows(F.CVR)
    record = {
        "name": name,
        "dataset_dir": dataset_dir,
        "pipeline": json.loads(config.to_json()),
        "artifacts": {k: v for k, v in artifacts.items() if k not in ("tfma_metrics",)},
        "pipeline_seconds": round(pipeline_seconds, 2),
        "train_clicks": train.num_clicks,
        "train_listings": len(train.listings[F.ITEM_ID]),
        "train_rate": train.conversion_rate,
        "eval_clicks": int(len(cvr_rows)),
        "eval_rows": len(rows),
        "eval_rate": float(rows.labels[F.CVR][cvr_rows].mean()),
    }
    record["prior"] = scoring.cvr_metrics(rows, rows.train_rate)  # every click at the training rate
    if rows.oracle is not None:
        record["oracle"] = scoring.oracle_cvr_metrics(rows)
    # The experiments' metric code on the pipeline's own model and rows, against TFMA's numbers.
    model_dir = path_utils.serving_model_path(artifacts["table_model"])
    pipeline_predictions = score_serialized(model_dir, artifacts["eval_examples"])
    ours = {
        f"{F.CVR}/{k}": v
        for k, v in scoring.cvr_metrics(rows, pipeline_predictions[F.CVR]).items()
        if k in ("auc", "gauc", "log_loss", "normalized_entropy", "log_loss_vs_prior", "calibration")
    }
    ours.update(scoring.alignment_metrics(rows, pipeline_predictions))
    tfma = {k: artifacts["tfma_metrics"].get(k) for k in ours if k in artifacts["tfma_metrics"]}
    record["metric_check"] = {
        "experiments": ours,
        "tfma": tfma,
        "max_abs_difference": max(abs(ours[k] - v) for k, v in tfma.items()) if tfma else None,
    }
    # The out-of-fold listing audit (ListingAudit) against the truth file, per flaw kind and merchant size.
    truth_csv = os.path.join(dataset_dir, "truth.csv")
    if os.path.exists(truth_csv):
        truth = audit_report.read_truth(truth_csv)
        audits = audit_report.read_report(os.path.join(artifacts["audit"], audit_report.REPORT_FILE))
        listings = data.read_listings(artifacts["items"], tft_output)
        size_of = dict(zip(listings.item_ids, (s.decode() for s in listings.raw[F.MERCHANT_SIZE])))
        ids = [a.item_id for a in audits]
        ita, tia = np.array([a.ita for a in audits]), np.array([a.tia for a in audits])
        record["audit"] = scoring.flaw_metrics(ids, ita, tia, truth, [size_of.get(i, "") for i in ids])
        record["audit"]["scores"] = {
            "item_id": ids,
            "ita": ita.round(5).tolist(),
            "tia": tia.round(5).tolist(),
            "quality": [truth.get(i, "") for i in ids],
        }
        record["audit_claims"] = audit_claims(ids, ita, tia, truth, claims)
    os.makedirs(folder, exist_ok=True)
    np.savez_compressed(
        os.path.join(folder, "eval_clicks.npz"),
        labels=rows.labels[F.CVR][cvr_rows],
        oracle=rows.oracle[cvr_rows] if rows.oracle is not None else np.array([]),
    )
    return record


def audit_claims(item_ids, ita, tia, truth, claims) -> dict:
    """Claim (d) on out-of-fold scores: low ITA finds inaccurate texts, low TIA vague photos."""
    result = {}
    for key, flaw, score in (
        ("ita_finds_inaccurate_text", "inaccurate_text", 1 - ita),
        ("tia_finds_vague_photo", "vague_photo", 1 - tia),
    ):
        keep = [i for i, item in enumerate(item_ids) if truth.get(item) in ("ok", flaw)]
        labels = np.array([truth[item_ids[i]] == flaw for i in keep])
        result[key] = claims.flaw_finding(labels, np.asarray(score)[keep])
    return result


class Prepared:
    """A prepared dataset's arrays, loaded once per worker."""

    def __init__(self, record: dict):
        import tensorflow_transform as tft

        from camenn.tfx_pipeline.experiments import data, oracle

        self.record = record
        artifacts = record["artifacts"]
        self.tft_output = tft.TFTransformOutput(artifacts["transform_graph"])
        self.train = data.read_train_clicks(artifacts["transformed_examples"], self.tft_output)
        rows = data.read_eval_rows(artifacts["eval_examples"], self.tft_output)
        truth_file = oracle.truth_path(record["dataset_dir"])
        self.rows = (
            data.attach_oracle(rows, oracle.read_event_probabilities(truth_file)) if truth_file.exists() else rows
        )
        self.listings = data.read_listings(artifacts["items"], self.tft_output)
        truth_csv = os.path.join(record["dataset_dir"], "truth.csv")
        from camenn.serving.audit import read_truth

        self.truth = read_truth(truth_csv) if os.path.exists(truth_csv) else {}


# --- Step 2: one (dataset, model, seed).


def budget_steps(train_clicks: int, epochs: float, batch_size: int) -> int:
    return max(1, int(round(epochs * train_clicks / batch_size)))


def curve_sizes(train_clicks: int, settings: dict, dataset: str) -> List[int]:
    """Training-set sizes of a practitioner's learning curve: the clicks a neural model has seen at its
    curve points (those within the training split), then the whole training split."""
    steps = budget_steps(train_clicks, settings["epochs"][dataset], settings["batch_size"])
    segment = max(1, steps // settings["points"])
    seen = [segment * (k + 1) * settings["batch_size"] for k in range(settings["points"])]
    return sorted({s for s in seen if s < train_clicks} | {train_clicks})


def run_neural(prepared: Prepared, model: str, seed: int, settings: dict, predictions_path: str, reuse=None):
    from camenn.tfx_pipeline.experiments import scoring, training

    family, options = NEURAL_MODELS[model]
    from camenn.tfx_pipeline import configs

    pipeline_config = configs.PipelineConfig.from_json(json.dumps(prepared.record["pipeline"]))
    config = configs.TrainerSettings.of(
        pipeline_config.replace(
            model_preset=f"{family}_{settings['size']}",
            model_options=json.dumps(options, sort_keys=True),
            learning_rate=settings["learning_rate"],
            batch_size=settings["batch_size"],
        )
    )
    rows = prepared.rows
    cvr_rows = rows.task_rows(F.CVR)
    oracle = prepared.record.get("oracle")

    def evaluate(keras_model):
        predicted = training.predict(keras_model, rows.dataset(keras_model.input, training.PREDICT_BATCH, cvr_rows))
        full = np.zeros(len(rows))
        full[cvr_rows] = predicted[F.CVR]
        result = scoring.cvr_metrics(rows, full)
        return {
            "auc": result["auc"],
            "normalized_entropy": result["normalized_entropy"],
            "auc_headroom": scoring.headroom_share(result["auc"], (oracle or {}).get("auc")),
        }

    epochs = settings["epochs"][prepared.record["name"]]
    steps = budget_steps(prepared.train.num_clicks, epochs, settings["batch_size"])
    run = training.train_neural(
        config, prepared.tft_output, prepared.train, evaluate, steps, settings["points"], seed, reuse=reuse
    )
    start = time.perf_counter()
    predicted = training.predict(run.model, rows.dataset(run.model.input, training.PREDICT_BATCH))
    cvr = scoring.with_headroom(scoring.cvr_metrics(rows, predicted[F.CVR]), oracle)
    record = {
        "kind": "neural",
        "model_preset": config.model_preset,
        "model_options": options,
        "cvr": cvr,
        "alignment": scoring.alignment_metrics(rows, predicted),
        "curve": run.curve,
        "train_seconds": round(run.train_seconds, 2),
        "first_segment_seconds": round(run.first_segment_seconds, 2),
        "parameters": run.parameters,
        "routing": run.routing,
        "epochs": epochs,
        "steps": run.curve[-1]["steps"],
        "clicks_seen": run.curve[-1]["clicks_seen"],
        "batch_size": settings["batch_size"],
    }
    if {F.ITA, F.TIA} <= set(predicted) and prepared.truth:
        listing_scores = training.predict(run.model, _listing_dataset(prepared.listings, run.model.input))
        sizes = [s.decode() for s in prepared.listings.raw[F.MERCHANT_SIZE]]
        record["flaws_in_sample"] = scoring.flaw_metrics(
            prepared.listings.item_ids, listing_scores[F.ITA], listing_scores[F.TIA], prepared.truth, sizes
        )
    record["eval_seconds"] = round(time.perf_counter() - start, 2)
    np.savez_compressed(predictions_path, cvr=predicted[F.CVR][cvr_rows])
    return record, run.model


def _listing_dataset(listings, names):
    import tensorflow as tf

    return tf.data.Dataset.from_tensor_slices({n: listings.inputs[n] for n in names}).batch(512)


def run_practitioner(prepared: Prepared, model: str, seed: int, settings: dict, predictions_path: str) -> dict:
    from camenn.tfx_pipeline.experiments import practitioner, scoring

    learner = practitioner.LEARNERS[model]
    rows = prepared.rows
    cvr_rows = rows.task_rows(F.CVR)
    eval_columns = {name: rows.columns[name][cvr_rows] for name in practitioner.NARROW}
    train_columns = practitioner.click_columns(prepared.train.clicks, prepared.train.listings)
    labels = prepared.train.clicks[F.LABEL].astype(np.float64)
    oracle = prepared.record.get("oracle")

    def fit_and_score(index):
        table = practitioner.FeatureTable.fit({k: v[index] for k, v in train_columns.items()}, labels[index], seed)
        predict = learner(table.train, labels[index], seed)
        full = np.zeros(len(rows))
        full[cvr_rows] = predict(table.transform(eval_columns))
        return full

    start = time.perf_counter()
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(labels))
    curve = []
    for size in curve_sizes(len(labels), settings, prepared.record["name"])[:-1]:
        result = scoring.cvr_metrics(rows, fit_and_score(np.sort(order[:size])))
        curve.append(
            {
                "clicks_seen": size,
                "auc": result["auc"],
                "normalized_entropy": result["normalized_entropy"],
                "auc_headroom": scoring.headroom_share(result["auc"], (oracle or {}).get("auc")),
            }
        )
    fit_start = time.perf_counter()
    predicted = fit_and_score(np.arange(len(labels)))
    train_seconds = time.perf_counter() - fit_start
    cvr = scoring.with_headroom(scoring.cvr_metrics(rows, predicted), oracle)
    curve.append(
        {
            "clicks_seen": len(labels),
            "auc": cvr["auc"],
            "normalized_entropy": cvr["normalized_entropy"],
            "auc_headroom": cvr.get("auc_headroom"),
        }
    )
    np.savez_compressed(predictions_path, cvr=predicted[cvr_rows])
    return {
        "kind": "practitioner",
        "model_preset": model,
        "model_options": {},
        "cvr": cvr,
        "alignment": {},
        "curve": curve,
        "train_seconds": round(train_seconds, 2),
        "features": list(practitioner.FEATURES),
        "curve_seconds": round(fit_start - start, 2),
        "clicks_seen": len(labels),
    }


def run_one(prepared: Prepared, model: str, seed: int, settings: dict, predictions_dir: str, reuse=None):
    """Trains and scores one (dataset, model, seed); returns its record and, for a neural model, the trained
    Keras model (pass it as `reuse` to the next seed of the same model)."""
    started_at, start, load = time.time(), time.perf_counter(), os.getloadavg()[0]
    os.makedirs(predictions_dir, exist_ok=True)
    path = os.path.join(predictions_dir, f"{model}-{seed}.npz")
    if model in NEURAL_MODELS:
        record, trained = run_neural(prepared, model, seed, settings, path, reuse)
    else:
        record, trained = run_practitioner(prepared, model, seed, settings, path), None
    record.update(
        dataset=prepared.record["name"],
        model=model,
        seed=seed,
        started_at=round(started_at, 1),
        finished_at=round(time.time(), 1),
        wall_seconds=round(time.perf_counter() - start, 2),
        load_average=[round(load, 2), round(os.getloadavg()[0], 2)],
    )
    return record, trained


# --- Plan, workers, resumption.


def plan(settings: dict) -> List[tuple]:
    """Every (dataset, model, seed) of the settings."""
    return [(d, m, s) for d in settings["datasets"] for s in settings["seeds"] for m in settings["models"]]


def _load(path: str, settings: dict) -> dict:
    if os.path.exists(path):
        with open(path) as f:
            previous = json.load(f)
        if previous.get("settings") == settings:
            return previous
        logger.info("%s holds other settings: starting afresh", path)
    return {"settings": settings, "runs": []}


def _save(results: dict, path: str) -> None:
    with open(path + ".tmp", "w") as f:
        json.dump(results, f, indent=1, sort_keys=True)
    os.replace(path + ".tmp", path)


def assign(settings: dict, count: int) -> List[List[tuple]]:
    """Splits the plan into `count` workers' shares of (dataset, model) groups (every seed of a model on a
    dataset in one worker, so its later seeds reuse the first one's traced graph), balancing an estimate
    of their cost, longest first; worker i also prepares datasets[i::count]."""
    from camenn.simulator.defaults import NUM_EVENTS  # the embedded sample's clicks

    scale = {LARGE: LARGE_EVENTS / NUM_EVENTS}
    loads = [sum(900.0 if d == LARGE else 600.0 for d in settings["datasets"][i::count]) for i in range(count)]
    groups = [(d, m) for d in settings["datasets"] for m in settings["models"]]

    def cost(group):
        dataset, model = group
        if model not in NEURAL_MODELS:
            return 10.0 * scale.get(dataset, 1.0)
        return 90.0 + len(settings["seeds"]) * settings["epochs"][dataset] * scale.get(dataset, 1.0) * 30.0

    shares: List[List[tuple]] = [[] for _ in range(count)]
    for group in sorted(groups, key=cost, reverse=True):
        worker = int(np.argmin(loads))
        shares[worker].append(group)
        loads[worker] += cost(group)
    return shares


def run_worker(settings: dict, base, outputs_dir: str, shard=(0, 1)) -> dict:
    """Prepares this worker's datasets, then runs its share of the plan (`assign`) not yet in
    `outputs_dir/worker-<i>/results.json`, saving after every run; a group waits until its dataset is
    prepared (by whichever worker prepares it)."""
    index, count = shard
    dirs = dataset_dirs(outputs_dir, settings)
    for name in settings["datasets"][index::count]:
        if not os.path.exists(os.path.join(outputs_dir, name, PREPARED_FILE)):
            logger.info("worker %d: preparing %s", index, name)
            prepare(name, dirs[name], base, outputs_dir)
    worker_dir = os.path.join(outputs_dir, f"worker-{index}")
    os.makedirs(worker_dir, exist_ok=True)
    path = os.path.join(worker_dir, RESULTS_FILE)
    results = _load(path, settings)
    done = {(r["dataset"], r["model"], r["seed"]) for r in results["runs"]}
    pending = [g for g in assign(settings, count)[index] if any((g[0], g[1], s) not in done for s in settings["seeds"])]
    loaded: Dict[str, Prepared] = {}
    while pending:
        ready = [g for g in pending if os.path.exists(os.path.join(outputs_dir, g[0], PREPARED_FILE))]
        if not ready:
            time.sleep(5)
            continue
        dataset, model = next((g for g in ready if g[0] in loaded), ready[0])
        pending.remove((dataset, model))
        if dataset not in loaded:
            loaded.clear()  # one dataset's arrays in memory at a time
            with open(os.path.join(outputs_dir, dataset, PREPARED_FILE)) as f:
                loaded[dataset] = Prepared(json.load(f))
        reuse = None
        for seed in settings["seeds"]:
            if (dataset, model, seed) in done:
                continue
            logger.info("worker %d: %s on %s, seed %d", index, model, dataset, seed)
            record, reuse = run_one(
                loaded[dataset], model, seed, settings, os.path.join(outputs_dir, dataset, "predictions"), reuse
            )
            logger.info(
                "  %s on %s seed %d: CVR AUC %.4f (%.0f%% of the headroom), %.0f s",
                model,
                dataset,
                seed,
                record["cvr"]["auc"],
                100 * record["cvr"].get("auc_headroom", np.nan),
                record["wall_seconds"],
            )
            results["runs"].append(record)
            _save(results, path)
    return results


def judge(settings: dict, outputs_dir: str, datasets: Dict[str, dict]) -> List[dict]:
    """The paper's claims from the saved eval predictions (`claims`), per dataset."""
    from camenn.tfx_pipeline.experiments import claims

    comparisons = (
        ("a", "CVR improves when the model also learns ITA/TIA", "camenn", "camenn_cvr_only"),
        ("b", "the mixture of transformer experts beats the shared bottom alone", "camenn", "camenn_without_mixture"),
        ("b", "the mixture of transformer experts beats MMoE's dense experts", "camenn", "mmoe"),
        ("c", "image + text beats text alone", "camenn", "camenn_text_only"),
        ("c", "image + text beats image alone", "camenn", "camenn_image_only"),
        ("-", "CameNN beats the practitioner's logistic regression", "camenn", "logistic_regression"),
        ("-", "CameNN beats the practitioner's gradient-boosted trees", "camenn", "gradient_boosted_trees"),
    )
    judged = []
    for dataset in settings["datasets"]:
        folder = os.path.join(outputs_dir, dataset)
        clicks_path = os.path.join(folder, "eval_clicks.npz")
        if not os.path.exists(clicks_path):
            continue
        labels = np.load(clicks_path)["labels"]

        def predictions(model, folder=folder):
            out = {}
            for seed in settings["seeds"]:
                path = os.path.join(folder, "predictions", f"{model}-{seed}.npz")
                if os.path.exists(path):
                    out[seed] = np.load(path)["cvr"]
            return out

        for claim, statement, a, b in comparisons:
            pa, pb = predictions(a), predictions(b)
            if not (set(pa) & set(pb)):
                continue
            judged.append(
                {
                    "claim": claim,
                    "statement": statement,
                    "dataset": dataset,
                    "a": a,
                    "b": b,
                    "metric": "CVR AUC",
                    **claims.compare(pa, pb, labels),
                }
            )
        for key, result in datasets.get(dataset, {}).get("audit_claims", {}).items():
            judged.append(
                {
                    "claim": "d",
                    "dataset": dataset,
                    "metric": "ROC AUC (out-of-fold audit)",
                    "statement": {
                        "ita_finds_inaccurate_text": "a low ITA finds inaccurate texts",
                        "tia_finds_vague_photo": "a low TIA finds vague photos",
                    }[key],
                    "a": "ListingAudit",
                    "b": "chance",
                    **result,
                }
            )
    return judged


def merge(
    settings: dict,
    outputs_dir: str,
    results_dir: str,
    workers: int,
    elapsed: Optional[float],
    started_at: Optional[float],
) -> dict:
    """Merges the workers' results and the prepared datasets, judges the claims, writes results.json."""
    runs, datasets = [], {}
    for i in range(workers):
        path = os.path.join(outputs_dir, f"worker-{i}", RESULTS_FILE)
        if os.path.exists(path):
            with open(path) as f:
                part = json.load(f)
            if part.get("settings") == settings:
                runs += part["runs"]
    for name in settings["datasets"]:
        path = os.path.join(outputs_dir, name, PREPARED_FILE)
        if os.path.exists(path):
            with open(path) as f:
                datasets[name] = json.load(f)
    order = {item: n for n, item in enumerate(plan(settings))}
    runs.sort(key=lambda r: order.get((r["dataset"], r["model"], r["seed"]), len(order)))
    if started_at is not None and any(r["started_at"] < started_at for r in runs):
        elapsed = None  # resumed: this invocation's wall time is not the whole command's
    results = {
        "settings": dict(settings, workers=workers),
        "datasets": datasets,
        "runs": runs,
        "claims": judge(settings, outputs_dir, datasets),
        "planned_runs": len(plan(settings)),
        "total_seconds": None if elapsed is None else round(elapsed, 2),
    }
    if runs:
        first = min([r["started_at"] for r in runs] + [d.get("prepared_at", np.inf) for d in datasets.values()])
        results["span_seconds"] = round(max(r["finished_at"] for r in runs) - first, 2)
    os.makedirs(results_dir, exist_ok=True)
    _save(results, os.path.join(results_dir, RESULTS_FILE))
    return results


def merge_existing(outputs_dir: str, results_dir: str) -> Optional[dict]:
    """`merge` of whatever the workers under `outputs_dir` have saved (a run going on, or killed), with
    their settings; None when there is nothing there."""
    import glob

    paths = sorted(glob.glob(os.path.join(outputs_dir, "worker-*", RESULTS_FILE)))
    if not paths:
        return None
    with open(paths[0]) as f:
        settings = json.load(f)["settings"]
    workers = 1 + max(int(os.path.basename(os.path.dirname(p)).split("-")[1]) for p in paths)
    return merge(settings, outputs_dir, results_dir, workers, None, None)


def run_experiments(
    settings: dict, base, outputs_dir: str, results_dir: str, workers: int = 1, render: bool = True
) -> dict:
    """The whole command: prepare, run the plan in `workers` processes (this one when 1), merge, render."""
    import subprocess
    import sys

    from camenn.tfx_pipeline.experiments import report

    start, started_at = time.perf_counter(), time.time()
    os.makedirs(outputs_dir, exist_ok=True)
    dataset_dirs(outputs_dir, settings)  # builds the 60k set once, up front
    if workers == 1:
        run_worker(settings, base, outputs_dir)
    else:
        children = []
        for i in range(workers):
            args = [
                sys.executable,
                "-m",
                "camenn",
                "experiments",
                "--worker",
                f"{i}/{workers}",
                "--settings-json",
                json.dumps(settings),
                "--base-json",
                base.to_json(),
                "--outputs",
                outputs_dir,
            ]
            log = open(os.path.join(outputs_dir, f"worker-{i}.log"), "ab")
            logger.info("worker %d: log in %s", i, log.name)
            children.append((subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT), log))
        failed = []
        for i, (child, log) in enumerate(children):
            if child.wait():
                failed.append(f"worker {i} exited with {child.returncode} (see {log.name})")
            log.close()
        if failed:
            merge(settings, outputs_dir, results_dir, workers, None, None)
            raise RuntimeError("; ".join(failed))
    results = merge(settings, outputs_dir, results_dir, workers, time.perf_counter() - start, started_at)
    if render:
        report.render(results, results_dir)
    return results
