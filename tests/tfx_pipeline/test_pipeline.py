"""The TFX pipeline end to end on the tiny profile: one run (tests/conftest.py `pipeline_run`: killed during
preprocessing, during Transform and mid-training, then completed), then runs against the same outputs
and metadata store, which reuse the cached components: a rerun with nothing changed, a dataset whose
column changed type, and a deliberately broken (untrained) model."""

import csv
import functools
import glob
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from camenn.model import features as F

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parents[1]
COMPONENTS = (
    "PreprocessDataset",
    "StatisticsGen",
    "ContractSchemaGen",
    "ExampleValidator",
    "AnomaliesGate",
    "Transform",
    "ListingAudit",
    "RetrievalTrainer",
    "RetrievalIndex",
    "latest_blessed_retrieval_model_resolver",
    "RetrievalEvaluator",
    "RetrievalPusher",
    "Trainer",
    "ListingTable",
    "AlignmentEvalExamples",
    "latest_blessed_model_resolver",
    "Evaluator",
    "EvaluationTensorBoard",
    "Pusher",
    "ServingBundle",
)
RESOLVERS = ("latest_blessed_model_resolver", "latest_blessed_retrieval_model_resolver")
BROKEN_RUN_FN = "broken_trainer.run_fn"

pytestmark = pytest.mark.slow


def _summary(config, run_id=None):
    from camenn.tfx_pipeline import run_summary

    return run_summary.summarize(config, run_id)


def _run_ids(config):
    from camenn.tfx_pipeline import run_summary

    return run_summary.run_ids(run_summary.open_store(config.metadata_path), config.pipeline_name)


def test_every_component_ran_and_the_model_was_pushed(pipeline_run):
    config, summary = pipeline_run
    # The killed first attempt completed the components before the Trainer; this run reused them.
    assert set(summary["components"]) == set(COMPONENTS)
    assert set(summary["components"].values()) <= {"COMPLETE", "CACHED"}, summary["components"]
    assert all(summary["components"][c] == "COMPLETE" for c in ("Trainer", "Evaluator", "Pusher"))
    assert summary["blessed"], summary["failures"]
    pushed = Path(summary["pushed_path"])
    assert pushed.parent == Path(config.serving_model_dir) / "camenn" and pushed.name.isdigit()
    assert (pushed / "saved_model.pb").is_file()
    assert (pushed / "assets.extra" / "tf_serving_warmup_requests").is_file()
    pre = summary["preprocessing"]
    assert pre["events"]["in"] == pre["events"]["out"] + pre["events"]["quarantined"] > 0
    for key in (
        f"{F.CVR}/auc",
        f"{F.CVR}/gauc",
        f"{F.CVR}/log_loss",
        f"{F.CVR}/normalized_entropy",
        f"{F.CVR}/log_loss_vs_prior",
        f"{F.CVR}/calibration",
        f"{F.ITA}/auc",
        f"{F.TIA}/auc",
    ):
        assert 0.0 <= summary["metrics"][key] < 10.0, key
    for kind in (F.HARD_NEGATIVE, F.OTHER_COARSE_NEGATIVE):
        assert {f"{F.ITA}/auc", f"{F.TIA}/auc"} <= set(summary["metrics_by_negative_kind"][kind])


def test_the_pushed_version_holds_every_listing_and_ranks_by_item_id(pipeline_run):
    import numpy as np
    import tensorflow as tf

    from camenn.serving import listings

    config, summary = pipeline_run
    pushed = summary["pushed_path"]
    table = listings.read_table(tf.saved_model.load(pushed))
    assert len(table["item_ids"]) == summary["preprocessing"]["items"]["out"]
    assert json.loads(Path(pushed, listings.ENCODING_FILE).read_text()) == config.listing_encoding()
    # The table is what the version's own encode_listings makes of the catalog today.
    loaded = tf.saved_model.load(pushed)
    items = listings.read_listing_features(
        glob.glob(os.path.join(config.pipeline_root, "PreprocessDataset", "items", "*"))[0]
    )
    fresh = listings.encode(loaded, items)
    rows = {item_id: row for row, item_id in enumerate(table["item_ids"])}
    order = [rows[i] for i in items[F.ITEM_ID]]
    for name, value in fresh.items():
        np.testing.assert_allclose(table[name][order], value, rtol=1e-4, atol=1e-5, err_msg=name)
    ranked = loaded.signatures["rank"](
        item_id=tf.constant(items[F.ITEM_ID][:5]),
        shopper_id=tf.constant([b"s0001"] * 5),
        hour=tf.constant([18] * 5, tf.int64),
        distance_km=tf.constant([1.5] * 5),
    )
    assert ranked[F.CVR].shape == (5,) and np.all((ranked[F.CVR].numpy() > 0) & (ranked[F.CVR].numpy() < 1))


