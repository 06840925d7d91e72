"""Defaults that the serving verbs and the Python APIs share (no heavy imports: `camenn --help` reads them)."""

import os

from camenn import paths

MODEL_NAME = "camenn"
RETRIEVAL_MODEL_NAME = "camenn_retrieval"  # the candidate retrieval model, served beside the ranker
SERVING_BASE = paths.DEFAULT_OUTPUTS / "serving_model"  # the Pusher's destination: <base>/<model>/<version>/
MODEL_BASE_PATH = SERVING_BASE / MODEL_NAME
LOCAL_MODELS_CONFIG = SERVING_BASE / "local_models.config"  # both models, this machine's paths (serving bundle)
PIPELINE_ROOT = paths.DEFAULT_OUTPUTS / "pipelines" / MODEL_NAME  # where `camenn audit` finds the newest audit
AUDIT_DIR = paths.DEFAULT_OUTPUTS / "audit"
GRPC_PORT = 8500  # TensorFlow Serving's
DISTANCE_KM = 2.0  # shopper to store when the caller does not say: a typical same-day delivery distance
TF_SERVING_IMAGE = "tensorflow/serving:2.16.1"  # matches tensorflow==2.16 and tensorflow-serving-api==2.16.1


def usable_cpus() -> int:
    """CPUs this process may run on: `camenn serve` admits about one request per CPU by default."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except AttributeError:  # not Linux
        return os.cpu_count() or 1
