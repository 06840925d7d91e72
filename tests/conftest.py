"""Shared test set-up: quiet TensorFlow logs and paths every test may use."""
import os
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED = REPO_ROOT.parent / "shared"


@pytest.fixture(scope="session")
def grocery_store_dir():
    path = SHARED / "data" / "grocery_store"
    if not path.is_dir():
        pytest.fail(f"{path} is missing: CI and developers have ../shared beside the checkout")
    return path


# --- The TFX pipeline, run once per session on the tiny preset (tests/tfx_pipeline; serving tests may
# reuse its pushed model). Its first attempt is killed once the Trainer wrote a checkpoint, and the run
# that completes resumes from it. The tiny model learns the click-to-order rate within its few steps but
# hardly any ranking, so the tiny blessing bounds only the log loss (a model that learned nothing is
# refused by it); the demo's presets bound the AUCs too (tfx_pipeline/configs.py).
TINY_DATASET = dict(seed=0, num_listings=60, num_merchants=8, num_shoppers=40, num_events=1500)
TINY_PIPELINE = dict(min_cvr_auc=0.0, min_ita_auc=0.0, min_tia_auc=0.0)


@pytest.fixture(scope="session")
def tiny_dataset(grocery_store_dir, tmp_path_factory):
    """A small dataset folder made by `camenn sample` (60 listings, 1500 clicks, the deliberately bad rows)."""
    from camenn.preprocessing.sample import build_sample

    path = tmp_path_factory.mktemp("tiny_dataset")
    build_sample(grocery_store_dir, path, **TINY_DATASET)
    return path


def run_pipeline_killed_in_training(config, trainer_run_fn=None, extra_path=None, timeout=1200):
    """Runs the pipeline in a child process and kills it (SIGKILL) once the Trainer wrote a checkpoint."""
    import glob
    import signal
    import subprocess
    import sys
    import time

    script = ("import sys\nfrom camenn.tfx_pipeline import configs, local_runner\n"
              "kwargs = {'trainer_run_fn': sys.argv[2]} if len(sys.argv) > 2 else {}\n"
              "local_runner.run(configs.PipelineConfig.from_json(sys.argv[1]), **kwargs)\n")
    env = dict(os.environ)
    if extra_path:
        env["PYTHONPATH"] = os.pathsep.join([str(extra_path), env.get("PYTHONPATH", "")])
    args = [sys.executable, "-c", script, config.to_json()] + ([trainer_run_fn] if trainer_run_fn else [])
    log_path = os.path.join(config.outputs_dir, "killed_run.log")
    with open(log_path, "wb") as log:
        process = subprocess.Popen(args, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    checkpoints = os.path.join(config.checkpoint_dir, "*", "training_metadata.json")
    try:
        deadline = time.time() + timeout
        while not glob.glob(checkpoints):
            if process.poll() is not None:
                with open(log_path, errors="replace") as log:
                    tail = log.read()[-3000:]
                raise RuntimeError(f"the pipeline ended (exit {process.returncode}) before its Trainer "
                                   f"checkpointed; its log ends:\n{tail}")
            if time.time() > deadline:
                raise TimeoutError(f"no Trainer checkpoint within {timeout} s")
            time.sleep(1)
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


@pytest.fixture(scope="session")
def pipeline_run(tiny_dataset, tmp_path_factory):
    """The TFX pipeline (tiny preset) on `tiny_dataset`: killed mid-training once, then run to the end.

    Returns (config, summary): the PipelineConfig (outputs, metadata and serving base under a session temp
    folder) and `camenn.tfx_pipeline.run_summary.summarize` of the completed run; the pushed model is
    `summary["pushed_path"]`, the serving base `config.serving_model_dir`.
    """
    from camenn.tfx_pipeline import configs, local_runner, run_summary

    outputs = tmp_path_factory.mktemp("pipeline_outputs")
    config = configs.from_preset("tiny", dataset_dir=str(tiny_dataset), outputs_dir=str(outputs),
                                 embedding_cache_dir=str(outputs / "embedding_cache"), **TINY_PIPELINE)
    run_pipeline_killed_in_training(config)
    local_runner.run(config)
    return config, run_summary.summarize(config)


@pytest.fixture(scope="session")
def twin_runs(grocery_store_dir, tmp_path_factory):
    """Two fresh, uninterrupted runs of the pipeline (separate outputs and metadata stores) on one small
    dataset with the same seed; returns their PipelineConfigs."""
    from camenn.preprocessing.sample import build_sample
    from camenn.tfx_pipeline import configs, local_runner

    dataset = tmp_path_factory.mktemp("twin_dataset")
    build_sample(grocery_store_dir, dataset, seed=5, num_listings=40, num_merchants=6, num_shoppers=30,
                 num_events=800, include_bad_rows=False)
    runs = []
    for name in ("first", "second"):
        outputs = tmp_path_factory.mktemp(name)
        config = configs.from_preset("tiny", dataset_dir=str(dataset), outputs_dir=str(outputs),
                                     embedding_cache_dir=str(outputs / "embedding_cache"), audit_folds=2,
                                     audit_epochs=1, **TINY_PIPELINE)
        local_runner.run(config)
        runs.append(config)
    return runs
