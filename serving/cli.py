"""Verbs `camenn serve`, `camenn rank`, `camenn recommend`, `camenn audit`, `camenn listings add` and
`camenn serving-bundle`.

Only argparse here: TensorFlow and gRPC are imported inside the functions the verbs run.
"""

import argparse
import dataclasses
import os
import sys

from camenn.serving import defaults


def _flag_bool(text: str) -> bool:
    if text.lower() in ("1", "true", "yes"):
        return True
    if text.lower() in ("0", "false", "no"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def add_server_flags(parser: argparse.ArgumentParser) -> None:
    """tensorflow_model_server's flags (underscores, as it spells them; dashes work too) plus our limits."""

    def flag(name, **kwargs):
        parser.add_argument(f"--{name}", *([f"--{name.replace('_', '-')}"] if "_" in name else []), **kwargs)

    flag(
        "port", type=int, default=defaults.GRPC_PORT, help="gRPC port (default 8500, TF Serving's); 0 picks a free one"
    )
    flag(
        "host",
        default="127.0.0.1",
        help="address to bind (default 127.0.0.1: this machine only; 0.0.0.0 to serve the network)",
    )
    flag("rest_api_port", type=int, default=0, help="accepted for TF Serving compatibility; no REST API is served")
    flag("model_name", default=defaults.MODEL_NAME, help="name of the single model to serve (default camenn)")
    flag(
        "model_base_path",
        default=str(defaults.MODEL_BASE_PATH),
        help="folder whose numbered subfolders are SavedModel versions (default outputs/serving_model/camenn)",
    )
    flag(
        "model_config_file",
        default="",
        help="TF Serving models.config (ModelServerConfig text proto); overrides --model_name/--model_base_path",
    )
    flag(
        "file_system_poll_wait_seconds",
        type=float,
        default=1.0,
        help="seconds between looks for new versions (default 1; 0 loads once and never looks again)",
    )
    flag(
        "enable_model_warmup",
        type=_flag_bool,
        default=True,
        help="replay <version>/assets.extra/tf_serving_warmup_requests before serving a version (default true)",
    )
    flag("max_batch_size", type=int, default=1024, help="rows one Predict may carry (default 1024)")
    flag(
        "max_concurrent_requests",
        type=int,
        default=0,
        help="requests in flight (running or queued) before new ones get RESOURCE_EXHAUSTED (default 0: one per "
        f"CPU this process may use, {defaults.usable_cpus()} here; more in flight than the CPUs run only adds "
        "queueing to every admitted request's latency)",
    )
    flag(
        "grpc_max_threads",
        type=int,
        default=0,
        help="threads that run requests (default 0: as many as --max_concurrent_requests)",
    )
    flag(
        "max_message_bytes",
        type=int,
        default=64 << 20,
        help="largest request or response in bytes (default 64 MiB; 100 candidates of 4x1280 floats ~ 2 MiB)",
    )
    flag(
        "grace_period_seconds",
        type=float,
        default=10.0,
        help="on SIGTERM, how long requests in flight may take to finish (default 10)",
    )


def _client_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1", help="server address (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=defaults.GRPC_PORT, help="server gRPC port (default 8500)")
    parser.add_argument("--model-name", default=defaults.MODEL_NAME, help="served model (default camenn)")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds per request (default 30)")


def _client(args):
    from camenn.serving.client import RankingClient

    return RankingClient(args.host, args.port, args.model_name, timeout=args.timeout)


def _report_failure(args, error) -> int:
    """One clear line instead of a stack trace for what a user can fix."""
    from camenn.serving.client import PredictionError, UnknownItemsError

    if isinstance(error, PredictionError) and error.code.name in ("UNAVAILABLE", "DEADLINE_EXCEEDED"):
        print(
            f"error: no answer from a server at {args.host}:{args.port} ({error}); is `camenn serve` running?",
            file=sys.stderr,
        )
        return 1
    if isinstance(error, (UnknownItemsError, PredictionError, FileNotFoundError, KeyError, ValueError)):
        print(f"error: {error}", file=sys.stderr)
        return 2
    raise error


def _serve(args) -> int:
    from camenn.serving.server import serve

    return serve(args)


def _rank(args) -> int:
    item_ids = [i.strip() for i in args.items.split(",") if i.strip()]
    try:
        with _client(args) as client:
            ranked = client.rank(args.user, item_ids, hour=args.hour, distance_km=args.distance_km, with_titles=True)
    except Exception as error:  # noqa: BLE001 - _report_failure re-raises what is not a user's error
        return _report_failure(args, error)
    width = max([5, *(len(item.item_id) for item in ranked)])
    print(f"{'rank':>4}  {'item':<{width}}  {'CVR':>6} {'ITA':>6} {'TIA':>6}  title")
    for rank, item in enumerate(ranked, 1):
        print(f"{rank:>4}  {item.item_id:<{width}}  {item.cvr:6.4f} {item.ita:6.4f} {item.tia:6.4f}  {item.title}")
    if ranked.unknown_item_ids:
        print(f"not ranked, unknown to the served model version: {', '.join(ranked.unknown_item_ids)}")
    return 0


def _recommend(args) -> int:
    from camenn.serving.recommend import RecommendationClient, format_table

    demote_below = None if args.no_demote else args.demote_below
    try:
        with RecommendationClient(
            args.host, args.port, args.model_name, args.retrieval_model_name, timeout=args.timeout
        ) as client:
            found = client.recommend(
                args.user, k=args.k, hour=args.hour, distance_km=args.distance_km, demote_below=demote_below
            )
    except Exception as error:  # noqa: BLE001 - _report_failure re-raises what is not a user's error
        return _report_failure(args, error)
    source = (
        f"{found.candidates} candidates from {args.retrieval_model_name}"
        if found.known_shopper
        else f"shopper {args.user} is unknown to {args.retrieval_model_name} (no clicks in its training data): "
        f"the {found.candidates} most popular listings"
    )
    print(
        f"top {len(found)} for shopper {args.user}{'' if args.hour is None else f' at {args.hour}:00'} "
        f"({source}, ranked by {args.model_name} CVR"
        + (f"; listings the audit flags, min(ITA, TIA) < {demote_below}, last)" if demote_below is not None else ")")
    )
    print(format_table(found))
    if found.unknown_item_ids:
        print(f"not ranked, unknown to the ranker's version: {', '.join(found.unknown_item_ids)}")
    return 0


def _audit(args) -> int:
    from camenn.serving import audit

    try:
        report = args.report or audit.newest_report(args.pipeline_root)
        audits = audit.audit_listings(audit.read_report(report), args.merchant)
    except (FileNotFoundError, KeyError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    output = args.output or defaults.AUDIT_DIR / f"audit_{args.merchant or 'all'}.csv"
    audit.write_csv(audits, output, args.threshold)
    bad = audit.flagged(audits, args.threshold)
    who = f"merchant {args.merchant}" if args.merchant else "all merchants"
    print(
        f"{len(bad)} of {len(audits)} listings of {who} have a photo and text that disagree "
        f"(ITA or TIA under {args.threshold}), worst first:"
    )
    if bad:
        print(audit.format_table(bad[: args.limit], args.threshold))
        if len(bad) > args.limit:
            print(f"... {len(bad) - args.limit} more in the CSV")
    print(f"every listing's scores: {output} (out-of-fold scores from {report})")
    if args.truth:
        result = audit.evaluate_audit(audits, audit.read_truth(args.truth), args.threshold)
        counts = ("listings", "inaccurate")
        print(
            f"against the truth in {args.truth}:",
            ", ".join(f"{k} {int(v)}" if k in counts else f"{k} {v:.3f}" for k, v in result.items()),
        )
    return 0


def _listings_add(args) -> int:
    import tempfile

    from camenn.serving import listings
    from camenn.serving.servables import version_directories

    try:
        if args.items:
            features = listings.read_listing_features(args.items)
        else:
            versions = version_directories(args.model_base_path)
            if not versions:
                raise FileNotFoundError(f"no SavedModel version under {args.model_base_path}")
            encoding = listings.read_encoding(versions[max(versions)])
            from camenn.preprocessing.pipeline import format_summary, preprocess

            with tempfile.TemporaryDirectory(prefix="camenn-listings-") as out:
                summary = preprocess(
                    args.dataset,
                    out,
                    image_encoder=encoding["image_encoder"],
                    image_preset=encoding["image_preset"],
                    grid=encoding["grid"],
                    max_text_length=int(encoding["max_text_length"]),
                    text_encoder=encoding["text_encoder"],
                    num_text_tokens=int(encoding["num_text_tokens"]),
                    items_only=True,
                    beam_args=[a for a in args.beam_args if a != "--"],
                    cache_dir=args.cache_dir,
                )
                print(format_summary(summary))
                if not summary["items"]["out"]:
                    print("error: no listing of the dataset passed the checks; nothing to add", file=sys.stderr)
                    return 2
                features = listings.read_listing_features(out)
        version, counts = listings.add_listings(args.model_base_path, features)
    except (FileNotFoundError, KeyError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(
        f"wrote {version}: {counts['listings']} listings ({counts['added']} added, {counts['replaced']} "
        "replaced); a server watching the base path serves it once loaded"
    )
    return 0


def _serving_bundle(args) -> int:
    from camenn.serving import bundle, examples

    warmup = []
    if args.warmup_examples:
        try:
            warmup = examples.read_tfrecords(args.warmup_examples)[: args.num_warmup_examples]
        except FileNotFoundError as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
    # The retrieval model is served beside the ranker whenever it has been pushed there.
    more = [
        name
        for name in (defaults.RETRIEVAL_MODEL_NAME,)
        if name != args.model_name and os.path.isdir(os.path.join(args.serving_base, name))
    ]
    written = bundle.write_serving_bundle(
        args.serving_base, args.model_name, warmup, args.version, image=args.image, more_models=more
    )
    for name, path in dataclasses.asdict(written).items():
        if path is not None:
            print(f"{name}: {path}")
    return 0


def register(subparsers) -> None:
    serve = subparsers.add_parser(
        "serve",
        help="serve pushed SavedModels over gRPC (TensorFlow Serving's PredictionService)",
        description="Serves the newest version under --model_base_path (or each model of --model_config_file) "
        "over gRPC with TensorFlow Serving's PredictionService (Predict, GetModelMetadata) and "
        "ModelService (GetModelStatus), and loads newly pushed versions without a restart. Writes "
        "nothing; logs to stderr. Stops cleanly on SIGTERM.",
    )
    add_server_flags(serve)
    serve.set_defaults(func=_serve)

    rank = subparsers.add_parser(
        "rank",
        help="rank candidate items for a shopper through the server (one gRPC Predict)",
        description="Sends one Predict to the `rank` signature with the shopper, the context and the candidate "
        "item ids (the model version looks the listings up itself), and prints the items ranked "
        "by CVR with their ITA and TIA scores and titles (a second request, to `listings`). "
        "Unknown item ids are reported and the rest ranked. Writes nothing.",
    )
    rank.add_argument("--user", required=True, help="shopper id")
    rank.add_argument("--items", required=True, help="candidate item ids, comma-separated")
    rank.add_argument("--hour", type=int, default=None, help="local hour of the request, 0-23 (default: now)")
    rank.add_argument(
        "--distance-km",
        type=float,
        default=defaults.DISTANCE_KM,
        help=f"shopper-to-store distance for every candidate (default {defaults.DISTANCE_KM} km)",
    )
    _client_flags(rank)
    rank.set_defaults(func=_rank)

    recommend = subparsers.add_parser(
        "recommend",
        help="recommend listings for a shopper: retrieval, then ranking (two gRPC Predicts)",
        description="Asks the retrieval model (camenn_retrieval) for the shopper's top listings at that hour "
        "(one Predict; an unknown shopper gets the most popular listings, and the output says so), "
        "ranks them with the ranker (camenn, `rank`: one Predict), and prints the top k with title, "
        "category, price, CVR, ITA and TIA. Listings whose out-of-fold alignment from the listing "
        "audit, min(ITA, TIA), is under --demote-below move below the others. The server must serve "
        "both models: camenn serve --model_config_file outputs/serving_model/local_models.config. "
        "Writes nothing.",
    )
    recommend.add_argument("--user", required=True, help="shopper id")
    recommend.add_argument("--k", type=int, default=10, help="listings to show (default 10)")
    recommend.add_argument("--hour", type=int, default=None, help="local hour of the request, 0-23 (default: now)")
    recommend.add_argument(
        "--distance-km",
        type=float,
        default=defaults.DISTANCE_KM,
        help=f"shopper-to-store distance for every candidate (default {defaults.DISTANCE_KM} km)",
    )
    recommend.add_argument(
        "--demote-below",
        type=float,
        default=0.5,
        help="demote listings whose audit alignment min(ITA, TIA) is under this (default 0.5, "
        "camenn audit's flag threshold)",
    )
    recommend.add_argument("--no-demote", action="store_true", help="rank by CVR alone")
    recommend.add_argument(
        "--retrieval-model-name",
        default=defaults.RETRIEVAL_MODEL_NAME,
        help=f"served retrieval model (default {defaults.RETRIEVAL_MODEL_NAME})",
    )
    _client_flags(recommend)
    recommend.set_defaults(func=_recommend)

    audit = subparsers.add_parser(
        "audit",
        help="find listings whose photo and text disagree (low ITA or TIA), worst first",
        description="Reads the pipeline's listing audit (each listing scored out of fold: by a model that "
        "never trained on it) and reports a merchant's listings (or all) with a low image-to-text "
        "(ITA) or text-to-image (TIA) alignment, worst first, as a table. Writes every audited "
        "listing's scores to a CSV (default outputs/audit/audit_<merchant|all>.csv).",
    )
    who = audit.add_mutually_exclusive_group(required=True)
    who.add_argument("--merchant", help="audit this merchant's listings")
    who.add_argument("--all", action="store_true", help="audit every merchant's listings")
    audit.add_argument("--threshold", type=float, default=0.5, help="flag ITA or TIA under this (default 0.5)")
    audit.add_argument("--limit", type=int, default=20, help="table rows to print (default 20; the CSV has all)")
    audit.add_argument("--output", default=None, help="CSV to write")
    audit.add_argument(
        "--truth",
        default=None,
        help="truth CSV (item_id, quality) to measure the audit against, e.g. data/sample/truth.csv",
    )
    audit.add_argument("--report", default=None, help="a listing audit CSV (default: the newest pipeline run's)")
    audit.add_argument(
        "--pipeline-root",
        default=str(defaults.PIPELINE_ROOT),
        help="where to look for the newest run (default outputs/pipelines/camenn)",
    )
    audit.set_defaults(func=_audit)

    listings = subparsers.add_parser(
        "listings", help="add new or edited listings to a served model version, without retraining"
    )
    listings_verbs = listings.add_subparsers(dest="listings_command", metavar="VERB")
    listings_verbs.required = True
    add = listings_verbs.add_parser(
        "add",
        help="encode listings against the newest version and write them into the next one",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Encodes the listings of a dataset folder (items.csv and photos; events.csv is not needed)\n"
        "the way the newest version under --model_base_path was trained (its recorded text and image\n"
        "encoders), runs them through that version's own encode_listings signature, and writes the\n"
        "version again as the next version number with the listings in its listing table (an item id\n"
        "it already holds is replaced: an edited listing). Bad rows are quarantined and counted as in\n"
        "`camenn preprocess`. `camenn serve` and TensorFlow Serving load the new version as any push.",
    )
    source = add.add_mutually_exclusive_group(required=True)
    source.add_argument("--dataset", help="dataset folder with items.csv and the photos")
    source.add_argument("--items", help="listings `camenn preprocess` already encoded (its OUT or OUT/items)")
    add.add_argument(
        "--model_base_path",
        "--model-base-path",
        default=str(defaults.MODEL_BASE_PATH),
        help="folder of the model's numbered versions (default outputs/serving_model/camenn)",
    )
    add.add_argument("--cache-dir", default=None, help="text and patch encoding cache (as `camenn preprocess`)")
    add.add_argument(
        "beam_args",
        nargs=argparse.REMAINDER,
        metavar="-- BEAM_OPTION",
        help="Apache Beam pipeline options for the encoding, after `--`",
    )
    add.set_defaults(func=_listings_add)

    bundle = subparsers.add_parser(
        "serving-bundle",
        help="write the TensorFlow Serving bundle beside pushed models",
        description="Writes into --serving-base: models.config (with camenn_retrieval too when it is there), "
        "local_models.config (the same with this machine's paths, for camenn serve), "
        "batching_parameters.txt, docker_run.sh and "
        "kubernetes.yaml (ConfigMap, PersistentVolumeClaim, Deployment, Service for the "
        "tensorflow/serving image), and warmup requests into the newest version's "
        "assets.extra/tf_serving_warmup_requests when --warmup-examples is given.",
    )
    bundle.add_argument(
        "--serving-base",
        default=str(defaults.SERVING_BASE),
        help="folder holding <model-name>/<version>/ (default outputs/serving_model)",
    )
    bundle.add_argument("--model-name", default=defaults.MODEL_NAME, help="model folder and name (default camenn)")
    bundle.add_argument("--version", type=int, default=None, help="version to warm up (default: the newest)")
    bundle.add_argument(
        "--warmup-examples",
        default="",
        help="glob of GZIP TFRecords of raw tf.Examples, e.g. 'OUT/examples/eval/*.tfrecord.gz'",
    )
    bundle.add_argument("--num-warmup-examples", type=int, default=100, help="rows to take (default 100)")
    bundle.add_argument(
        "--image",
        default=defaults.TF_SERVING_IMAGE,
        help=f"TensorFlow Serving image (default {defaults.TF_SERVING_IMAGE})",
    )
    bundle.set_defaults(func=_serving_bundle)
