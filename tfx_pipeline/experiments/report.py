"""Renders `camenn experiments`' results.json as RESULTS.md (mean and spread over seeds per model) and two
PNG plots beside it: CVR calibration per model, and CameNN's expert load per task."""
import datetime
import os

import numpy as np

from camenn.model import features as F

DISCUSSION_FILE = "results_discussion.md"  # hand-written, included verbatim if present
CALIBRATION_PLOT = "calibration.png"
EXPERT_LOAD_PLOT = "expert_load.png"

RANKING = (("CVR AUC", "metrics", f"{F.CVR}/auc"), ("CVR GAUC", "metrics", f"{F.CVR}/gauc"),
           ("CVR LogLoss", "metrics", f"{F.CVR}/log_loss"),
           ("calibration (mean pred / mean label)", "metrics", f"{F.CVR}/calibration"))
ALIGNMENT = (("ITA AUC", "metrics", f"{F.ITA}/auc"), ("TIA AUC", "metrics", f"{F.TIA}/auc"),
             *((f"image→text R@{k}", "retrieval", f"image_to_text_recall@{k}") for k in (1, 5, 10)),
             *((f"text→image R@{k}", "retrieval", f"text_to_image_recall@{k}") for k in (1, 5, 10)))
FLAWS = (("low ITA finds inaccurate texts (AUC)", "flaws", "ita_finds_inaccurate_text_auc"),
         ("low TIA finds vague photos (AUC)", "flaws", "tia_finds_vague_photo_auc"),
         ("low min(ITA, TIA) finds any flaw (AUC)", "flaws", "alignment_finds_any_flaw_auc"))


def by_model(results):
    """model -> its runs, in the order the settings list the models."""
    runs = {model: [] for model in results["settings"]["models"]}
    for run in results["runs"]:
        runs.setdefault(run["model"], []).append(run)
    return {model: r for model, r in runs.items() if r}


def mean_spread(values):
    """(mean, sample standard deviation) of the finite values, or None when there is none."""
    values = np.array([v for v in values if v is not None and np.isfinite(v)], dtype=float)
    if not len(values):
        return None
    return float(values.mean()), float(values.std(ddof=1)) if len(values) > 1 else 0.0


def _cell(runs, section, key, digits=3):
    stat = mean_spread([run.get(section, {}).get(key) for run in runs])
    return "n/a" if stat is None else f"{stat[0]:.{digits}f} ± {stat[1]:.{digits}f}"


def _table(models, columns):
    lines = ["| model | " + " | ".join(label for label, _, _ in columns) + " |",
             "|---|" + "---|" * len(columns)]
    for model, runs in models.items():
        lines.append(f"| {model} | " + " | ".join(_cell(runs, s, k) for _, s, k in columns) + " |")
    return lines


def _time_table(models, total):
    lines = ["| model | runs | wall s per run | of which Trainer s | Evaluator s | retrieval + flaw scoring s | "
             "share of total |", "|---|---|---|---|---|---|---|"]
    for model, runs in models.items():
        wall = sum(r["wall_seconds"] for r in runs)
        trainer = mean_spread([r["component_seconds"].get("Trainer") for r in runs])
        evaluator = mean_spread([r["component_seconds"].get("Evaluator") for r in runs])
        scoring = mean_spread([r["scoring_seconds"] for r in runs])
        fmt = lambda s: "n/a" if s is None else f"{s[0]:.0f} ± {s[1]:.0f}"  # noqa: E731
        lines.append(f"| {model} | {len(runs)} | {wall / len(runs):.0f} | {fmt(trainer)} | {fmt(evaluator)} | "
                     f"{fmt(scoring)} | {100 * wall / total:.1f}% |")
    return lines


