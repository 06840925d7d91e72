"""Renders `camenn experiments`' results.json as RESULTS.md and its plots: every number in RESULTS.md is
read from results.json (means and sample standard deviations over seeds computed here).

Plots: CVR calibration per model, CameNN's expert load per task, learning curves (eval CVR AUC against
clicks seen, per model and dataset, the oracle as a line), and the out-of-fold audit's scores for ok
and flawed listings.

Usage:
```text
render(json.load(open("docs/results.json")), "docs")     # docs/RESULTS.md and docs/*.png
```
"""

import datetime
import os
from typing import Dict, List

import numpy as np

from camenn.model import features as F

DISCUSSION_FILE = "results_discussion.md"  # hand-written, included verbatim if present
CALIBRATION_PLOT = "calibration.png"
EXPERT_LOAD_PLOT = "expert_load.png"
LEARNING_CURVES_PLOT = "learning_curves.png"
AUDIT_PLOT = "audit_scores.png"

CVR_COLUMNS = (
    ("CVR AUC", "auc"),
    ("share of headroom", "auc_headroom"),
    ("GAUC", "gauc"),
    ("GAUC share of headroom", "gauc_headroom"),
    ("normalized entropy", "normalized_entropy"),
    ("log loss / prior's", "log_loss_vs_prior"),
    ("calibration", "calibration"),
)
ALIGNMENT_COLUMNS = tuple(
    (f"{task.upper()} AUC{' ' + label if label else ''}", f"{task}/auc{suffix}")
    for task in (F.ITA, F.TIA)
    for label, suffix in (("", ""), ("hard", "/hard"), ("other coarse", "/other_coarse"))
)
FLAW_COLUMNS = (
    ("low ITA finds inaccurate texts", "ita_finds_inaccurate_text"),
    ("low TIA finds vague photos", "tia_finds_vague_photo"),
    ("low min(ITA, TIA) finds any flaw", "any_flaw"),
    *((f"any flaw, {size} merchants", f"any_flaw/{size}") for size in ("small", "medium", "large")),
)


def _runs(results: dict, dataset: str) -> Dict[str, List[dict]]:
    """model -> its runs on `dataset`, in the settings' model order."""
    out = {m: [] for m in results["settings"]["models"]}
    for run in results["runs"]:
        if run["dataset"] == dataset:
            out.setdefault(run["model"], []).append(run)
    return {m: r for m, r in out.items() if r}


def mean_spread(values):
    """(mean, sample standard deviation, count) of the finite values, or None."""
    values = np.array([v for v in values if v is not None and np.isfinite(v)], dtype=float)
    if not len(values):
        return None
    return float(values.mean()), float(values.std(ddof=1)) if len(values) > 1 else 0.0, len(values)


def _cell(values, digits=3) -> str:
    stat = mean_spread(values)
    if stat is None:
        return "n/a"
    return f"{stat[0]:.{digits}f} ± {stat[1]:.{digits}f}" if stat[2] > 1 else f"{stat[0]:.{digits}f}"


def _fmt(value, digits=3) -> str:
    return "n/a" if value is None or not np.isfinite(value) else f"{value:.{digits}f}"


def _row(cells) -> str:
    return "| " + " | ".join(cells) + " |"


def _header(leading: List[str], columns) -> List[str]:
    """A markdown table's header and rule: the `leading` labels, then each (label, key) of `columns`."""
    labels = [*leading, *(label for label, _ in columns)]
    return [_row(labels), "|" + "---|" * len(labels)]


def _cvr_table(results, dataset) -> List[str]:
    prepared = results["datasets"].get(dataset, {})
    lines = _header(["model", "runs"], CVR_COLUMNS)
    for name, row in (
        ("**oracle** (the simulator's true probabilities)", prepared.get("oracle")),
        ("predict the training rate", prepared.get("prior")),
    ):
        if row:
            row = dict(
                row, auc_headroom=1.0 if "oracle" in name else 0.0, gauc_headroom=1.0 if "oracle" in name else None
            )
            lines.append(_row([name, "-", *(_fmt(row.get(k)) for _, k in CVR_COLUMNS)]))
    for model, runs in _runs(results, dataset).items():
        lines.append(_row([model, str(len(runs)), *(_cell([r["cvr"].get(k) for r in runs]) for _, k in CVR_COLUMNS)]))
    return lines


