"""The TensorFlow Serving bundle: its text protos parse with the real message types, its warmup requests
parse and succeed against a server, and its Kubernetes documents hold what Kubernetes requires."""

import argparse
import os
import stat
import subprocess

import grpc
import pytest
import tensorflow as tf
import yaml
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, text_format, wrappers_pb2
from serving_helpers import Stubs, event_examples
from tensorflow_serving.apis import get_model_status_pb2, prediction_log_pb2
from tensorflow_serving.config import model_server_config_pb2

from camenn.serving import bundle, cli
from camenn.serving.servables import ModelConfig
from camenn.serving.server import ModelServer

AVAILABLE = get_model_status_pb2.ModelVersionStatus.AVAILABLE


def batching_parameters_class():
    """tensorflow.serving.BatchingParameters, field for field as tensorflow_serving/servables/tensorflow/
    session_bundle_config.proto declares it (the pip package ships no Python module for that file)."""
    file = descriptor_pb2.FileDescriptorProto(
        name="camenn_test/session_bundle_config.proto",
        package="tensorflow.serving",
        syntax="proto3",
        dependency=["google/protobuf/wrappers.proto"],
    )
    message = file.message_type.add(name="BatchingParameters")
    F = descriptor_pb2.FieldDescriptorProto
    for number, (name, type_name) in enumerate(
        [
            ("max_batch_size", ".google.protobuf.Int64Value"),
            ("batch_timeout_micros", ".google.protobuf.Int64Value"),
            ("max_enqueued_batches", ".google.protobuf.Int64Value"),
            ("num_batch_threads", ".google.protobuf.Int64Value"),
            ("thread_pool_name", ".google.protobuf.StringValue"),
        ],
        start=1,
    ):
        message.field.add(name=name, number=number, type=F.TYPE_MESSAGE, label=F.LABEL_OPTIONAL, type_name=type_name)
    message.field.add(name="allowed_batch_sizes", number=6, type=F.TYPE_INT64, label=F.LABEL_REPEATED)
    message.field.add(name="pad_variable_length_inputs", number=7, type=F.TYPE_BOOL, label=F.LABEL_OPTIONAL)
    pool = descriptor_pool.DescriptorPool()
    wrappers = descriptor_pb2.FileDescriptorProto()
    wrappers_pb2.DESCRIPTOR.CopyToProto(wrappers)
    pool.Add(wrappers)
    pool.Add(file)
    return message_factory.MessageFactory(pool).GetPrototype(
        pool.FindMessageTypeByName("tensorflow.serving.BatchingParameters")
    )


@pytest.fixture
def written(model_base, catalog):
    items, _ = catalog
    return bundle.write_serving_bundle(model_base.parent, "camenn", event_examples(items, 8))


def test_models_config_parses_as_model_server_config(written):
    config = text_format.Parse(written.models_config.read_text(), model_server_config_pb2.ModelServerConfig())
    (model,) = config.model_config_list.config
    assert model.name == "camenn" and model.base_path == "/models/camenn" and model.model_platform == "tensorflow"
    assert model.model_version_policy.latest.num_versions == 1


def test_models_config_lists_the_retrieval_model_beside_the_ranker(model_base, catalog):
    from camenn.serving.servables import read_model_config_file

    items, _ = catalog
    (model_base.parent / "camenn_retrieval").mkdir()
    written = bundle.write_serving_bundle(
        model_base.parent, "camenn", event_examples(items, 2), more_models=["camenn_retrieval"]
    )
    config = text_format.Parse(written.models_config.read_text(), model_server_config_pb2.ModelServerConfig())
    assert [(m.name, m.base_path) for m in config.model_config_list.config] == [
        ("camenn", "/models/camenn"),
        ("camenn_retrieval", "/models/camenn_retrieval"),
    ]
    # The local twin names this machine's folders, for `camenn serve --model_config_file`.
    local = read_model_config_file(str(written.local_models_config))
    assert [(c.name, c.base_path) for c in local] == [
        ("camenn", str(model_base.resolve())),
        ("camenn_retrieval", str((model_base.parent / "camenn_retrieval").resolve())),
    ]


def test_batching_parameters_parse_as_batching_parameters(written):
    parameters = text_format.Parse(written.batching_parameters.read_text(), batching_parameters_class()())
    assert parameters.max_batch_size.value == bundle.BatchingParameters().max_batch_size
    assert 0 < parameters.batch_timeout_micros.value <= 5000
    assert parameters.num_batch_threads.value >= 1 and parameters.max_enqueued_batches.value >= 1


def test_warmup_requests_parse_and_succeed_against_the_server(written, model_base):
    assert written.warmup_requests == model_base / "1" / "assets.extra" / "tf_serving_warmup_requests"
    logs = [
        prediction_log_pb2.PredictionLog.FromString(r)
        for r in tf.data.TFRecordDataset(str(written.warmup_requests)).as_numpy_iterator()
    ]
    assert {log.predict_log.request.model_spec.signature_name for log in logs} == {
        "serving_default",
        "dense",
        "rank",
        "listings",
        "encode_listings",
    }
    assert {log.WhichOneof("log_type") for log in logs} == {"predict_log"}
    with ModelServer([ModelConfig("camenn", str(model_base))], port=0, poll_seconds=0) as server:
        stubs = Stubs(server.port)
        assert stubs.status()[1].state == AVAILABLE  # the load replayed them
        for log in logs:
            request = log.predict_log.request
            response = stubs.predict.Predict(request, timeout=10)
            rows = next(iter(request.inputs.values())).tensor_shape.dim[0].size
            assert response.outputs and {t.tensor_shape.dim[0].size for t in response.outputs.values()} == {rows}
            if request.model_spec.signature_name in ("serving_default", "dense", "rank"):
                assert set(response.outputs) == {"cvr", "ita", "tia"}
        stubs.channel.close()


