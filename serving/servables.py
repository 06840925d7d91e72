"""Versioned SavedModels as TensorFlow Serving sees them: model configs, loaded versions, request checks.

A *servable* is one loaded version of one model (`<base_path>/<version>/`, a SavedModel). The
`ModelManager` watches each model's base path and keeps the versions its version policy asks for loaded,
as tensorflow_model_server does: a new version is loaded (and warmed up) fully before it replaces the old
one, a directory still being written is left alone until it is complete and has stopped changing, and a
version that fails to load is reported, retried only once its files change, and passed over: the newest
version that loads is served (so a server restarted after a broken push serves the last good one).

Only TensorFlow and the tensorflow-serving-api protos are imported here: no keras, so this runs where
stock TensorFlow Serving would.
"""

import dataclasses
import logging
import os
import re
import threading
import time
from pathlib import Path
from typing import Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

import grpc
import numpy as np
import tensorflow as tf
from google.protobuf import text_format
from tensorflow.core.protobuf import saved_model_pb2
from tensorflow_serving.apis import get_model_status_pb2, prediction_log_pb2
from tensorflow_serving.config import model_server_config_pb2

log = logging.getLogger(__name__)

DEFAULT_SIGNATURE = "serving_default"
WARMUP_FILE = os.path.join("assets.extra", "tf_serving_warmup_requests")
INIT_OP_SIGNATURE = "__saved_model_init_op"
# A new version loads once its files are unchanged over this long (or one poll interval, if shorter).
SETTLE_SECONDS = 0.25
_GRPC_CODE_BY_NUMBER = {code.value[0]: code for code in grpc.StatusCode}
State = get_model_status_pb2.ModelVersionStatus.State