def test_metrics_are_sliced_and_the_truth_file_only_reaches_the_evaluator(pipeline_run):
    import tensorflow_model_analysis as tfma

    from camenn.tfx_pipeline.run_summary import node_runs, open_store

    config, summary = pipeline_run
    nodes = node_runs(open_store(config.metadata_path), summary["run_id"])
    sliced = {
        key.column
        for metrics in tfma.load_metrics(nodes["Evaluator"].output("evaluation").uri)
        for key in metrics.slice_key.single_slice_keys
    }
    assert sliced == {F.CATEGORY, F.MERCHANT_SIZE, F.LISTING_QUALITY, F.NEGATIVE_KIND}
    # The model's inputs come from Transform, whose raw schema has no quality feature.
    schema_uri = nodes["ContractSchemaGen"].output("schema").uri
    assert F.LISTING_QUALITY not in Path(schema_uri, "schema.pbtxt").read_text()


def test_tensorboard_has_losses_aucs_expert_load_and_learning_rate_per_task(pipeline_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    _, summary = pipeline_run
    events = EventAccumulator(os.path.join(summary["tensorboard_logdir"], "train"))
    events.Reload()
    tags = set(events.Tags()["tensors"])
    for task in F.TASKS:
        assert {f"epoch_{task}_loss", f"epoch_{task}_auc", f"epoch_{task}_expert_0_load"} <= tags, sorted(tags)
    assert "epoch_learning_rate" in tags


def test_pushed_model_scores_a_tf_example_in_a_fresh_process(pipeline_run):
    config, summary = pipeline_run
    examples = glob.glob(os.path.join(config.pipeline_root, "PreprocessDataset", "examples", "*", "Split-eval", "*"))
    script = textwrap.dedent("""
        import json, sys
        import tensorflow as tf
        model = tf.saved_model.load(sys.argv[1])
        records = list(tf.data.TFRecordDataset(sys.argv[2:], compression_type="GZIP").take(5))
        scores = model.signatures["serving_default"](examples=tf.stack(records))
        print(json.dumps({k: v.numpy().tolist() for k, v in scores.items()}))
        print(json.dumps(sorted(model.signatures)))
    """)
    out = (
        subprocess.run(
            [sys.executable, "-c", script, summary["pushed_path"], *examples],
            capture_output=True,
            text=True,
            timeout=300,
            check=True,
        )
        .stdout.strip()
        .splitlines()
    )
    scores, signatures = json.loads(out[-2]), json.loads(out[-1])
    assert set(scores) == set(F.TASKS)
    assert set(signatures) == {"serving_default", "dense", "rank", "listings", "encode_listings"}
    for values in scores.values():
        assert len(values) == 5 and all(0.0 <= v <= 1.0 for v in values)


def test_the_retrieval_model_was_pushed_beside_the_ranker_and_the_bundle_lists_both(pipeline_run):
    config, summary = pipeline_run
    # Each ran in this run, or in the killed runs before it and was reused (the retrieval Trainer finishes
    # before the ranker's Trainer, where the last kill lands).
    steps = ("RetrievalTrainer", "RetrievalIndex", "RetrievalEvaluator", "RetrievalPusher")
    assert {summary["components"][c] for c in steps} <= {"COMPLETE", "CACHED"}, summary["components"]
    assert summary["retrieval"]["blessed"] and summary["retrieval_pushed"], summary["retrieval"]["failures"]
    retrieval = Path(summary["retrieval_pushed_path"])
    assert retrieval.parent == Path(config.serving_model_dir) / "camenn_retrieval" and retrieval.name.isdigit()
    assert (retrieval / "assets.extra" / "tf_serving_warmup_requests").is_file()
    # Every pushed model is listed, the ranker first (test_every_component_ran... requires it pushed).
    pushed = ["camenn"] * summary["pushed"] + ["camenn_retrieval"]
    for name in ("models.config", "local_models.config"):
        text = (Path(config.serving_model_dir) / name).read_text()
        assert [line.split('"')[1] for line in text.splitlines() if line.strip().startswith("name:")] == pushed, text


def test_pushed_retrieval_model_answers_without_keras_and_beats_random(pipeline_run):
    config, summary = pipeline_run
    script = textwrap.dedent("""
        import json, sys
        import tensorflow as tf
        model = tf.saved_model.load(sys.argv[1])
        out = model.signatures["serving_default"](shopper_id=tf.constant([b"s0001", b"nobody"]),
                                                  hour=tf.constant([18, 18], tf.int64))
        loaded = sorted(m for m in sys.modules if m.partition(".")[0] in
                        ("keras", "keras_hub", "tf_keras", "tensorflow_text", "tensorflow_recommenders"))
        print(json.dumps({"shape": out["item_id"].shape.as_list(), "known": out["known_shopper"].numpy().tolist(),
                          "loaded": loaded}))
    """)
    result = subprocess.run(
        [
            sys.executable,
            str(REPO_ROOT / "tests" / "serving" / "without_keras.py"),
            "-c",
            script,
            summary["retrieval_pushed_path"],
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["shape"] == [2, config.retrieval_top_k] and out["known"] == [True, False] and out["loaded"] == []
    metrics = summary["retrieval"]["metrics"]
    assert metrics["listings"] == summary["preprocessing"]["items"]["out"]  # every good listing is indexed
    for k in config.retrieval_recall_ks:
        assert metrics[f"recall@{k}"] > metrics[f"random_recall@{k}"], k


def test_second_run_with_nothing_changed_reuses_every_output(pipeline_run):
    from camenn.tfx_pipeline import local_runner
    from camenn.tfx_pipeline.run_summary import node_runs, open_store

    config, first = pipeline_run
    # The first run had no blessed model to compare with; now its own model is the baseline, a new input
    # of the Evaluator, which therefore judges again (and its blessing is pushed again). Everything up
    # to the Trainer is reused.
    local_runner.run(config)
    second = _summary(config)
    judged_again = (
        "RetrievalEvaluator",
        "RetrievalPusher",
        "Evaluator",
        "EvaluationTensorBoard",
        "Pusher",
        "ServingBundle",
    )  # the evaluators and what depends on them
    assert {n: s for n, s in second["components"].items() if s != "CACHED"} == {
        **{n: "COMPLETE" for n in RESOLVERS},
        **{n: "COMPLETE" for n in judged_again},
    }
    store = open_store(config.metadata_path)
    model = node_runs(store, first["run_id"])["ListingTable"].output("table_model")  # what was judged and pushed
    evaluation = node_runs(store, second["run_id"])["Evaluator"].execution
    # (one event per artifact: the same model as `model` and as `baseline_model` is one event, two keys)
    baseline = [
        e.artifact_id
        for e in store.get_events_by_execution_ids([evaluation.id])
        if e.type == e.INPUT and any(step.key == "baseline_model" for step in e.path.steps)
    ]
    assert baseline == [model.id]
    # The same model on the same rows (TFMA's sums may differ in the last bits when it runs two models).
    assert second["blessed"] and second["metrics"] == pytest.approx(first["metrics"], rel=1e-6)
    # From then on the inputs stay the same, and so does every output.
    local_runner.run(config)
    third = _summary(config)["components"]
    assert {n: s for n, s in third.items() if s != "CACHED"} == {n: "COMPLETE" for n in RESOLVERS}


def test_a_fix_under_serving_reruns_the_serving_bundle_and_nothing_upstream(pipeline_run, tmp_path, monkeypatch):
    from camenn.tfx_pipeline import code_version, local_runner, pipeline

    config, _ = pipeline_run
    for folder in ("camenn", "model", "preprocessing", "serving", "simulator", "tfx_pipeline"):
        shutil.copytree(REPO_ROOT / folder, tmp_path / folder, ignore=shutil.ignore_patterns("__pycache__"))
    with open(tmp_path / "serving" / "bundle.py", "a") as f:
        f.write("\nWARMUP_LIMIT = 100\n")  # a code change (a docstring edit would not count)
    monkeypatch.setattr(pipeline, "code_version", functools.partial(code_version.code_version, repo=tmp_path))
    local_runner.run(config)
    ran = {n: s for n, s in _summary(config)["components"].items() if s != "CACHED"}
    resolvers = {"latest_blessed_model_resolver": "COMPLETE", "latest_blessed_retrieval_model_resolver": "COMPLETE"}
    assert ran == {**resolvers, "ServingBundle": "COMPLETE"}  # resolvers always run; they read ML Metadata


def test_a_column_that_changed_type_stops_the_run_before_training(pipeline_run, tiny_dataset, tmp_path):
    from camenn.tfx_pipeline import local_runner
    from camenn.tfx_pipeline.components.anomalies_gate import DataAnomaliesError

    config, _ = pipeline_run
    changed = tmp_path / "changed_dataset"
    changed.mkdir()
    shutil.copytree(Path(tiny_dataset) / "images", changed / "images")  # a symlink out would be refused
    (changed / "items.csv").write_bytes((Path(tiny_dataset) / "items.csv").read_bytes())
    with open(Path(tiny_dataset) / "events.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    with open(changed / "events.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        for row in rows:  # the export now writes the hour as a clock time: an int column became a string
            writer.writerow({**row, F.HOUR: f"{row[F.HOUR]}:00"})
    runs_before = _run_ids(config)
    with pytest.raises(DataAnomaliesError, match="bad_hour"):
        local_runner.run(config.replace(dataset_dir=str(changed)))
    new_run = [r for r in _run_ids(config) if r not in runs_before][-1]
    summary = _summary(config, new_run)
    assert summary["components"].get("ExampleValidator") == "COMPLETE"
    assert "Transform" not in summary["components"] and "Trainer" not in summary["components"]
    assert summary["preprocessing"]["events"]["quarantined_by_reason"].get("bad_hour", 0) > 0


def test_photos_linked_from_outside_the_dataset_are_refused_and_stop_the_run(pipeline_run, tiny_dataset, tmp_path):
    from camenn.tfx_pipeline import local_runner
    from camenn.tfx_pipeline.components.anomalies_gate import DataAnomaliesError

    config, _ = pipeline_run
    linked = tmp_path / "linked_dataset"
    linked.mkdir()
    os.symlink(Path(tiny_dataset) / "images", linked / "images")  # every photo is outside the folder
    for name in ("items.csv", "events.csv"):
        shutil.copy(Path(tiny_dataset) / name, linked / name)
    runs_before = _run_ids(config)
    with pytest.raises(DataAnomaliesError, match="no examples"):
        local_runner.run(config.replace(dataset_dir=str(linked)))
    summary = _summary(config, [r for r in _run_ids(config) if r not in runs_before][-1])
    items = summary["preprocessing"]["items"]
    assert items["out"] == 0 and items["quarantined_by_reason"]["bad_image_path"] > 0.8 * items["in"]
    assert "Transform" not in summary["components"]


def test_a_killed_trainer_resumed_from_its_checkpoint(pipeline_run):
    from camenn.tfx_pipeline.run_summary import node_runs, open_store

    config, summary = pipeline_run
    model_run = node_runs(open_store(config.metadata_path), summary["run_id"])["Trainer"].output("model_run")
    history = json.loads(Path(model_run.uri, "history.json").read_text())
    # The weights and the optimizer state (its step counter) came back from the killed run's checkpoint.
    assert history["initial_step"] >= config.checkpoint_every_steps
    assert history["final_step"] > history["initial_step"]
    assert not glob.glob(os.path.join(config.checkpoint_dir, "*", "training_metadata.json")), (
        "a finished Trainer leaves no checkpoint behind"
    )


def test_runs_killed_in_any_component_left_nothing_running_and_no_partial_output_used(pipeline_run):
    from ml_metadata.proto import metadata_store_pb2 as mlmd

    from camenn.tfx_pipeline.interrupted_runs import INTERRUPTED
    from camenn.tfx_pipeline.run_summary import node_runs, open_store

    config, summary = pipeline_run
    killed_in = [
        Path(p).stem[len("killed_in_") :] for p in glob.glob(os.path.join(config.outputs_dir, "killed_in_*.log"))
    ]
    assert {"PreprocessDataset", "Transform", "Trainer"} <= set(killed_in)  # tests/conftest.py KILLED_IN
    store = open_store(config.metadata_path)
    executions = store.get_executions()
    state = {e.id: e.last_known_state for e in executions}
    # Each killed attempt left its component's execution RUNNING; the next run cancelled it, saying why.
    assert not [e.id for e in executions if e.last_known_state in (mlmd.Execution.NEW, mlmd.Execution.RUNNING)]
    cancelled = [e for e in executions if e.last_known_state == mlmd.Execution.CANCELED]
    nodes = [
        c.name.split(".", 1)[-1] for e in cancelled for c in store.get_contexts_by_execution(e.id) if c.type == "node"
    ]
    assert sorted(nodes) == sorted(killed_in) and all(INTERRUPTED in e.custom_properties for e in cancelled)
    # ... and removed what it had begun to write; no output of it was ever registered.
    for execution, node in zip(cancelled, nodes):
        assert not glob.glob(os.path.join(config.pipeline_root, node, "*", str(execution.id)))
        assert not glob.glob(os.path.join(config.pipeline_root, node, ".system", "stateful_working_dir", "*"))
    # The completed run read only published artifacts of executions that finished.
    run = node_runs(store, summary["run_id"])
    inputs = [
        e
        for e in store.get_events_by_execution_ids([n.execution.id for n in run.values()])
        if e.type == mlmd.Event.INPUT
    ]
    producers = {
        e.artifact_id: e.execution_id
        for e in store.get_events_by_artifact_ids([i.artifact_id for i in inputs])
        if e.type == mlmd.Event.OUTPUT
    }
    for artifact in store.get_artifacts_by_id([i.artifact_id for i in inputs]):
        assert artifact.state == mlmd.Artifact.LIVE, artifact
        assert state[producers[artifact.id]] in (mlmd.Execution.COMPLETE, mlmd.Execution.CACHED), artifact


def test_a_second_run_over_the_same_outputs_is_refused_while_one_runs(tmp_path):
    from camenn.tfx_pipeline import configs, local_runner
    from camenn.tfx_pipeline.interrupted_runs import ConcurrentRunError, exclusive_run

    config = configs.from_profile("tiny", outputs_dir=str(tmp_path))
    with exclusive_run(config.metadata_path):  # as a run in another process holds it
        with pytest.raises(ConcurrentRunError, match=f"pid {os.getpid()}"):
            local_runner.run(config)
    assert not os.path.exists(config.pipeline_root)


def test_a_broken_model_is_not_blessed_and_not_pushed(pipeline_run):
    from camenn.tfx_pipeline import local_runner

    config, _ = pipeline_run
    versions_before = sorted(os.listdir(Path(config.serving_model_dir) / "camenn"))
    sys.path.insert(0, str(HERE))
    try:
        local_runner.run(config, trainer_run_fn=BROKEN_RUN_FN)
    finally:
        sys.path.remove(str(HERE))
    summary = _summary(config)
    assert summary["components"]["Trainer"] == summary["components"]["Evaluator"] == "COMPLETE"
    assert not summary["blessed"] and not summary["pushed"]
    assert any(failure.startswith(f"{F.CVR}/log_loss_vs_prior") for failure in summary["failures"]), summary["failures"]
    assert sorted(os.listdir(Path(config.serving_model_dir) / "camenn")) == versions_before


def test_compiled_kubeflow_spec_lists_every_component(pipeline_run, tmp_path):
    from camenn.tfx_pipeline import kubeflow_v2_runner

    config, _ = pipeline_run
    path = kubeflow_v2_runner.compile_pipeline(
        config.replace(outputs_dir="gs://camenn-test/outputs"), output=str(tmp_path / "spec.json"), image="camenn:test"
    )
    spec = json.loads(Path(path).read_text())["pipelineSpec"]
    tasks = set(spec["root"]["dag"]["tasks"])
    assert {c for c in COMPONENTS if c not in RESOLVERS} <= tasks
    # Kubeflow V2 compiles only TFX's own resolver strategies: the retrieval model's baseline is local-only.
    assert any(t.startswith("latest_blessed_model_resolver") for t in tasks)
    images = {e["container"]["image"] for e in spec["deploymentSpec"]["executors"].values() if "container" in e}
    assert images == {"camenn:test"}


def _variables(saved_model_dir) -> dict:
    """Every variable of a pushed SavedModel by name: the weights and the listing table (keras'
    ExportArchive tracks all of them in `_all_variables`, in an order that may differ between runs)."""
    import tensorflow as tf

    variables = tf.saved_model.load(saved_model_dir)._all_variables
    by_name = {v.name: v.numpy() for v in variables}
    assert len(by_name) == len(variables), "two variables share a name"
    return by_name


def test_the_same_data_and_seed_give_the_same_model_and_metrics(twin_runs):
    first, second = (_summary(config) for config in twin_runs)
    assert first["metrics"] and first["metrics"] == second["metrics"]  # exactly, not approximately
    assert first["metrics_by_negative_kind"] == second["metrics_by_negative_kind"]
    ours, theirs = _variables(first["pushed_path"]), _variables(second["pushed_path"])
    assert len(ours) > 100 and ours.keys() == theirs.keys()
    assert [name for name in ours if not np.array_equal(ours[name], theirs[name])] == []