def _alignment_table(results, dataset) -> List[str]:
    lines = _header(["model"], ALIGNMENT_COLUMNS)
    for model, runs in _runs(results, dataset).items():
        if runs[0].get("alignment"):
            lines.append(_row([model, *(_cell([r["alignment"].get(k) for r in runs]) for _, k in ALIGNMENT_COLUMNS)]))
    return lines


def _flaw_table(results) -> List[str]:
    lines = _header(["scores", "dataset"], FLAW_COLUMNS)
    for dataset in results["settings"]["datasets"]:
        audit = results["datasets"].get(dataset, {}).get("audit")
        if audit:
            lines.append(
                _row(["**ListingAudit, out of fold**", dataset, *(_fmt(audit.get(k)) for _, k in FLAW_COLUMNS)])
            )
    for dataset in results["settings"]["datasets"]:
        for model, runs in _runs(results, dataset).items():
            if runs[0].get("flaws_in_sample"):
                cells = (_cell([r["flaws_in_sample"].get(k) for r in runs]) for _, k in FLAW_COLUMNS)
                lines.append(_row([f"{model}, in sample", dataset, *cells]))
    return lines


def _claims_table(results) -> List[str]:
    lines = [
        "| claim | statement | dataset | metric | A | B | A - B (per seed) | 95% interval | verdict |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for c in results.get("claims", []):
        if "mean" in c:
            diff = f"{c['mean']:+.4f} ({', '.join(f'{d:+.3f}' for d in c['per_seed'])})"
            interval = f"[{c['low']:+.4f}, {c['high']:+.4f}]"
        else:
            diff = f"AUC {c['auc']:.3f} ({c['flawed']} flawed, {c['ok']} ok listings)"
            interval = f"[{c['low']:.3f}, {c['high']:.3f}]"
        lines.append(
            f"| ({c['claim']}) | {c['statement']} | {c['dataset']} | {c['metric']} | {c['a']} | {c['b']} | "
            f"{diff} | {interval} | **{c['verdict']}** |"
        )
    return lines


def _time_table(results) -> List[str]:
    lines = [
        "| dataset | model | parameters | runs | wall s per run | fit s (first segment, with tracing) | "
        "clicks seen | clicks/s after tracing | load average (start, end) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for dataset in results["settings"]["datasets"]:
        for model, runs in _runs(results, dataset).items():
            fit = mean_spread([r["train_seconds"] for r in runs])
            first = mean_spread([r.get("first_segment_seconds") for r in runs])
            rate = mean_spread(
                [
                    (r["clicks_seen"] * (1 - 1 / len(r["curve"])))
                    / max(1e-9, r["train_seconds"] - r["first_segment_seconds"])
                    for r in runs
                    if r.get("first_segment_seconds") and len(r["curve"]) > 1
                ]
            )
            load = [r.get("load_average") for r in runs if r.get("load_average")]
            load_text = f"{np.mean([x[0] for x in load]):.1f}, {np.mean([x[1] for x in load]):.1f}" if load else "n/a"
            parameters = f"{runs[0]['parameters']:,}" if runs[0].get("parameters") else "-"
            lines.append(
                f"| {dataset} | {model} | {parameters} | {len(runs)} | "
                f"{np.mean([r['wall_seconds'] for r in runs]):.0f} | "
                f"{fit[0]:.0f}"
                + (f" ({first[0]:.0f})" if first else "")
                + f" | {runs[0]['clicks_seen']:,} | "
                + (f"{rate[0]:.0f}" if rate else "n/a")
                + f" | {load_text} |"
            )
    return lines


def plot_learning_curves(results, path) -> bool:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    datasets = [d for d in results["settings"]["datasets"] if _runs(results, d)]
    if not datasets:
        return False
    figure, axes = plt.subplots(1, len(datasets), figsize=(6.5 * len(datasets), 5), squeeze=False, sharey=True)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for axis, dataset in zip(axes[0], datasets):
        for i, (model, runs) in enumerate(_runs(results, dataset).items()):
            length = min(len(r["curve"]) for r in runs)
            clicks = [runs[0]["curve"][k]["clicks_seen"] for k in range(length)]
            auc = np.array([[r["curve"][k]["auc"] for k in range(length)] for r in runs])
            style = "--" if runs[0]["kind"] == "practitioner" else "-"
            axis.errorbar(
                clicks,
                auc.mean(0),
                yerr=auc.std(0, ddof=1) if len(runs) > 1 else None,
                label=model,
                linestyle=style,
                marker="o",
                markersize=3,
                capsize=2,
                color=colours[i % len(colours)],
            )
        oracle = results["datasets"].get(dataset, {}).get("oracle")
        if oracle:
            axis.axhline(oracle["auc"], color="black", linestyle=":", label=f"oracle {oracle['auc']:.3f}")
        axis.axhline(0.5, color="grey", linewidth=0.8)
        train = results["datasets"].get(dataset, {}).get("train_clicks")
        if train:
            axis.axvline(train, color="grey", linestyle="-.", linewidth=0.8, label="one pass over the training split")
        axis.set_xscale("log")
        axis.set_xlabel("training clicks seen (neural: steps x batch; dashed: training-set size)")
        axis.set_title(f"{dataset}: eval CVR AUC (mean ± sd over seeds)")
    axes[0][0].set_ylabel("eval CVR AUC")
    axes[0][-1].legend(fontsize=7, loc="lower right")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return True


def plot_audit(results, path) -> bool:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    audits = [
        (d, results["datasets"][d]["audit"]["scores"])
        for d in results["settings"]["datasets"]
        if results["datasets"].get(d, {}).get("audit", {}).get("scores")
    ]
    if not audits:
        return False
    figure, axes = plt.subplots(len(audits), 2, figsize=(11, 3.6 * len(audits)), squeeze=False)
    bins = np.linspace(0, 1, 26)
    for row, (dataset, scores) in zip(axes, audits):
        quality = np.array(scores["quality"])
        for axis, task in zip(row, (F.ITA, F.TIA)):
            values = np.array(scores[task])
            for q in ("ok", "inaccurate_text", "vague_photo"):
                chosen = quality == q
                if chosen.any():
                    axis.hist(
                        values[chosen],
                        bins=bins,
                        density=True,
                        histtype="step",
                        linewidth=1.6,
                        label=f"{q} ({chosen.sum()})",
                    )
            axis.set_xlabel(f"out-of-fold {task.upper()} score of the listing's own pair")
            axis.set_ylabel("density")
            axis.set_title(f"{dataset}: ListingAudit {task.upper()}")
            axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return True


def plot_calibration(results, path, dataset) -> bool:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = _runs(results, dataset)
    if not runs:
        return False
    figure, axis = plt.subplots(figsize=(6, 5))
    axis.plot([0, 1], [0, 1], color="grey", linestyle=":", label="perfect")
    sources = {m: [np.array(r["cvr"]["calibration_histogram"]) for r in rs] for m, rs in runs.items()}
    oracle = results["datasets"].get(dataset, {}).get("oracle")
    if oracle:
        sources = {"oracle": [np.array(oracle["calibration_histogram"])], **sources}
    for model, histograms in sources.items():
        binned = np.sum(histograms, axis=0)
        keep = binned[:, 0] > 0
        axis.plot(
            binned[keep, 2] / binned[keep, 0],
            binned[keep, 1] / binned[keep, 0],
            marker="o",
            label=model,
            linestyle=":" if model == "oracle" else "-",
        )
    axis.set_xlabel("mean predicted CVR (bin)")
    axis.set_ylabel("observed conversion rate")
    axis.set_title(f"CVR calibration, {dataset} eval split (seeds pooled)")
    axis.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return True


def plot_expert_load(results, path, model="camenn") -> bool:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = [r for r in results["runs"] if r["model"] == model and r.get("routing")]
    if not runs:
        return False
    routing = runs[0]["routing"]
    tasks = [t for t in F.TASKS if any(k.startswith(f"{t}_expert_") for k in routing)]
    experts = sorted({int(k.split("_expert_")[1].split("_")[0]) for k in routing if "_expert_" in k})
    figure, axis = plt.subplots(figsize=(7, 4))
    width = 0.8 / len(tasks)
    for t, task in enumerate(tasks):
        load = [np.mean([r["routing"][f"{task}_expert_{e}_load"] for r in runs]) for e in experts]
        axis.bar(np.array(experts) + t * width, load, width, label=task)
    axis.axhline(1 / len(experts), color="grey", linestyle=":", label="uniform")
    axis.set_xticks(np.array(experts) + width * (len(tasks) - 1) / 2, [str(e) for e in experts])
    axis.set_xlabel("expert")
    axis.set_ylabel("share of the task's top-k assignments")
    axis.set_title(f"{model}: expert load per task, last segment (mean of {len(runs)} runs)")
    axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return True


def _dataset_lines(results) -> List[str]:
    lines = []
    for name in results["settings"]["datasets"]:
        d = results["datasets"].get(name)
        if not d:
            lines.append(f"- `{name}`: not prepared yet.")
            continue
        check = d.get("metric_check", {})
        lines.append(
            f"- `{name}` ({d['dataset_dir'].split('/')[-1]}): {d['train_clicks']:,} training clicks "
            f"(conversion {d['train_rate']:.3f}) of {d['train_listings']} listings; {d['eval_clicks']:,} eval clicks "
            f"(conversion {d['eval_rate']:.3f}) in {d['eval_rows']:,} eval rows with their ITA/TIA negatives. "
            f"Pipeline run {d['pipeline_seconds']:.0f} s ("
            + (
                ", ".join(
                    f"{k} {v:.0f} s"
                    for k, v in sorted(d["artifacts"]["component_seconds"].items(), key=lambda kv: -kv[1])[:5]
                )
                or "all cached"
            )
            + ")"
            + (f"; {_check_text(check)}." if check.get("tfma") else ".")
        )
    return lines


def _check_text(check: dict) -> str:
    """How the experiments' metric code compares with TFMA on the preparing run's own model."""
    differences = {k: abs(check["experiments"][k] - v) for k, v in check["tfma"].items() if k in check["experiments"]}
    auc = {k: d for k, d in differences.items() if k.endswith("/auc")}
    exact = {k: d for k, d in differences.items() if k not in auc}
    return (
        "the experiments' metric code, run on the preparing pipeline's own model and rows, gives TFMA's "
        f"{', '.join(sorted(exact))} to within {max(exact.values()):.0e}"
        if exact
        else ""
    ) + (
        f", and its AUCs ({', '.join(sorted(auc))}) to within {max(auc.values()):.4f} (TFMA sums AUC over "
        "10,000 threshold buckets; ours is exact)"
        if auc
        else ""
    )


def render(results: dict, results_dir: str) -> str:
    """Writes RESULTS.md and the plots into `results_dir`; returns the RESULTS.md path."""
    settings = results["settings"]
    runs = results["runs"]
    elapsed = results.get("total_seconds")
    when = datetime.date.today().isoformat()
    lines = [
        "# Results: CameNN against its ablations, its baselines and the ceiling",
        "",
        f"Rendered by `camenn experiments` from `results.json` on {when}: {len(runs)} of "
        f"{results.get('planned_runs', len(runs))} planned runs ({len(settings['models'])} models x seeds "
        f"{settings['seeds']} x datasets {settings['datasets']})"
        + (
            f", in {elapsed / 60:.1f} minutes"
            if elapsed is not None
            else (
                f", over {results['span_seconds'] / 60:.1f} minutes from the first run's start to the last one's end "
                "(the command was resumed)"
                if results.get("span_seconds")
                else ""
            )
        )
        + f", {settings.get('workers', 1)} worker process(es) on this project's 2-core CPU, shared with other "
        "work while it ran (load averages in the wall-time table).",
        *(
            [
                "",
                f"**Partial: {len(runs)} of {results['planned_runs']} runs.** `camenn experiments` with the same "
                "settings resumes the rest.",
            ]
            if results.get("planned_runs", len(runs)) > len(runs)
            else []
        ),
        "",
        "## The paper's claims",
        "",
        "Each claim compares CVR AUC on the eval clicks, paired by seed; the interval counts the seed spread and "
        "a bootstrap over eval clicks (`tfx_pipeline/experiments/claims.py`). Supported: the interval lies above 0. "
        "Not supported: it lies below a gain of 0.005 AUC. Undecided: otherwise. Claim (d) is judged on the "
        "pipeline's out-of-fold listing audit (bootstrap over listings; not supported below AUC 0.55). Rows "
        "marked (-) are not the paper's claims but the question a practitioner asks first.",
        "",
        *_claims_table(results),
        "",
        "## Setup",
        "",
        "- How: one run of the whole TFX pipeline per dataset (preprocessing, Transform, the out-of-fold "
        "ListingAudit, a CameNN Trainer, AlignmentEvalExamples, TFMA); then every model is trained in one "
        "process from that run's Transform output with the Trainer's own code (model builder, AdamW with "
        "warmup and linear decay, CVR head started at the training rate, seeded batches with in-batch ITA/TIA "
        "negatives) and scored on AlignmentEvalExamples' rows, the rows TFMA judges, with the pipeline's own "
        "metric code (exact AUC, GAUC by shopper, normalized entropy). No early stopping: the eval split is what "
        "is judged. The practitioner's models are trained on the same training split, all of it whatever the "
        "neural budget (their curve points at the clicks a neural model has seen).",
        *_dataset_lines(results),
        "- Budget: every neural model on a dataset sees the same clicks: "
        + ", ".join(f"{e} epoch(s) on `{d}`" for d, e in settings["epochs"].items())
        + f", batch {settings['batch_size']} clicks (x3 rows with the ITA/TIA negatives), peak learning rate "
        f"{settings['learning_rate'] or 'the model default (2e-3)'}, `{settings['size']}` presets; the learning "
        "curve is measured after each "
        f"of {settings['points']} equal segments. Seeds set the initial weights, batch order and negatives; "
        "a model's later seeds reuse its first seed's traced training graph with every variable and the "
        "optimizer reset (`training.restart`).",
        "- Headroom: (AUC - 0.5) / (oracle AUC - 0.5), the share of what is learnable that the model learned; the "
        "oracle scores each eval click with the probability the simulator drew its label from "
        "(`events_truth.csv`, read only for evaluation).",
        "- ±: sample standard deviation over seeds.",
        "",
    ]
    for dataset in settings["datasets"]:
        lines += [f"## CVR on `{dataset}` (eval clicks)", "", *_cvr_table(results, dataset), ""]
    lines += [
        "## Image-text alignment (eval rows: each eval click's true pair against its hard and other-coarse negatives)",
        "",
    ]
    for dataset in settings["datasets"]:
        lines += [f"`{dataset}`:", "", *_alignment_table(results, dataset), ""]
    lines += [
        "## Finding the simulator's flawed listings",
        "",
        "ROC AUC of a low score against `truth.csv` (0.5 is chance), each kind against the ok listings. "
        "**ListingAudit, out of fold**: the pipeline's audit, each listing scored by an alignment model that "
        "never trained on it (what `camenn audit` reports). **In sample**: each trained model's own ITA/TIA "
        "of every listing's own pair; those models trained on every listing's pair as a positive, flawed or "
        "not, so they grade their own homework.",
        "",
        *_flaw_table(results),
        "",
    ]
    lines += [
        "## Wall time",
        "",
        "Per run: training (the first segment includes tracing the training graph; a model's later seeds "
        "reuse it) and scoring. Preparation per dataset is in Setup. Compute per click differs between "
        "the neural models (parameters and clicks/s here): the claims compare them at equal clicks seen, "
        "not at equal compute.",
        "",
        *_time_table(results),
        "",
    ]
    lines += ["## Plots", ""]
    if plot_learning_curves(results, os.path.join(results_dir, LEARNING_CURVES_PLOT)):
        lines += [f"![Learning curves]({LEARNING_CURVES_PLOT})", ""]
    if plot_audit(results, os.path.join(results_dir, AUDIT_PLOT)):
        lines += [f"![Audit scores, ok against flawed listings]({AUDIT_PLOT})", ""]
    last = settings["datasets"][-1]
    if plot_calibration(results, os.path.join(results_dir, CALIBRATION_PLOT), last):
        lines += [f"![CVR calibration on {last}]({CALIBRATION_PLOT})", ""]
    if plot_expert_load(results, os.path.join(results_dir, EXPERT_LOAD_PLOT)):
        lines += [f"![Expert load per task]({EXPERT_LOAD_PLOT})", ""]
    discussion = os.path.join(results_dir, DISCUSSION_FILE)
    if os.path.exists(discussion):
        with open(discussion) as f:
            lines += [f.read().rstrip(), ""]
    path = os.path.join(results_dir, "RESULTS.md")
    with open(path, "w") as f:
        f.write("\n".join(lines))
    return path
