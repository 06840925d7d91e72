"""Verbs `camenn pipeline run` and `camenn pipeline compile`; TFX, Beam and TensorFlow are imported only
inside the functions the verbs run."""

import argparse
import os
import sys


def _absolute(path: str) -> str:
    """A local path made absolute (the pipeline records it); a URL such as gs://... as it is."""
    return path if "://" in path else os.path.abspath(path)


def _config(args):
    from camenn.tfx_pipeline import configs

    overrides = {}
    if args.dataset:
        overrides["dataset_dir"] = _absolute(args.dataset)
    if args.outputs:
        overrides["outputs_dir"] = _absolute(args.outputs)
    config = configs.from_profile(args.profile, **overrides)
    for assignment in args.set:
        config = configs.parse_override(config, assignment)
    if args.beam_args:
        config = config.replace(extra_beam_args=tuple(a for a in args.beam_args if a != "--"))
    return config


def _add_common(parser, outputs_help):
    from camenn.tfx_pipeline import configs

    parser.add_argument(
        "--dataset",
        default=None,
        help="dataset folder (items.csv, events.csv, images/; README 'Dataset format'); "
        "default: the embedded sample data/sample",
    )
    parser.add_argument(
        "--profile",
        default="small",
        choices=sorted(configs.PROFILES),
        help="tiny (tests), small (a CPU; default) or base (GPUs): model, image encoder, batch and epochs",
    )
    parser.add_argument("--outputs", default=None, help=outputs_help)
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override any knob of tfx_pipeline/configs.py, e.g. --set epochs=5 --set min_cvr_auc=0.6 (repeatable)",
    )
    parser.add_argument(
        "beam_args",
        nargs=argparse.REMAINDER,
        metavar="-- BEAM_OPTION",
        help="Beam options for every Beam component, after `--` (e.g. --runner=DataflowRunner ...)",
    )


def register(subparsers) -> None:
    pipeline = subparsers.add_parser(
        "pipeline",
        help="the TFX pipeline: dataset folder -> blessed, pushed SavedModel (run, compile)",
        description="The CameNN TFX pipeline: Beam preprocessing -> StatisticsGen -> schema -> ExampleValidator "
        "-> Transform -> Trainer -> Evaluator (TFMA) -> Pusher -> serving bundle, and beside the ranker the "
        "candidate retrieval model: RetrievalTrainer -> RetrievalIndex -> RetrievalEvaluator (Recall@K) "
        "-> RetrievalPusher.",
    )
    verbs = pipeline.add_subparsers(dest="pipeline_command", metavar="VERB")
    verbs.required = True

    run = verbs.add_parser(
        "run",
        help="run the pipeline here (LocalDagRunner, Beam DirectRunner, SQLite ML Metadata)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=(
            "Runs the whole pipeline on this machine and prints a summary: rows in and quarantined, metrics,\n"
            "whether the model was blessed, where it was pushed and the TensorBoard command. Components whose\n"
            "inputs did not change are reused from the cache. A killed run resumes training from its last\n"
            "checkpoint when run again.\n\n"
            "Writes under --outputs (default outputs/):\n"
            "  pipelines/camenn/<Component>/...    every component's artifacts (examples, statistics, schema,\n"
            "                                      anomalies, transform graph, model, evaluation, blessing)\n"
            "  metadata/camenn/metadata.db         ML Metadata (SQLite): executions, artifacts, lineage\n"
            "  checkpoints/camenn/                 Trainer checkpoints of unfinished runs\n"
            "  serving_model/camenn/<version>/     the pushed SavedModel (blessed models only), and beside it\n"
            "  serving_model/camenn_retrieval/<version>/   the pushed retrieval model (blessed only),\n"
            "                                      models.config (both models), local_models.config (camenn serve),\n"
            "                                      batching_parameters.txt, docker_run.sh, kubernetes.yaml"
        ),
    )
    _add_common(run, "where everything goes (default outputs/)")
    run.add_argument(
        "--no-cache",
        dest="cache",
        action="store_false",
        help="run every component again even if its inputs did not change",
    )
    run.set_defaults(func=_run)

    compile_ = verbs.add_parser(
        "compile",
        help="compile the pipeline for Kubeflow Pipelines (KubeflowV2DagRunner, JSON spec)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=(
            "Compiles the same pipeline into a Kubeflow Pipelines V2 spec (PipelineJob JSON) for Vertex AI\n"
            "Pipelines or Kubeflow. Paths (--dataset, --outputs) must be reachable from the cluster, e.g.\n"
            "gs://bucket/...; Beam components run on the runner the Beam options name (README: 'Kubeflow').\n\n"
            "Writes --output (default outputs/kubeflow/camenn_pipeline.json)."
        ),
    )
    _add_common(compile_, "pipeline root, metadata and serving base for the cluster, e.g. gs://bucket/camenn")
    compile_.add_argument(
        "--output", default=None, help="spec file to write (default outputs/kubeflow/camenn_pipeline.json)"
    )
    compile_.add_argument(
        "--image",
        default=None,
        help="container image with CameNN installed that runs every component (default: the configs' kubeflow_image)",
    )
    compile_.set_defaults(func=_compile)


def _run(args) -> int:
    from camenn.tfx_pipeline import local_runner, run_summary
    from camenn.tfx_pipeline.components.anomalies_gate import DataAnomaliesError
    from camenn.tfx_pipeline.interrupted_runs import ConcurrentRunError

    config = _config(args)
    if not args.cache:
        config = config.replace(enable_cache=False)
    try:
        local_runner.run(config)
    except DataAnomaliesError as error:
        print(f"camenn pipeline run: stopped: {error}", file=sys.stderr)
        return 3
    except ConcurrentRunError as error:
        print(f"camenn pipeline run: not started: {error}", file=sys.stderr)
        return 4
    print(run_summary.format_summary(run_summary.summarize(config)))
    return 0


def _compile(args) -> int:
    from camenn.tfx_pipeline import kubeflow_v2_runner

    config = _config(args)
    path = kubeflow_v2_runner.compile_pipeline(config, output=args.output, image=args.image)
    print(f"wrote the Kubeflow V2 pipeline spec to {path}")
    return 0


def main(argv=None) -> None:
    from camenn.cli import main as camenn_main

    camenn_main(["pipeline", *(argv or [])])
