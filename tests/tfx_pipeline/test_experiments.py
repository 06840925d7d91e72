"""`camenn experiments` on the tiny pipeline run's data (tests/conftest.py `pipeline_run`): two models, one
seed, a few steps, through the real pipeline (its cache reused), then results.json, RESULTS.md and the
plots; and the TensorBoard event files hold the training and TFMA scalars the README names."""
import glob
import json
import os
import shutil

import pytest

from camenn.model import features as F

pytestmark = pytest.mark.slow

MODELS = ["dnn", "camenn_cvr_only"]


def _scalar_tags(logdir):
    from tensorboard.backend.event_processing import event_accumulator

    tags = set()
    for events in glob.glob(os.path.join(logdir, "**", "events.out.tfevents.*"), recursive=True):
        accumulator = event_accumulator.EventAccumulator(events, size_guidance={"tensors": 0, "scalars": 0})
        accumulator.Reload()
        tags |= set(accumulator.Tags()["tensors"]) | set(accumulator.Tags()["scalars"])
    return tags


@pytest.fixture(scope="module")
def experiments(pipeline_run, tmp_path_factory):
    from camenn.tfx_pipeline import experiments

    config, _ = pipeline_run
    # A copy of the session run's metadata store: the cache finds its preprocessing and Transform, and
    # the session store's latest run stays the one the pipeline tests read.
    outputs = tmp_path_factory.mktemp("experiments")
    os.makedirs(os.path.dirname(config.replace(outputs_dir=str(outputs)).metadata_path))
    shutil.copy(config.metadata_path, config.replace(outputs_dir=str(outputs)).metadata_path)
    base = config.replace(outputs_dir=str(outputs), epochs=1, steps_per_epoch=3, bless_against_last=False)
    results_dir = outputs / "results"
    results = experiments.run_experiments(base, MODELS, [0], "tiny", {}, str(results_dir))
    return base, results, results_dir


def test_every_model_ran_through_the_cached_pipeline(experiments):
    base, results, results_dir = experiments
    assert [(r["model"], r["seed"]) for r in results["runs"]] == [(m, 0) for m in MODELS]
    for run in results["runs"]:
        assert run["components"]["Transform"] == "CACHED" and run["components"]["PreprocessDataset"] == "CACHED"
        assert run["components"]["Trainer"] == run["components"]["Evaluator"] == "COMPLETE"
        assert run["train_steps"] == 3 and run["wall_seconds"] > run["component_seconds"]["Trainer"] > 0
        assert 0 <= run["metrics"][f"{F.CVR}/auc"] <= 1 and run["metrics"][f"{F.CVR}/log_loss"] > 0
        assert sum(b[0] for b in run["calibration"]) > 0
    dnn, cvr_only = results["runs"]
    assert cvr_only["model_options"] == {"task_names": [F.CVR]} and dnn["model_preset"] == "dnn_ranker_tiny"
    assert f"{F.ITA}/auc" in dnn["metrics"] and f"{F.ITA}/auc" not in cvr_only["metrics"]
    assert dnn["retrieval"]["products"] > 10
    for direction in ("image_to_text", "text_to_image"):
        recalls = [dnn["retrieval"][f"{direction}_recall@{k}"] for k in (1, 5, 10)]
        assert 0 <= recalls[0] <= recalls[1] <= recalls[2] <= 1
    assert 0 <= dnn["flaws"]["alignment_finds_any_flaw_auc"] <= 1
    assert cvr_only["flaws"] == {} and set(cvr_only["retrieval"]) == {"products"}
    assert cvr_only["routing"] and not dnn["routing"]  # CameNN's mixture reports its expert load

    on_disk = json.loads((results_dir / "results.json").read_text())
    assert on_disk["runs"] == json.loads(json.dumps(results["runs"]))
    report = (results_dir / "RESULTS.md").read_text()
    cvr_auc = dnn["metrics"][f"{F.CVR}/auc"]
    assert f"| dnn | {cvr_auc:.3f} ± 0.000" in report and "| camenn_cvr_only | " in report
    assert (results_dir / "calibration.png").stat().st_size > 1000


def test_a_rerun_with_the_same_settings_resumes_without_training(experiments):
    from camenn.tfx_pipeline import experiments as module

    base, results, results_dir = experiments
    again = module.run_experiments(base, MODELS, [0], "tiny", {}, str(results_dir))
    assert again["runs"] == json.loads(json.dumps(results["runs"]))


def test_tensorboard_holds_training_and_tfma_scalars(pipeline_run):
    config, summary = pipeline_run
    training = _scalar_tags(summary["tensorboard_logdir"])
    for task in F.TASKS:
        assert {f"epoch_{task}_loss", f"epoch_{task}_auc", f"epoch_{task}_expert_0_load"} <= training, training
    assert "epoch_learning_rate" in training, training
    evaluation = _scalar_tags(os.path.join(config.pipeline_root, "EvaluationTensorBoard"))
    for tag in (f"{F.CVR}/auc", f"{F.CVR}/gauc", f"{F.CVR}/log_loss", f"{F.CVR}/calibration", f"{F.ITA}/auc",
                f"{F.TIA}/auc"):
        assert tag in evaluation, sorted(evaluation)[:20]
    assert any(t.startswith(f"{F.CVR}/auc/{F.MERCHANT_SIZE}=") for t in evaluation), sorted(evaluation)[:20]
    assert any(t.startswith(f"{F.ITA}/auc/{F.LISTING_QUALITY}=") for t in evaluation), sorted(evaluation)[:20]
