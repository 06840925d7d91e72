"""The serving bundle written beside each push, for TensorFlow Serving (the tensorflow/serving image).

    <serving base>/                         e.g. outputs/serving_model, mounted at /models in the container
      camenn/<version>/                     the pushed SavedModel
        assets.extra/tf_serving_warmup_requests   PredictionLog records replayed at load (write_warmup_requests)
      camenn_retrieval/<version>/           the retrieval model, when the bundle lists it too (`more_models`)
      models.config                         ModelServerConfig: each model, its base path, version policy
      local_models.config                   the same with this machine's paths, for `camenn serve`
      batching_parameters.txt               BatchingParameters for --enable_batching
      docker_run.sh                         the container command (serves this folder on 8500 gRPC / 8501 REST)
      kubernetes.yaml                       ConfigMap, PersistentVolumeClaim, Deployment and Service

`write_serving_bundle` writes them all (the warmup only into a version that has none yet).
`write_warmup_requests` writes one version's warmup; call it on an export before it is pushed when you
can, so that the version arrives complete.
"""

import dataclasses
import os
import tempfile
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import tensorflow as tf
import yaml
from google.protobuf import text_format
from tensorflow_serving.apis import predict_pb2, prediction_log_pb2
from tensorflow_serving.config import model_server_config_pb2

from camenn.serving import defaults, examples, servables

GRPC_PORT, REST_PORT = defaults.GRPC_PORT, 8501  # the tensorflow/serving image's ports
CONTAINER_MODELS_DIR = "/models"
CONTAINER_CONFIG_DIR = "/config"
MODELS_CONFIG = "models.config"
LOCAL_MODELS_CONFIG = "local_models.config"  # base paths on this machine: camenn serve --model_config_file
BATCHING_PARAMETERS = "batching_parameters.txt"
DOCKER_RUN = "docker_run.sh"
KUBERNETES = "kubernetes.yaml"


@dataclasses.dataclass(frozen=True)
class BatchingParameters:
    """TensorFlow Serving's BatchingParameters (session_bundle_config.proto).

    A ranking request already carries ~100 candidates, so batching merges a few requests into one model
    call: max_batch_size holds ten of them; a 2 ms timeout bounds the latency batching adds;
    num_batch_threads matches a small serving node's cores.
    """

    max_batch_size: int = 1024
    batch_timeout_micros: int = 2000
    max_enqueued_batches: int = 64
    num_batch_threads: int = 4
    pad_variable_length_inputs: bool = False

    def text_proto(self) -> str:
        lines = [
            f"{name} {{ value: {getattr(self, name)} }}"
            for name in ("max_batch_size", "batch_timeout_micros", "max_enqueued_batches", "num_batch_threads")
        ]
        lines.append(f"pad_variable_length_inputs: {str(self.pad_variable_length_inputs).lower()}")
        return "\n".join(lines) + "\n"


@dataclasses.dataclass(frozen=True)
class ServingBundle:
    """What write_serving_bundle wrote."""

    models_config: Path
    local_models_config: Path
    batching_parameters: Path
    docker_run: Path
    kubernetes: Path
    warmup_requests: Optional[Path]


