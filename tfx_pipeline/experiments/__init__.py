"""`camenn experiments`: does CameNN beat simpler models, how far is each from the best possible, and do
the paper's claims hold on our data? (`runner` says how a result is made; `report` renders it.)

Modules, one job each: `oracle` (the simulator's true click probabilities), `data` (a pipeline run's
training clicks, eval rows and catalog as arrays), `training` (a neural model with the Trainer's code,
and its learning curve), `practitioner` (logistic regression and gradient-boosted trees on hand
features), `scoring` (the metrics), `claims` (verdicts with intervals), `runner` (plan, workers,
resumption), `report` (RESULTS.md and plots).

This module holds only the command line; heavy imports happen inside the function the verb runs.
"""

import argparse
import json
import os

# What 60 minutes of a shared 2-core CPU allow (docs/RESULTS.md has the measured times).
DEFAULT_EPOCHS = {"sample": 2.0, "sample_60k": 0.5}
DEFAULT_POINTS = 4
DEFAULT_BATCH = 64
DEFAULT_LEARNING_RATE = 0.0  # the model's own default (CameNNMultiTask.compile)
# The pipeline run that prepares each dataset: its Trainer is the reference model whose TFMA metrics check
# the experiments' metric code, so a short one; the Evaluator without slices (the experiments slice the
# rows themselves); no baseline model to judge against.
PREPARE_SETTINGS = dict(
    epochs=1,
    steps_per_epoch=20,
    validate_each_epoch=False,
    early_stopping_patience=0,
    bless_against_last=False,
    slice_features=(),
    seed=0,
)