class ServingError(Exception):
    """A request the server refuses: `code` is the gRPC status it answers with."""

    def __init__(self, code: grpc.StatusCode, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


def _invalid(message: str) -> ServingError:
    return ServingError(grpc.StatusCode.INVALID_ARGUMENT, message)


def _dtype_name(enum: int) -> str:
    return tf.dtypes.as_dtype(enum).name


# What eager TensorFlow wraps around a failing op's own message: where it was, and the node names.
_GRAPH_ERROR_WRAPPING = re.compile(
    r"^Graph execution error:\s*Detected at node .*?<stack traces unavailable>\s*"
    r"|\s*\[\[\{\{node .*$",
    re.S,
)


def _graph_error_text(message: str) -> str:
    """The op's own words (e.g. an export's "assertion failed: [feature 'hour' must ...]")."""
    return _GRAPH_ERROR_WRAPPING.sub("", message).replace("\\'", "'").strip() or message


def _shape_text(dims: Sequence[int]) -> str:
    return "[" + ", ".join("None" if d < 0 else str(d) for d in dims) + "]"


# ---------------------------------------------------------------------------------------------------
# Model configs (TensorFlow Serving's models.config text proto).


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """One model to serve: its name, where its numbered versions appear, and which of them to serve.

    `policy` is "latest" (serve the `num_versions` newest), "all", or "specific" (serve `versions`).
    `version_labels` map a label such as "stable" to a version, as in TensorFlow Serving.
    """

    name: str
    base_path: str
    policy: str = "latest"
    num_versions: int = 1
    versions: Tuple[int, ...] = ()
    version_labels: Mapping[str, int] = dataclasses.field(default_factory=dict)

    def aspired(self, available: Iterable[int]) -> List[int]:
        """The versions, among those on disk, that this policy wants served (newest first)."""
        available = sorted(available, reverse=True)
        if self.policy == "all":
            return available
        if self.policy == "specific":
            return [v for v in available if v in self.versions]
        return available[: self.num_versions]


def model_config_from_proto(proto: model_server_config_pb2.ModelConfig) -> ModelConfig:
    if not proto.name or not proto.base_path:
        raise ValueError(
            f"a model config needs a name and a base_path, got: {text_format.MessageToString(proto, as_one_line=True)}"
        )
    if proto.model_platform not in ("", "tensorflow"):
        raise ValueError(
            f'model {proto.name!r}: only model_platform "tensorflow" is served, got {proto.model_platform!r}'
        )
    policy = proto.model_version_policy
    kind = policy.WhichOneof("policy_choice") or "latest"
    return ModelConfig(
        name=proto.name,
        base_path=proto.base_path,
        policy=kind,
        num_versions=max(1, policy.latest.num_versions) if kind == "latest" else 1,
        versions=tuple(policy.specific.versions),
        version_labels=dict(proto.version_labels),
    )


def read_model_config_file(path: str) -> List[ModelConfig]:
    """Parses a TensorFlow Serving `--model_config_file` (ModelServerConfig text proto)."""
    config = model_server_config_pb2.ModelServerConfig()
    try:
        text_format.Parse(Path(path).read_text(), config)
    except (OSError, text_format.ParseError) as error:
        raise ValueError(f"cannot read model config file {path}: {error}") from error
    if config.WhichOneof("config") != "model_config_list" or not config.model_config_list.config:
        raise ValueError(f"{path} has no model_config_list entries")
    configs = [model_config_from_proto(c) for c in config.model_config_list.config]
    names = [c.name for c in configs]
    if len(set(names)) != len(names):
        raise ValueError(f"{path} names a model twice: {names}")
    return configs


# ---------------------------------------------------------------------------------------------------
# One signature of one loaded version: checks a request's tensors against it and runs it.


@dataclasses.dataclass(frozen=True)
class _TensorInfo:
    dtype: int  # types_pb2.DataType
    dims: Optional[Tuple[int, ...]]  # None: unknown rank; -1: unknown size


class Signature:
    """A SavedModel signature: the input and output tensors its SignatureDef declares, and its function."""

    def __init__(self, name: str, function, signature_def):
        self.name = name
        self.function = function
        self.signature_def = signature_def
        self.inputs = {k: self._info(v) for k, v in signature_def.inputs.items()}
        self.outputs = {k: self._info(v) for k, v in signature_def.outputs.items()}

    @staticmethod
    def _info(tensor_info) -> _TensorInfo:
        shape = tensor_info.tensor_shape
        dims = None if shape.unknown_rank else tuple(d.size for d in shape.dim)
        return _TensorInfo(tensor_info.dtype, dims)

    def check_inputs(self, tensors: Mapping[str, "tf.TensorProto"], max_batch_size: int) -> Dict[str, np.ndarray]:
        """Returns the request's tensors as arrays, or raises ServingError naming what is wrong."""
        given, expected = set(tensors), set(self.inputs)
        if given != expected:
            problems = []
            if expected - given:
                problems.append(f"missing input(s) {sorted(expected - given)}")
            if given - expected:
                problems.append(f"unknown input(s) {sorted(given - expected)}")
            raise _invalid(f"{' and '.join(problems)} for signature {self.name!r}, which takes {sorted(expected)}")
        batch_sizes = {}
        arrays = {}
        for name, proto in tensors.items():
            info = self.inputs[name]
            if proto.dtype != info.dtype:
                raise _invalid(
                    f"input {name!r} has dtype {_dtype_name(proto.dtype)}; signature {self.name!r} expects "
                    f"{_dtype_name(info.dtype)}"
                )
            dims = tuple(d.size for d in proto.tensor_shape.dim)
            if info.dims is not None and (
                len(dims) != len(info.dims) or any(e >= 0 and d != e for d, e in zip(dims, info.dims))
            ):
                raise _invalid(
                    f"input {name!r} has shape {_shape_text(dims)}; signature {self.name!r} expects "
                    f"{_shape_text(info.dims)}"
                )
            # The batch is the first dimension of what the signature batches: a leading None, or any
            # dimension of an input of unknown rank (exports that check shapes in the graph declare those).
            if dims and (info.dims is None or (info.dims and info.dims[0] < 0)):
                batch_sizes[name] = dims[0]
            try:
                arrays[name] = tf.make_ndarray(proto)
            except (ValueError, TypeError) as error:
                raise _invalid(f"input {name!r}: its values do not fill shape {_shape_text(dims)} ({error})") from None
        sizes = set(batch_sizes.values())
        if len(sizes) > 1:
            raise _invalid(f"inputs disagree on the batch size (first dimension): {dict(sorted(batch_sizes.items()))}")
        if sizes:
            (batch,) = sizes
            if batch == 0:
                raise _invalid("empty batch: the inputs have 0 rows")
            if batch > max_batch_size:
                raise _invalid(
                    f"batch of {batch} rows is over this server's limit of {max_batch_size} "
                    "(--max_batch_size); split the request"
                )
        return arrays

    def run(self, arrays: Mapping[str, np.ndarray], output_filter: Sequence[str] = ()) -> Dict[str, np.ndarray]:
        unknown = set(output_filter) - set(self.outputs)
        if unknown:
            raise _invalid(
                f"output_filter names unknown output(s) {sorted(unknown)}; signature {self.name!r} "
                f"has {sorted(self.outputs)}"
            )
        try:
            outputs = self.function(**arrays)
        except tf.errors.OpError as error:
            raise ServingError(
                _GRPC_CODE_BY_NUMBER.get(error.error_code, grpc.StatusCode.INTERNAL),
                f"signature {self.name!r} refused the input: {_graph_error_text(error.message)}",
            ) from error
        names = output_filter or list(self.outputs)
        return {name: outputs[name].numpy() for name in names}


# ---------------------------------------------------------------------------------------------------
# Loaded versions.


class Servable:
    """One loaded version of a model: its signatures and the SignatureDefs GetModelMetadata returns."""

    def __init__(self, name: str, version: int, path: str):
        self.name, self.version, self.path = name, version, path
        self._saved_model = tf.saved_model.load(path, tags=["serve"])  # keeps the functions' variables alive
        meta_graph = read_meta_graph(path)
        self.signature_defs = {k: v for k, v in meta_graph.signature_def.items() if k != INIT_OP_SIGNATURE}
        self.signatures = {k: Signature(k, self._saved_model.signatures[k], v) for k, v in self.signature_defs.items()}

    def signature(self, name: str) -> Signature:
        name = name or DEFAULT_SIGNATURE
        if name not in self.signatures:
            raise ServingError(
                grpc.StatusCode.NOT_FOUND,
                f"model {self.name!r} version {self.version} has no signature {name!r}; "
                f"it has {sorted(self.signatures)}",
            )
        return self.signatures[name]

    def predict(self, request, max_batch_size: int) -> Tuple[Signature, Dict[str, np.ndarray]]:
        signature = self.signature(request.model_spec.signature_name)
        arrays = signature.check_inputs(request.inputs, max_batch_size)
        return signature, signature.run(arrays, list(request.output_filter))

    def warm_up(self, max_batch_size: int) -> int:
        """Replays `assets.extra/tf_serving_warmup_requests` as TensorFlow Serving does; any failure fails the load."""
        path = os.path.join(self.path, WARMUP_FILE)
        if not tf.io.gfile.exists(path):
            return 0
        count = 0
        for record in tf.data.TFRecordDataset(path).as_numpy_iterator():
            entry = prediction_log_pb2.PredictionLog.FromString(record)
            if entry.WhichOneof("log_type") != "predict_log":
                raise ValueError(f"{path}: record {count} is a {entry.WhichOneof('log_type')}; only Predict is served")
            try:
                self.predict(entry.predict_log.request, max_batch_size)
            except ServingError as error:
                raise ValueError(f"{path}: warmup request {count} failed: {error.message}") from error
            count += 1
        return count


def read_meta_graph(path: str):
    """The serving MetaGraphDef of a SavedModel folder (its SignatureDefs), read without loading the model."""
    saved_model = saved_model_pb2.SavedModel()
    pb = os.path.join(path, "saved_model.pb")
    if tf.io.gfile.exists(pb):
        saved_model.ParseFromString(tf.io.gfile.GFile(pb, "rb").read())
    else:
        text_format.Parse(tf.io.gfile.GFile(os.path.join(path, "saved_model.pbtxt")).read(), saved_model)
    for meta_graph in saved_model.meta_graphs:
        if "serve" in meta_graph.meta_info_def.tags:
            return meta_graph
    raise ValueError(f"{path} has no MetaGraph tagged 'serve'")


# ---------------------------------------------------------------------------------------------------
# Watching base paths.


def version_directories(base_path: str) -> Dict[int, str]:
    """Numbered subdirectories of a base path that hold a complete-looking SavedModel."""
    versions = {}
    try:
        names = tf.io.gfile.listdir(base_path)
    except tf.errors.NotFoundError:
        return versions
    for name in names:
        name = name.rstrip("/")
        path = os.path.join(base_path, name)
        if not name.isdigit() or not tf.io.gfile.isdir(path):
            continue
        has_graph = any(tf.io.gfile.exists(os.path.join(path, f)) for f in ("saved_model.pb", "saved_model.pbtxt"))
        variables = os.path.join(path, "variables")
        has_variables = not tf.io.gfile.exists(variables) or tf.io.gfile.exists(
            os.path.join(variables, "variables.index")
        )
        if has_graph and has_variables:
            versions[int(name)] = path
    return versions


def _fingerprint(path: str) -> Tuple:
    """Names, sizes and modification times of every file under a version: changes while it is written."""
    entries = []
    for root, _, files in tf.io.gfile.walk(path):
        for name in files:
            stat = tf.io.gfile.stat(os.path.join(root, name))
            entries.append((os.path.relpath(os.path.join(root, name), path), stat.length, stat.mtime_nsec))
    return tuple(sorted(entries))


@dataclasses.dataclass
class VersionStatus:
    state: int
    error_code: grpc.StatusCode = grpc.StatusCode.OK
    error_message: str = ""


class _ModelState:
    def __init__(self, config: ModelConfig):
        self.config = config
        self.served: Dict[int, Servable] = {}
        self.status: Dict[int, VersionStatus] = {}
        self.seen: Dict[int, Tuple] = {}  # fingerprint at the previous poll, to wait until a version stops changing
        self.failed: Dict[int, Tuple] = {}  # fingerprint of a version that failed to load: retried when it changes


class ModelManager:
    """Loads, serves and replaces the versions of each configured model.

    Args:
        configs: the models to serve.
        poll_seconds: how often to look for new versions (`--file_system_poll_wait_seconds`); 0 looks once.
        max_batch_size: rows a request (and a warmup request) may carry.
        warmup: replay each version's warmup requests before serving it.

    Example:
    ```python-needs-server
    manager = ModelManager([ModelConfig("camenn", "outputs/serving_model/camenn")], poll_seconds=1)
    manager.poll()           # first load, synchronously
    manager.start()          # then watch for pushes
    servable = manager.get("camenn")
    assert servable.version == 1 and "rank" in servable.signatures  # the newest version
    manager.stop()
    ```
    """

    def __init__(
        self, configs: Sequence[ModelConfig], poll_seconds: float = 1.0, max_batch_size: int = 1024, warmup: bool = True
    ):
        self._models = {c.name: _ModelState(c) for c in configs}
        self._poll_seconds = poll_seconds
        self._max_batch_size = max_batch_size
        self._warmup = warmup
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self._thread: Optional[threading.Thread] = None

    # -- serving side
    def get(self, name: str, version: Optional[int] = None, label: str = "") -> Servable:
        model = self._models.get(name)
        if model is None:
            raise ServingError(
                grpc.StatusCode.NOT_FOUND,
                f"no model named {name!r} is served; this server serves {sorted(self._models)}",
            )
        if label:
            if label not in model.config.version_labels:
                raise ServingError(grpc.StatusCode.NOT_FOUND, f"model {name!r} has no version label {label!r}")
            version = model.config.version_labels[label]
        with self._lock:
            served = dict(model.served)
        if version is None:
            if not served:
                raise ServingError(
                    grpc.StatusCode.NOT_FOUND,
                    f"no version of model {name!r} is loaded yet (watching {model.config.base_path})",
                )
            return served[max(served)]
        if version not in served:
            raise ServingError(
                grpc.StatusCode.NOT_FOUND, f"model {name!r} has no version {version} loaded; loaded: {sorted(served)}"
            )
        return served[version]

    def status(self, name: str, version: Optional[int] = None) -> Dict[int, VersionStatus]:
        model = self._models.get(name)
        if model is None:
            raise ServingError(grpc.StatusCode.NOT_FOUND, f"no model named {name!r} is served")
        with self._lock:
            status = dict(model.status)
        if version is not None:
            if version not in status:
                raise ServingError(grpc.StatusCode.NOT_FOUND, f"model {name!r} has never seen version {version}")
            status = {version: status[version]}
        return status

    def model_names(self) -> List[str]:
        return sorted(self._models)

    # -- loading side
    def poll(self, require_stable: bool = False) -> bool:
        """One pass over every base path: load what the policy asks for, then retire what it no longer does.

        Returns whether a version is waiting to be seen unchanged once more before it loads.
        """
        waiting = False
        for model in self._models.values():
            waiting |= self._poll_model(model, require_stable)
        return waiting

    def start(self) -> None:
        if self._poll_seconds > 0 and self._thread is None:
            self._thread = threading.Thread(target=self._watch, name="camenn-version-poller", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stopped.set()
        if self._thread is not None:
            self._thread.join()

    def _watch(self) -> None:
        delay = self._poll_seconds
        while not self._stopped.wait(delay):
            try:
                waiting = self.poll(require_stable=True)
            except Exception:  # a bad file system moment must not end the poller
                log.exception("polling for new versions failed; trying again in %ss", self._poll_seconds)
                waiting = False
            # A new version is looked at again after SETTLE_SECONDS, not a whole poll interval: a push is
            # served within about one interval, yet only once its files stopped changing.
            delay = min(self._poll_seconds, SETTLE_SECONDS) if waiting else self._poll_seconds

    def _loadable(self, model: _ModelState, on_disk: Dict[int, str]) -> List[int]:
        """The versions on disk, less those that failed to load and have not changed since."""
        return [v for v, path in on_disk.items() if v not in model.failed or model.failed[v] != _fingerprint(path)]

    def _poll_model(self, model: _ModelState, require_stable: bool) -> bool:
        config = model.config
        waiting = False
        on_disk = version_directories(config.base_path)
        if not on_disk and not model.served:
            log.warning("no versions of model %r found under %s yet", config.name, config.base_path)
        # A version that fails to load is passed over: the policy then wants the next newest, so a broken
        # push never leaves a (re)started server with nothing to serve while a good version is on disk.
        for _ in range(len(on_disk) + 1):
            any_failed = False
            wanted = config.aspired(self._loadable(model, on_disk))
            for version in wanted:
                if version in model.served:
                    continue
                fingerprint = _fingerprint(on_disk[version])
                previous, model.seen[version] = model.seen.get(version), fingerprint
                if require_stable and previous != fingerprint:
                    waiting = True
                    continue  # new or still being written: look again soon
                if model.failed.get(version) == fingerprint:
                    continue
                any_failed |= not self._load(model, version, on_disk[version], fingerprint)
            if not any_failed:
                break
        loaded_wanted = [v for v in wanted if v in model.served]
        # Keep serving what we have until something the policy wants has loaded (availability first).
        keep = set(loaded_wanted) if loaded_wanted else set(model.served)
        for version in sorted(set(model.served) - keep):
            with self._lock:
                del model.served[version]
                model.status[version] = VersionStatus(State.END)
            log.info("model %r: version %d unloaded", config.name, version)
        return waiting

    def _load(self, model: _ModelState, version: int, path: str, fingerprint: Tuple) -> bool:
        """Loads and warms up one version; False (reported, logged, remembered) if it fails."""
        name = model.config.name
        with self._lock:
            model.status[version] = VersionStatus(State.LOADING)
        start = time.monotonic()
        try:
            servable = Servable(name, version, path)
            warmed = servable.warm_up(self._max_batch_size) if self._warmup else 0
        except Exception as error:  # any failure to load leaves the served versions as they are
            model.failed[version] = fingerprint
            with self._lock:
                model.status[version] = VersionStatus(
                    State.END, grpc.StatusCode.UNKNOWN, f"{type(error).__name__}: {error}"
                )
            log.error(
                "model %r: version %d at %s failed to load (retried when its files change): %s",
                name,
                version,
                path,
                error,
            )
            return False
        with self._lock:
            model.served[version] = servable
            model.status[version] = VersionStatus(State.AVAILABLE)
        model.failed.pop(version, None)
        log.info(
            "model %r: version %d loaded from %s in %.1fs (%d warmup requests, signatures %s)",
            name,
            version,
            path,
            time.monotonic() - start,
            warmed,
            sorted(servable.signatures),
        )
        return True