def _write_atomically(path: Path, data: Union[str, bytes], mode: int = 0o644) -> Path:
    """Readers (TF Serving polling the folder) never see a half-written file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "wb") as f:
        f.write(data.encode() if isinstance(data, str) else data)
    os.chmod(tmp, mode)
    os.replace(tmp, path)
    return path


def newest_version(model_dir: Union[str, Path]) -> Path:
    versions = servables.version_directories(str(model_dir))
    if not versions:
        raise FileNotFoundError(f"no SavedModel version under {model_dir}")
    return Path(versions[max(versions)])


def warmup_requests(
    saved_model_dir: Union[str, Path], serialized_examples: Sequence[bytes], model_name: str = defaults.MODEL_NAME
) -> List[predict_pb2.PredictRequest]:
    """Predict requests built from real rows: for each signature taking `examples` or dense tensors,
    one request with every row and one with a single row (the batch sizes ranking sends and the smallest).
    """
    if not serialized_examples:
        raise ValueError("warmup requests need at least one serialized tf.Example")
    meta_graph = servables.read_meta_graph(str(saved_model_dir))
    columns = examples.parse_columns(serialized_examples)
    requests = []
    for name, signature in sorted(meta_graph.signature_def.items()):
        if name == servables.INIT_OP_SIGNATURE:
            continue
        if set(signature.inputs) == {"examples"}:
            arrays = {"examples": np.array(list(serialized_examples), dtype=object)}
        else:
            arrays = examples.signature_arrays(columns, signature.inputs, source="the warmup examples")
        for rows in (len(serialized_examples), 1):
            request = predict_pb2.PredictRequest()
            request.model_spec.name = model_name
            request.model_spec.signature_name = name
            for key, value in arrays.items():
                request.inputs[key].CopyFrom(tf.make_tensor_proto(value[:rows]))
            requests.append(request)
    return requests


def write_warmup_requests(
    saved_model_dir: Union[str, Path], serialized_examples: Sequence[bytes], model_name: str = defaults.MODEL_NAME
) -> Path:
    """Writes `<saved_model_dir>/assets.extra/tf_serving_warmup_requests` (PredictionLog TFRecords).

    Args:
        saved_model_dir: one exported version (a SavedModel folder).
        serialized_examples: a few raw tf.Examples (e.g. rows of `camenn preprocess`'s OUT/examples/eval); up to
            a ranking request's worth (100) is plenty.
        model_name: the model name written into the requests.
    """
    path = Path(saved_model_dir) / servables.WARMUP_FILE
    records = [
        prediction_log_pb2.PredictionLog(predict_log=prediction_log_pb2.PredictLog(request=r)).SerializeToString()
        for r in warmup_requests(saved_model_dir, serialized_examples, model_name)
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".warmup.")
    os.close(fd)
    with tf.io.TFRecordWriter(tmp) as writer:
        for record in records:
            writer.write(record)
    os.chmod(tmp, 0o644)  # the serving container's user must read it
    os.replace(tmp, path)
    return path


def models_config_text(
    model_name: str, base_path: str, num_versions: int = 1, more_models: Sequence[Tuple[str, str]] = ()
) -> str:
    """TF Serving's models.config: the model and its base path, then each (name, base path) of
    `more_models`; every one serves its `num_versions` newest."""
    config = model_server_config_pb2.ModelServerConfig()
    for name, path in [(model_name, base_path), *more_models]:
        model = config.model_config_list.config.add(name=name, base_path=path, model_platform="tensorflow")
        model.model_version_policy.latest.num_versions = num_versions
    return text_format.MessageToString(config)


def server_flags(model_config_file: str, batching_file: str, poll_seconds: int) -> List[str]:
    return [
        f"--port={GRPC_PORT}",
        f"--rest_api_port={REST_PORT}",
        f"--model_config_file={model_config_file}",
        f"--file_system_poll_wait_seconds={poll_seconds}",
        "--enable_batching=true",
        f"--batching_parameters_file={batching_file}",
        "--enable_model_warmup=true",
    ]


def docker_run_script(image: str, poll_seconds: int) -> str:
    flags = " \\\n  ".join(
        server_flags(
            f"{CONTAINER_MODELS_DIR}/{MODELS_CONFIG}", f"{CONTAINER_MODELS_DIR}/{BATCHING_PARAMETERS}", poll_seconds
        )
    )
    return f"""#!/bin/sh
# Serves this folder with TensorFlow Serving: gRPC on {GRPC_PORT}, REST on {REST_PORT}.
# Written by `camenn` at push time; run it from anywhere: ./docker_run.sh
set -e
HERE="$(cd "$(dirname "$0")" && pwd)"
exec docker run --rm --name camenn-serving \\
  -p {GRPC_PORT}:{GRPC_PORT} -p {REST_PORT}:{REST_PORT} \\
  -v "$HERE:{CONTAINER_MODELS_DIR}:ro" \\
  --entrypoint /usr/bin/tensorflow_model_server \\
  {image} \\
  {flags}
"""


def kubernetes_documents(
    model_name: str,
    image: str,
    models_config: str,
    batching: str,
    poll_seconds: int,
    replicas: int = 1,
    storage: str = "5Gi",
) -> List[Dict]:
    """ConfigMap (models.config, batching), PersistentVolumeClaim (the serving base), Deployment, Service."""
    app = f"{model_name}-serving"
    labels = {"app": app}
    config_map = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": f"{app}-config", "labels": labels},
        "data": {MODELS_CONFIG: models_config, BATCHING_PARAMETERS: batching},
    }
    claim = {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": f"{app}-models", "labels": labels},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": storage}}},
    }
    container = {
        "name": "tensorflow-serving",
        "image": image,
        "command": ["/usr/bin/tensorflow_model_server"],
        "args": server_flags(
            f"{CONTAINER_CONFIG_DIR}/{MODELS_CONFIG}", f"{CONTAINER_CONFIG_DIR}/{BATCHING_PARAMETERS}", poll_seconds
        ),
        "ports": [
            {"name": "grpc", "containerPort": GRPC_PORT, "protocol": "TCP"},
            {"name": "http", "containerPort": REST_PORT, "protocol": "TCP"},
        ],
        # Ready once the model has a loaded version: TF Serving answers this with 200 only then.
        "readinessProbe": {
            "httpGet": {"path": f"/v1/models/{model_name}", "port": "http"},
            "initialDelaySeconds": 5,
            "periodSeconds": 5,
            "failureThreshold": 3,
        },
        "resources": {"requests": {"cpu": "1", "memory": "2Gi"}, "limits": {"memory": "4Gi"}},
        # Writable so that `kubectl cp` can put versions in; TF Serving only reads it.
        "volumeMounts": [
            {"name": "models", "mountPath": CONTAINER_MODELS_DIR},
            {"name": "config", "mountPath": CONTAINER_CONFIG_DIR, "readOnly": True},
        ],
    }
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": app, "labels": labels},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "containers": [container],
                    "volumes": [
                        {"name": "models", "persistentVolumeClaim": {"claimName": claim["metadata"]["name"]}},
                        {"name": "config", "configMap": {"name": config_map["metadata"]["name"]}},
                    ],
                },
            },
        },
    }
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": app, "labels": labels},
        "spec": {
            "selector": labels,
            "type": "ClusterIP",
            "ports": [
                {"name": "grpc", "port": GRPC_PORT, "targetPort": "grpc", "protocol": "TCP"},
                {"name": "http", "port": REST_PORT, "targetPort": "http", "protocol": "TCP"},
            ],
        },
    }
    return [config_map, claim, deployment, service]


def write_serving_bundle(
    serving_base: Union[str, Path],
    model_name: str = defaults.MODEL_NAME,
    warmup_examples: Sequence[bytes] = (),
    version: Optional[int] = None,
    *,
    image: str = defaults.TF_SERVING_IMAGE,
    batching: BatchingParameters = BatchingParameters(),
    num_versions: int = 1,
    poll_seconds: int = 30,
    replicas: int = 1,
    more_models: Sequence[str] = (),
) -> ServingBundle:
    """Writes the TensorFlow Serving bundle for `<serving_base>/<model_name>/` (see the module docstring).

    Args:
        serving_base: the Pusher's destination (default layout: outputs/serving_model).
        model_name: the model's folder under serving_base and its name in requests.
        warmup_examples: serialized raw tf.Examples (OUT/examples/eval rows) for the warmup requests; empty: none.
        version: the version that gets the warmup requests (default: the newest); one that already has
            them is left alone (a served version must not change under TF Serving).
        image: the tensorflow/serving image for the container and the Deployment.
        batching: TF Serving's batching parameters.
        num_versions: how many of the newest versions to serve at once.
        poll_seconds: how often TF Serving looks for new versions.
        replicas: Deployment replicas.
        more_models: other models under serving_base to serve beside `model_name` (e.g. the retrieval
            model `camenn_retrieval`); warm their versions with `write_warmup_requests`.

    Returns:
        The paths written.

    Example:
    ```python-needs-server
    import glob
    import tensorflow as tf

    eval_files = glob.glob("outputs/preprocessed/examples/eval/*.tfrecord.gz")  # `camenn preprocess`'s
    eval_rows = [record.numpy() for record in tf.data.TFRecordDataset(eval_files, "GZIP").take(100)]
    bundle = write_serving_bundle("outputs/serving_model", "camenn", warmup_examples=eval_rows)
    assert bundle.warmup_requests.parent.parent.name == "1"  # the newest version's assets.extra/
    print(bundle.docker_run.read_text())
    ```
    """
    base = Path(serving_base)
    model_dir = base / model_name
    warmup = None
    if warmup_examples:
        version_dir = model_dir / str(version) if version is not None else newest_version(model_dir)
        warmup = version_dir / servables.WARMUP_FILE
        if not warmup.exists():
            write_warmup_requests(version_dir, warmup_examples, model_name)
    container_config = models_config_text(
        model_name,
        f"{CONTAINER_MODELS_DIR}/{model_name}",
        num_versions,
        [(name, f"{CONTAINER_MODELS_DIR}/{name}") for name in more_models],
    )
    models_config = _write_atomically(base / MODELS_CONFIG, container_config)
    local_config = models_config_text(
        model_name,
        str(model_dir.resolve()),
        num_versions,
        [(name, str((base / name).resolve())) for name in more_models],
    )
    local_models_config = _write_atomically(base / LOCAL_MODELS_CONFIG, local_config)
    batching_parameters = _write_atomically(base / BATCHING_PARAMETERS, batching.text_proto())
    docker_run = _write_atomically(base / DOCKER_RUN, docker_run_script(image, poll_seconds), mode=0o755)
    documents = kubernetes_documents(model_name, image, container_config, batching.text_proto(), poll_seconds, replicas)
    copies = "; ".join(f"kubectl cp {name} <pod>:{CONTAINER_MODELS_DIR}/" for name in (model_name, *more_models))
    manifest = (
        "# TensorFlow Serving for CameNN: kubectl apply -f kubernetes.yaml, then copy the models into the\n"
        f"# volume: {copies} (the pod turns ready once {model_name} loads).\n"
        + yaml.safe_dump_all(documents, sort_keys=False)
    )
    kubernetes = _write_atomically(base / KUBERNETES, manifest)
    return ServingBundle(models_config, local_models_config, batching_parameters, docker_run, kubernetes, warmup)