def register(subparsers) -> None:
    from camenn.tfx_pipeline.experiments.runner import LARGE, MODELS, SAMPLE

    parser = subparsers.add_parser(
        "experiments",
        help="CameNN against ablations, baselines and the oracle, on the sample and a 60k-click set; "
        "writes docs/RESULTS.md",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=(
            "Runs the TFX pipeline once per dataset (the embedded sample, and a 60,000-click simulated set built\n"
            "on the fly under --outputs with the same listings), then trains every model x seed from its\n"
            "Transform output with the Trainer's code, scores all on the Evaluator's rows against the\n"
            "oracle (the simulator's true click probabilities), and judges the paper's claims.\n"
            f"Models: {', '.join(MODELS)}.\n\n"
            "Writes:\n"
            "  --outputs (default outputs/experiments)  the 60k dataset, each dataset's pipeline run and\n"
            "                                          prepared.json, eval predictions, worker-<i>/results.json\n"
            "                                          (a rerun with the same settings resumes)\n"
            "  --results (default docs/)               results.json, RESULTS.md, learning_curves.png,\n"
            "                                          audit_scores.png, calibration.png, expert_load.png"
        ),
    )
    parser.add_argument(
        "--datasets",
        default=f"{SAMPLE},{LARGE}",
        help=f"comma-separated: {SAMPLE}, {LARGE} or a dataset folder (default %(default)s)",
    )
    parser.add_argument(
        "--source",
        default=None,
        help="the Grocery Store Dataset's dataset/ folder, to build the 60k set "
        "(default ../shared/data/grocery_store beside the repository)",
    )
    parser.add_argument("--outputs", default=None, help="default outputs/experiments")
    parser.add_argument("--results", default=None, help="where results.json, RESULTS.md and plots go (default docs/)")
    parser.add_argument("--models", default=",".join(MODELS), help="comma-separated, default all: %(default)s")
    parser.add_argument("--seeds", type=int, default=3, help="seeds 0..N-1 (default %(default)s)")
    parser.add_argument(
        "--size",
        default="mini",
        choices=("tiny", "mini", "small", "base"),
        help="neural model presets <family>_<size> (default %(default)s; base: GPUs)",
    )
    parser.add_argument(
        "--epochs",
        default=",".join(f"{k}={v:g}" for k, v in DEFAULT_EPOCHS.items()),
        help="passes over each dataset's training clicks, every neural model the same "
        "(default %(default)s; another dataset: DATASET=EPOCHS)",
    )
    parser.add_argument("--batch-size", type=int, default=DEFAULT_BATCH, help="clicks per step (default %(default)s)")
    parser.add_argument(
        "--learning-rate",
        type=float,
        default=DEFAULT_LEARNING_RATE,
        help="peak learning rate of every neural model (default 0: the model's own, 2e-3)",
    )
    parser.add_argument(
        "--points", type=int, default=DEFAULT_POINTS, help="learning-curve points per run (default %(default)s)"
    )
    parser.add_argument(
        "--profile", default="small", help="pipeline profile of the preparing runs (default %(default)s)"
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a knob of tfx_pipeline/configs.py in the preparing runs (repeatable)",
    )
    parser.add_argument("--workers", type=int, default=2, help="parallel worker processes (default %(default)s)")
    parser.add_argument(
        "--render-only",
        action="store_true",
        help="only render RESULTS.md: from the workers' results under --outputs when there are any "
        "(also while a run goes on), else from --results' results.json",
    )
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)  # a worker's share: INDEX/COUNT
    parser.add_argument("--settings-json", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--base-json", default=None, help=argparse.SUPPRESS)
    parser.set_defaults(func=_run)


def settings_from_args(args) -> dict:
    """The settings a results file is valid for (a rerun with other settings starts afresh)."""
    from camenn import paths
    from camenn.tfx_pipeline.experiments.runner import LARGE, SAMPLE

    datasets, dataset_paths = [], {}
    for entry in (d for d in args.datasets.split(",") if d):
        name = entry if entry in (SAMPLE, LARGE) else os.path.basename(os.path.abspath(entry))
        if name not in (SAMPLE, LARGE):
            dataset_paths[name] = os.path.abspath(entry)
        datasets.append(name)
    epochs = dict(DEFAULT_EPOCHS)
    for item in args.epochs.split(","):
        name, _, value = item.partition("=")
        epochs[name] = float(value)
    source = args.source or str(paths.REPO_ROOT.parent / "shared" / "data" / "grocery_store")
    return {
        "datasets": datasets,
        "models": [m for m in args.models.split(",") if m],
        "seeds": list(range(args.seeds)),
        "size": args.size,
        "epochs": {d: epochs.get(d, 1.0) for d in datasets},
        "batch_size": args.batch_size,
        "learning_rate": args.learning_rate,
        "points": args.points,
        "source": os.path.abspath(source),
        "dataset_paths": dataset_paths,
    }


def base_config(args, settings):
    """The pipeline config of the preparing runs (dataset and outputs folders are set per dataset)."""
    from camenn.tfx_pipeline import configs

    config = configs.from_profile(
        args.profile,
        model_preset=f"camenn_{settings['size']}",
        batch_size=settings["batch_size"],
        learning_rate=settings["learning_rate"],
        **PREPARE_SETTINGS,
    )
    for assignment in args.set:
        config = configs.parse_override(config, assignment)
    return config


def _run(args) -> int:
    from camenn import paths
    from camenn.tfx_pipeline import configs
    from camenn.tfx_pipeline.experiments import report, runner

    results_dir = os.path.abspath(args.results or os.path.join(paths.REPO_ROOT, "docs"))
    outputs_dir = os.path.abspath(args.outputs or os.path.join(paths.DEFAULT_OUTPUTS, "experiments"))
    if args.worker:
        index, count = (int(n) for n in args.worker.split("/"))
        runner.run_worker(
            json.loads(args.settings_json),
            configs.PipelineConfig.from_json(args.base_json),
            outputs_dir,
            shard=(index, count),
        )
        return 0
    if args.render_only:
        merged = runner.merge_existing(outputs_dir, results_dir)  # what the workers finished so far, if any
        if merged is None:
            with open(os.path.join(results_dir, runner.RESULTS_FILE)) as f:
                merged = json.load(f)
        print(report.render(merged, results_dir))
        return 0
    settings = settings_from_args(args)
    unknown = sorted(set(settings["models"]) - set(runner.MODELS))
    if unknown:
        raise SystemExit(f"camenn experiments: unknown models {unknown}; choose from {list(runner.MODELS)}")
    results = runner.run_experiments(
        settings, base_config(args, settings), outputs_dir, results_dir, workers=args.workers
    )
    minutes = "n/a" if results["total_seconds"] is None else f"{results['total_seconds'] / 60:.1f}"
    print(
        f"{len(results['runs'])} of {results['planned_runs']} runs; this command took {minutes} min; "
        f"wrote {results_dir}"
    )
    return 0
