"""`camenn serve`: TensorFlow Serving's gRPC PredictionService and ModelService, in Python, over SavedModels.

For machines without the tensorflow_model_server binary (like ours): the same protocol (the
tensorflow-serving-api protos), the same flags for what it implements, the same error codes (but for an
unknown signature name: NOT_FOUND here, FAILED_PRECONDITION in TensorFlow Serving). It serves the newest
version under each model's base path and picks up a newly pushed one without a restart.

Implemented: PredictionService.Predict, PredictionService.GetModelMetadata, ModelService.GetModelStatus.
Classify, Regress, MultiInference and HandleReloadConfigRequest answer UNIMPLEMENTED; there is no REST API.

Limits: a request over `--max_message_bytes` or arriving while `--max_concurrent_requests` are in flight
gets RESOURCE_EXHAUSTED; a batch over `--max_batch_size` rows gets INVALID_ARGUMENT. By default about one
request per CPU is in flight: under overload the server sheds what it cannot run at once (a refusal
costs the caller a retry, not a queue that delays every admitted request), so admitted latency stays
near the unloaded one and memory stays flat (bench/serving_load.py measures both). SIGTERM (or Ctrl-C)
stops taking requests, lets those in flight finish for `--grace_period_seconds`, and exits 0.
"""

import argparse
import logging
import signal
import threading
from concurrent import futures
from typing import Optional, Sequence

import grpc
import tensorflow as tf
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from camenn.serving import defaults
from camenn.serving.servables import ModelConfig, ModelManager, ServingError, read_model_config_file

log = logging.getLogger(__name__)


class PredictionServicer:
    """tensorflow.serving.PredictionService over a ModelManager."""

    def __init__(self, manager, max_batch_size: int):
        self._manager = manager
        self._max_batch_size = max_batch_size

    def _servable(self, model_spec):
        version = model_spec.version.value if model_spec.HasField("version") else None
        return self._manager.get(model_spec.name, version, model_spec.version_label)

    def Predict(self, request, context):
        servable = self._servable(request.model_spec)
        signature, outputs = servable.predict(request, self._max_batch_size)
        response = predict_pb2.PredictResponse()
        response.model_spec.name = servable.name
        response.model_spec.version.value = servable.version
        response.model_spec.signature_name = signature.name
        for name, value in outputs.items():
            response.outputs[name].CopyFrom(tf.make_tensor_proto(value))
        return response

    def GetModelMetadata(self, request, context):
        fields = list(request.metadata_field)
        if fields != ["signature_def"]:
            raise ServingError(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"metadata_field must be ['signature_def'] (the only metadata served), got {fields}",
            )
        servable = self._servable(request.model_spec)
        signature_defs = get_model_metadata_pb2.SignatureDefMap()
        for name, signature_def in servable.signature_defs.items():
            signature_defs.signature_def[name].CopyFrom(signature_def)
        response = get_model_metadata_pb2.GetModelMetadataResponse()
        response.model_spec.name = servable.name
        response.model_spec.version.value = servable.version
        response.metadata["signature_def"].Pack(signature_defs)
        return response

    def _unimplemented(self, method):
        raise ServingError(
            grpc.StatusCode.UNIMPLEMENTED,
            f"{method} is not implemented by camenn serve; use Predict (or TensorFlow Serving)",
        )

    def Classify(self, request, context):
        self._unimplemented("Classify")

    def Regress(self, request, context):
        self._unimplemented("Regress")

    def MultiInference(self, request, context):
        self._unimplemented("MultiInference")


class ModelServicer:
    """tensorflow.serving.ModelService: version states as TensorFlow Serving reports them."""

    def __init__(self, manager):
        self._manager = manager

    def GetModelStatus(self, request, context):
        spec = request.model_spec
        version = spec.version.value if spec.HasField("version") else None
        response = get_model_status_pb2.GetModelStatusResponse()
        for number, status in sorted(self._manager.status(spec.name, version).items()):
            entry = response.model_version_status.add(version=number, state=status.state)
            entry.status.error_code = status.error_code.value[0]
            entry.status.error_message = status.error_message
        return response

    def HandleReloadConfigRequest(self, request, context):
        raise ServingError(
            grpc.StatusCode.UNIMPLEMENTED,
            "HandleReloadConfigRequest is not implemented; restart with a new --model_config_file",
        )


def _answering_errors(method):
    """Turns a ServingError into its status, and anything unexpected into INTERNAL, so one bad request
    never takes the server down."""

    def handler(request, context):
        try:
            return method(request, context)
        except ServingError as error:
            context.abort(error.code, error.message)
        except Exception as error:  # noqa: BLE001 - answered, logged, and the server goes on
            log.exception("internal error in %s", method.__name__)
            context.abort(grpc.StatusCode.INTERNAL, f"{type(error).__name__}: {error}")

    return handler


class _Guarded:
    """Wraps every servicer method with _answering_errors, keeping the servicer base classes' names."""

    def __init__(self, servicer):
        for name in dir(servicer):
            if name[:1].isupper():
                setattr(self, name, _answering_errors(getattr(servicer, name)))