def test_a_failing_warmup_request_fails_the_load(toy_base, catalog):
    items, _ = catalog
    path = bundle.write_warmup_requests(toy_base / "1", event_examples(items, 2))
    logs = [
        prediction_log_pb2.PredictionLog.FromString(r) for r in tf.data.TFRecordDataset(str(path)).as_numpy_iterator()
    ]
    del logs[0].predict_log.request.inputs["examples" if "examples" in logs[0].predict_log.request.inputs else "price"]
    with tf.io.TFRecordWriter(str(path)) as writer:
        for log in logs:
            writer.write(log.SerializeToString())
    with ModelServer([ModelConfig("camenn", str(toy_base))], port=0, poll_seconds=0) as server:
        stubs = Stubs(server.port)
        status = stubs.status()[1]
        assert status.state != AVAILABLE and "warmup request 0 failed" in status.status.error_message
        with pytest.raises(grpc.RpcError) as caught:
            stubs.predict.Predict(logs[1].predict_log.request, timeout=10)
        assert caught.value.code() == grpc.StatusCode.NOT_FOUND
        stubs.channel.close()


def test_kubernetes_documents_hold_what_kubernetes_requires(written):
    documents = list(yaml.safe_load_all(written.kubernetes.read_text()))
    by_kind = {d["kind"]: d for d in documents}
    assert set(by_kind) == {"ConfigMap", "PersistentVolumeClaim", "Deployment", "Service"}
    for document in documents:
        assert document["apiVersion"] and document["metadata"]["name"]
    deployment = by_kind["Deployment"]
    assert deployment["apiVersion"] == "apps/v1"
    pod = deployment["spec"]["template"]
    selector = deployment["spec"]["selector"]["matchLabels"]
    assert selector and selector.items() <= pod["metadata"]["labels"].items()
    (container,) = pod["spec"]["containers"]
    assert container["name"] and container["image"] == "tensorflow/serving:2.16.1"
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"grpc": 8500, "http": 8501}
    probe = container["readinessProbe"]["httpGet"]
    assert probe["path"] == "/v1/models/camenn" and probe["port"] in ("http", 8501)
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    assert {m["name"] for m in container["volumeMounts"]} <= set(volumes)
    assert volumes["config"]["configMap"]["name"] == by_kind["ConfigMap"]["metadata"]["name"]
    assert (
        volumes["models"]["persistentVolumeClaim"]["claimName"] == by_kind["PersistentVolumeClaim"]["metadata"]["name"]
    )
    flags = dict(arg.lstrip("-").split("=", 1) for arg in container["args"])
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    config_map = by_kind["ConfigMap"]["data"]
    for flag in ("model_config_file", "batching_parameters_file"):
        folder, name = os.path.split(flags[flag])
        assert folder == mounts["config"] and name in config_map
    text_format.Parse(config_map["models.config"], model_server_config_pb2.ModelServerConfig())
    text_format.Parse(config_map["batching_parameters.txt"], batching_parameters_class()())
    claim = by_kind["PersistentVolumeClaim"]["spec"]
    assert claim["accessModes"] and claim["resources"]["requests"]["storage"]
    service = by_kind["Service"]["spec"]
    assert service["selector"].items() <= pod["metadata"]["labels"].items()
    assert {(p["port"], p["targetPort"]) for p in service["ports"]} == {(8500, "grpc"), (8501, "http")}


def test_docker_command_is_a_valid_executable_script(written):
    script = written.docker_run
    assert script.stat().st_mode & stat.S_IXUSR
    subprocess.run(["sh", "-n", str(script)], check=True)
    text = script.read_text()
    for piece in (
        "tensorflow/serving:2.16.1",
        "-p 8500:8500",
        "-p 8501:8501",
        ":/models",
        "--model_config_file=/models/models.config",
        "--batching_parameters_file=/models/batching_parameters.txt",
        "--enable_batching=true",
        "--enable_model_warmup=true",
    ):
        assert piece in text


def test_serving_bundle_verb(model_base, catalog, tmp_path):
    items, _ = catalog
    examples_dir = tmp_path / "examples" / "eval"
    examples_dir.mkdir(parents=True)
    with tf.io.TFRecordWriter(
        str(examples_dir / "part-0.tfrecord.gz"), tf.io.TFRecordOptions(compression_type="GZIP")
    ) as w:
        for record in event_examples(items, 5):
            w.write(record)
    parser = argparse.ArgumentParser()
    cli.register(parser.add_subparsers())
    args = parser.parse_args(
        [
            "serving-bundle",
            "--serving-base",
            str(model_base.parent),
            "--warmup-examples",
            str(examples_dir / "*.tfrecord.gz"),
        ]
    )
    assert args.func(args) == 0
    assert (model_base / "1" / "assets.extra" / "tf_serving_warmup_requests").exists()
    assert (model_base.parent / "kubernetes.yaml").exists() and (model_base.parent / "models.config").exists()
