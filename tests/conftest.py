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


# --- The TFX pipeline, run once per session on the tiny profile (tests/tfx_pipeline; serving tests may
# reuse its pushed model). Its first attempts are killed (SIGKILL) while a component runs: during
# PreprocessDataset, then during Transform, then once the Trainer wrote a checkpoint; each rerun goes on
# from what the killed one completed, and the run that completes resumes the Trainer from its checkpoint.
# The tiny model (random encoders, two short epochs on ~1,200 clicks) tests the mechanics and learns
# hardly any ranking, so its blessing tolerates a log loss up to 5% above the prior's and a normalized
# entropy up to 1.1 (the tiny eval split's prior alone scores 1.01); a model that learned nothing (0.5
# for every click: ~1.27 times the prior's log loss) is still refused. The demo's profile is strict.
TINY_DATASET = dict(seed=0, num_listings=60, num_merchants=8, num_shoppers=40, num_events=1500)
KILLED_IN = ("PreprocessDataset", "Transform", "Trainer")  # the session pipeline's killed attempts, in order
TINY_PIPELINE = dict(
    min_cvr_auc=0.0, min_ita_auc=0.0, min_tia_auc=0.0, max_cvr_log_loss_vs_prior=1.05, max_cvr_normalized_entropy=1.1
)


@pytest.fixture(scope="session")
def tiny_dataset(grocery_store_dir, tmp_path_factory):
    """A small dataset folder made by `camenn sample` (60 listings, 1500 clicks, the deliberately bad rows)."""
    from camenn.simulator.sample import build_sample

    path = tmp_path_factory.mktemp("tiny_dataset")
    build_sample(grocery_store_dir, path, **TINY_DATASET)
    return path


def _component_started(config, component):
    """True once `component` of this pipeline has started an execution: its output folder exists."""
    return os.path.isdir(os.path.join(config.pipeline_root, component))


def _trainer_checkpointed(config):
    import glob

    return bool(glob.glob(os.path.join(config.checkpoint_dir, "*", "training_metadata.json")))


def run_pipeline_killed(config, component, trainer_run_fn=None, extra_path=None, timeout=1200, delay=2.0):
    """Runs the pipeline in a child process and kills it (SIGKILL) while `component` runs.

    The kill comes `delay` seconds after the component started (its folder under the pipeline root
    appeared: the launcher creates it when it registers the execution in ML Metadata), or, for "Trainer",
    once the Trainer wrote a checkpoint. Returns the log of the killed process.
    """
    import signal
    import subprocess
    import sys
    import time

    script = (
        "import sys\nfrom camenn.tfx_pipeline import configs, local_runner\n"
        "kwargs = {'trainer_run_fn': sys.argv[2]} if len(sys.argv) > 2 else {}\n"
        "local_runner.run(configs.PipelineConfig.from_json(sys.argv[1]), **kwargs)\n"
    )
    env = dict(os.environ)
    if extra_path:
        env["PYTHONPATH"] = os.pathsep.join([str(extra_path), env.get("PYTHONPATH", "")])
    args = [sys.executable, "-c", script, config.to_json()] + ([trainer_run_fn] if trainer_run_fn else [])
    log_path = os.path.join(config.outputs_dir, f"killed_in_{component}.log")
    os.makedirs(config.outputs_dir, exist_ok=True)
    started = (
        (lambda: _trainer_checkpointed(config))
        if component == "Trainer"
        else (lambda: _component_started(config, component))
    )
    if started():
        raise RuntimeError(f"{component} already ran in {config.pipeline_root}: a kill there would come too late")
    with open(log_path, "wb") as log:
        process = subprocess.Popen(args, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.time() + timeout
        while not started():
            if process.poll() is not None:
                with open(log_path, errors="replace") as log:
                    tail = log.read()[-3000:]
                raise RuntimeError(
                    f"the pipeline ended (exit {process.returncode}) before {component} started; its log ends:\n{tail}"
                )
            if time.time() > deadline:
                raise TimeoutError(f"{component} did not start within {timeout} s")
            time.sleep(0.2)
        if component != "Trainer":
            time.sleep(delay)
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    with open(log_path, errors="replace") as log:
        return log.read()


@pytest.fixture(scope="session")
def pipeline_run(tiny_dataset, tmp_path_factory):
    """The TFX pipeline (tiny profile) on `tiny_dataset`: killed in each of KILLED_IN, then run to the end.

    Returns (config, summary): the PipelineConfig (outputs, metadata and serving base under a session temp
    folder) and `camenn.tfx_pipeline.run_summary.summarize` of the completed run; the pushed model is
    `summary["pushed_path"]`, the serving base `config.serving_model_dir`.
    """
    from camenn.tfx_pipeline import configs, local_runner, run_summary

    outputs = tmp_path_factory.mktemp("pipeline_outputs")
    config = configs.from_profile(
        "tiny",
        dataset_dir=str(tiny_dataset),
        outputs_dir=str(outputs),
        embedding_cache_dir=str(outputs / "embedding_cache"),
        **TINY_PIPELINE,
    )
    for component in KILLED_IN:
        run_pipeline_killed(config, component)
    local_runner.run(config)
    return config, run_summary.summarize(config)


@pytest.fixture(scope="session")
def twin_runs(grocery_store_dir, tmp_path_factory):
    """Two fresh, uninterrupted runs of the pipeline (separate outputs and metadata stores) on one small
    dataset with the same seed; returns their PipelineConfigs."""
    from camenn.simulator.sample import build_sample
    from camenn.tfx_pipeline import configs, local_runner

    dataset = tmp_path_factory.mktemp("twin_dataset")
    build_sample(
        grocery_store_dir,
        dataset,
        seed=5,
        num_listings=40,
        num_merchants=6,
        num_shoppers=30,
        num_events=800,
        include_bad_rows=False,
    )
    runs = []
    for name in ("first", "second"):
        outputs = tmp_path_factory.mktemp(name)
        config = configs.from_profile(
            "tiny",
            dataset_dir=str(dataset),
            outputs_dir=str(outputs),
            embedding_cache_dir=str(outputs / "embedding_cache"),
            audit_folds=2,
            audit_epochs=1,
            **TINY_PIPELINE,
        )
        local_runner.run(config)
        runs.append(config)
    return runs