class ModelServer:
    """The gRPC server: loads the models, binds, serves, watches for new versions.

    Args:
        configs: the ModelConfigs to serve (see `camenn.serving.servables`).
        host, port: where to listen; port 0 picks a free port (read `.port` after `start()`).
        max_concurrent_requests, grpc_max_threads: 0 means one per usable CPU, and as many threads.
        Other arguments: as the flags of `add_server_flags` with the same names.

    Example:
    ```python-needs-server
    from camenn.serving.client import RankingClient
    from camenn.serving.servables import ModelConfig

    with ModelServer([ModelConfig("camenn", "outputs/serving_model/camenn")], port=0) as server:
        print("serving on", server.port)  # a free port
        with RankingClient(port=server.port) as client:
            assert len(client.rank("shopper_1", ["item_001", "item_002"])) == 2
    ```
    """

    def __init__(
        self,
        configs,
        host: str = "127.0.0.1",
        port: int = defaults.GRPC_PORT,
        poll_seconds: float = 1.0,
        max_batch_size: int = 1024,
        max_concurrent_requests: int = 0,
        grpc_max_threads: int = 0,
        max_message_bytes: int = 64 << 20,
        enable_model_warmup: bool = True,
    ):
        self.host = host
        self._requested_port = port
        self.port: Optional[int] = None
        self.manager = ModelManager(configs, poll_seconds, max_batch_size, enable_model_warmup)
        self._max_batch_size = max_batch_size
        self._max_concurrent_requests = max_concurrent_requests or defaults.usable_cpus()
        self._grpc_max_threads = grpc_max_threads or self._max_concurrent_requests
        self._max_message_bytes = max_message_bytes
        self._server = None

    def start(self) -> "ModelServer":
        self.manager.poll()
        options = [
            ("grpc.max_receive_message_length", self._max_message_bytes),
            ("grpc.max_send_message_length", self._max_message_bytes),
            ("grpc.so_reuseport", 0),
        ]
        self._server = grpc.server(
            futures.ThreadPoolExecutor(self._grpc_max_threads, "camenn-grpc"),
            options=options,
            maximum_concurrent_rpcs=self._max_concurrent_requests,
        )
        prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
            _Guarded(PredictionServicer(self.manager, self._max_batch_size)), self._server
        )
        model_service_pb2_grpc.add_ModelServiceServicer_to_server(_Guarded(ModelServicer(self.manager)), self._server)
        address = f"[{self.host}]" if ":" in self.host else self.host
        self.port = self._server.add_insecure_port(f"{address}:{self._requested_port}")
        if not self.port:
            raise OSError(
                f"cannot listen on {self.host}:{self._requested_port} (in use, or not an address of this machine)"
            )
        self._server.start()
        self.manager.start()
        log.info(
            "limits: %d requests in flight (more get RESOURCE_EXHAUSTED) on %d threads, %d rows a batch, "
            "%d MiB a message",
            self._max_concurrent_requests,
            self._grpc_max_threads,
            self._max_batch_size,
            self._max_message_bytes >> 20,
        )
        return self

    def stop(self, grace: Optional[float] = None) -> None:
        """Stops taking requests, lets those in flight finish within `grace` seconds, stops the poller."""
        if self._server is not None:
            self._server.stop(grace).wait()
        self.manager.stop()

    def __enter__(self) -> "ModelServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop(0)


def configs_from_flags(args):
    if args.model_config_file:
        return read_model_config_file(args.model_config_file)
    return [ModelConfig(args.model_name, str(args.model_base_path))]


def serve(args) -> int:
    """Runs `camenn serve` until SIGTERM or Ctrl-C."""
    if args.rest_api_port:
        log.warning("--rest_api_port=%d ignored: camenn serve speaks gRPC only", args.rest_api_port)
    try:
        configs = configs_from_flags(args)
    except ValueError as error:
        log.error("%s", error)
        return 2
    server = ModelServer(
        configs,
        args.host,
        args.port,
        args.file_system_poll_wait_seconds,
        args.max_batch_size,
        args.max_concurrent_requests,
        args.grpc_max_threads,
        args.max_message_bytes,
        args.enable_model_warmup,
    )
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    try:
        server.start()
    except OSError as error:
        log.error("%s", error)
        return 1
    for config in configs:
        log.info("model %r: base path %s, version policy %s", config.name, config.base_path, config.policy)
    log.info("serving gRPC on %s:%d (PredictionService, ModelService)", server.host, server.port)
    stop.wait()
    log.info("stopping: finishing requests in flight (grace %.0fs)", args.grace_period_seconds)
    server.stop(args.grace_period_seconds)
    log.info("stopped")
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    """`python -m camenn.serving.server FLAGS`: the same as `camenn serve FLAGS`."""
    from camenn.serving.cli import add_server_flags

    parser = argparse.ArgumentParser(
        prog="camenn serve", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_server_flags(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S"
    )
    return serve(args)


if __name__ == "__main__":
    raise SystemExit(main())