def plot_calibration(models, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(6, 5))
    axis.plot([0, 1], [0, 1], color="grey", linestyle=":", label="perfect")
    for model, runs in models.items():
        binned = np.sum([np.array(r["calibration"]) for r in runs if r.get("calibration")], axis=0)
        if not np.ndim(binned):
            continue
        keep = binned[:, 0] > 0
        axis.plot(binned[keep, 2] / binned[keep, 0], binned[keep, 1] / binned[keep, 0], marker="o", label=model)
    axis.set_xlabel("mean predicted CVR (bin)")
    axis.set_ylabel("observed conversion rate")
    axis.set_title("CVR calibration on the eval split (all seeds pooled)")
    axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def plot_expert_load(models, path, model="camenn"):
    """Bar chart of each task's share of top-k assignments per expert (mean over seeds), if `model` routed."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = [r for r in models.get(model, []) if r.get("routing")]
    if not runs:
        return False
    tasks = [t for t in F.TASKS if any(k.startswith(f"{t}_expert_") for k in runs[0]["routing"])]
    experts = sorted({int(k.split("_expert_")[1].split("_")[0]) for k in runs[0]["routing"] if "_expert_" in k})
    figure, axis = plt.subplots(figsize=(7, 4))
    width = 0.8 / len(tasks)
    for t, task in enumerate(tasks):
        load = [np.mean([r["routing"][f"{task}_expert_{e}_load"] for r in runs]) for e in experts]
        axis.bar(np.array(experts) + t * width, load, width, label=task)
    axis.axhline(1 / len(experts), color="grey", linestyle=":", label="uniform")
    axis.set_xticks(np.array(experts) + width * (len(tasks) - 1) / 2, [str(e) for e in experts])
    axis.set_xlabel("expert")
    axis.set_ylabel("share of the task's top-k assignments")
    axis.set_title(f"{model}: expert load per task, last training epoch (mean of {len(runs)} seeds)")
    axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return True


def render(results, results_dir):
    """Writes RESULTS.md and the plots into `results_dir`; returns the RESULTS.md path."""
    models = by_model(results)
    settings = results["settings"]
    pipeline = settings["pipeline"]
    total = sum(r["wall_seconds"] for r in results["runs"]) or 1.0
    elapsed = results.get("total_seconds", total)  # None: not recorded in one piece
    workers = settings.get("workers", 1)
    seeds = sorted({r["seed"] for r in results["runs"]})
    first = results["runs"][0] if results["runs"] else {}
    lines = [
        "# Results: CameNN against its baselines and ablations",
        "",
        f"Rendered by `camenn experiments` from `results.json` on {datetime.date.today().isoformat()}: "
        f"{len(results['runs'])} pipeline runs ({len(models)} models x seeds {seeds})"
        + (f" in {elapsed / 60:.1f} minutes" if elapsed is not None else "")
        + f" on this machine ({workers} worker process{'es' if workers > 1 else ''}).",
        *(["", f"**Partial: {len(results['runs'])} of the {results['planned_runs']} planned runs finished** "
               "(the `runs` column of the wall-time table says how many seeds each model has); "
               "`camenn experiments` with the same settings resumes the rest."]
          if results.get("planned_runs", len(results["runs"])) > len(results["runs"]) else []),
        "",
        "## Setup",
        "",
        f"- Data: `{os.path.basename(pipeline['dataset_dir'].rstrip('/'))}` "
        f"({first.get('flaws', {}).get('listings', 'n/a')} listings with a known quality). Every run is one run "
        "of the TFX pipeline; each worker process has its own outputs and ML Metadata store, where "
        "preprocessing and Transform ran once (the same code on the same data) and every later run reused "
        "them from the cache. The Evaluator scored every model on the same eval rows (true pairs plus one "
        "ITA and one TIA negative per eval click), without a baseline model.",
        f"- Budget, the same for every model: {pipeline['epochs']} epoch(s) x {pipeline['steps_per_epoch']} steps, "
        f"batch {pipeline['batch_size']} clicks (x3 rows with the ITA/TIA negatives), AdamW with warmup and "
        f"linear decay, learning rate {pipeline['learning_rate'] or 'the preset default'}.",
        f"- Models ({settings['size']} presets), with `{settings['common_options']}` for all: "
        + "; ".join(f"`{m}` = {runs[0]['model_preset']} {runs[0]['model_options']}" for m, runs in models.items())
        + ".",
        "- Spread: ± is the sample standard deviation over seeds (the seed sets initialisation, batch order "
        "and negatives).",
        "",
        "## CVR (TFMA, eval split)",
        "",
        *_table(models, RANKING),
        "",
        "## Image-text alignment",
        "",
        "ITA/TIA AUC: TFMA on the eval rows (true pair against its hard negative). Recall@K: over "
        f"{first.get('retrieval', {}).get('products', 'n/a')} products (one accurate listing per fine "
        "category), each product's photo ranks every product's text by ITA (image→text) and each text "
        "ranks every photo by TIA (text→image); a tie counts against the true match; chance R@1 is "
        f"1/{first.get('retrieval', {}).get('products', 'n')}.",
        "",
        *_table(models, ALIGNMENT),
        "",
        "## Finding the simulator's inaccurate listings",
        "",
        "Every listing scored as itself (its own photo and text, unknown shopper at noon); ROC AUC of the "
        "low score against the truth file (0.5 is chance). The truth is never a model input.",
        "",
        *_table(models, FLAWS),
        "",
        "## Wall time",
        "",
        (f"The command took {elapsed:.0f} s ({elapsed / 60:.1f} min)" if elapsed is not None else
         "The command's wall time was not recorded in one piece (see the discussion)")
        + f" with {workers} worker process(es); its {len(results['runs'])} runs took {total:.0f} s together (runs in parallel workers overlap, and share "
        "the 2 cores, so each run's own time is longer than alone). Per run: the whole pipeline run (the "
        "first run of a worker preprocesses and transforms; cached components included) plus the "
        "retrieval and flaw scoring; the share is of the runs' sum.",
        "",
        *_time_table(models, total),
        "",
        "## Plots",
        "",
    ]
    plot_calibration(models, os.path.join(results_dir, CALIBRATION_PLOT))
    lines.append(f"![CVR calibration]({CALIBRATION_PLOT})")
    if plot_expert_load(models, os.path.join(results_dir, EXPERT_LOAD_PLOT)):
        lines += ["", f"![Expert load per task]({EXPERT_LOAD_PLOT})"]
    discussion = os.path.join(results_dir, DISCUSSION_FILE)
    if os.path.exists(discussion):
        with open(discussion) as f:
            lines += ["", f.read().rstrip()]
    path = os.path.join(results_dir, "RESULTS.md")
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    return path
