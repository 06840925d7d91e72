"""`camenn serve` over a real socket: predictions, metadata, status, bad requests, limits, new versions."""

import shutil
import time

import grpc
import numpy as np
import pytest
import tensorflow as tf
from serving_helpers import Stubs, dense_inputs, item_example, predict_request
from tensorflow_serving.apis import get_model_metadata_pb2, get_model_status_pb2

from camenn.model import features as F
from camenn.serving.servables import ModelConfig, read_model_config_file
from camenn.serving.server import ModelServer

AVAILABLE = get_model_status_pb2.ModelVersionStatus.AVAILABLE


def outputs(response):
    return {name: tf.make_ndarray(tensor) for name, tensor in response.outputs.items()}


def test_predict_both_signatures_agree_and_lie_in_unit_interval(served, catalog):
    _, stubs = served
    items, _ = catalog
    arrays = dense_inputs(items, n=7)
    dense = stubs.predict.Predict(predict_request(arrays), timeout=10)
    assert dense.model_spec.version.value == 1 and dense.model_spec.signature_name == "dense"
    scores = outputs(dense)
    assert set(scores) == set(F.TASKS)
    for task in F.TASKS:
        assert scores[task].shape == (7,) and scores[task].dtype == np.float32
        assert ((scores[task] >= 0) & (scores[task] <= 1)).all()

    rows = [
        dict(shopper_id="shopper_1", hour=int(h), distance_km=float(d))
        for h, d in zip(arrays[F.HOUR], arrays[F.DISTANCE_KM])
    ]
    serialized = [item_example(items[i], **rows[i]) for i in range(7)]  # the same rows as tf.Examples
    examples = stubs.predict.Predict(
        predict_request({"examples": np.array(serialized, dtype=object)}, signature=""), timeout=10
    )
    assert examples.model_spec.signature_name == "serving_default"
    for task in F.TASKS:
        np.testing.assert_allclose(outputs(examples)[task], scores[task], rtol=1e-5)


def test_output_filter_returns_only_what_was_asked(served, catalog):
    _, stubs = served
    request = predict_request(dense_inputs(catalog[0], n=3))
    request.output_filter.append(F.ITA)
    assert set(stubs.predict.Predict(request, timeout=10).outputs) == {F.ITA}


def test_metadata_and_status(served):
    _, stubs = served
    request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
    request.model_spec.name = "camenn"
    response = stubs.predict.GetModelMetadata(request, timeout=10)
    signature_defs = get_model_metadata_pb2.SignatureDefMap()
    response.metadata["signature_def"].Unpack(signature_defs)
    assert set(signature_defs.signature_def) == {"serving_default", "dense", "rank", "listings", "encode_listings"}
    dense = signature_defs.signature_def["dense"]
    assert set(dense.inputs) == {
        *F.ID_FEATURES,
        *F.NUMERIC_FEATURES,
        *F.INTEGER_FEATURES,
        F.TEXT_EMBEDDINGS,
        F.PATCH_EMBEDDINGS,
    }
    assert set(dense.outputs) == set(F.TASKS)
    rank = signature_defs.signature_def["rank"]
    assert set(rank.inputs) == set(F.REQUEST_INPUTS) | {F.ITEM_ID} and set(rank.outputs) == set(F.TASKS)
    status = stubs.status()
    assert status[1].state == AVAILABLE and status[1].status.error_code == 0


def _without(arrays, name):
    return {k: v for k, v in arrays.items() if k != name}


def _request_side(arrays):
    return {k: v for k, v in arrays.items() if k in (*F.REQUEST_INPUTS, F.ITEM_ID)}


BAD_REQUESTS = {
    # case: (how to spoil a good request, expected code, words the message must contain). The export checks
    # shapes and values in its graph; the server checks names, dtypes, declared shapes and batch sizes first.
    "unknown model": (lambda a: predict_request(a, model="nope"), grpc.StatusCode.NOT_FOUND, "no model named 'nope'"),
    "unknown version": (lambda a: predict_request(a, version=99), grpc.StatusCode.NOT_FOUND, "no version 99"),
    "unknown signature": (
        lambda a: predict_request(a, signature="sideways"),
        grpc.StatusCode.NOT_FOUND,
        "no signature 'sideways'",
    ),
    "missing input": (
        lambda a: predict_request(_without(a, F.PRICE)),
        grpc.StatusCode.INVALID_ARGUMENT,
        "missing input(s) ['price']",
    ),
    "unknown input": (
        lambda a: predict_request({**a, "colour": np.array([b"red"] * 4, dtype=object)}),
        grpc.StatusCode.INVALID_ARGUMENT,
        "unknown input(s) ['colour']",
    ),
    "wrong dtype": (
        lambda a: predict_request({**a, F.PRICE: a[F.PRICE].astype(np.float64)}),
        grpc.StatusCode.INVALID_ARGUMENT,
        "'price' has dtype float64",
    ),
    "wrong shape": (
        lambda a: predict_request({**a, F.TEXT_EMBEDDINGS: a[F.TEXT_EMBEDDINGS][:, :5]}),
        grpc.StatusCode.INVALID_ARGUMENT,
        ("'text_embeddings'", "shape", "[4 5]"),
    ),
    "unknown item ids": (
        lambda a: predict_request(
            {
                **_request_side(a),
                F.ITEM_ID: np.array([b"item_001", b"no_such_item", b"item_002", b"nor_this"], dtype=object),
            },
            signature="rank",
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        ("signature 'rank' refused the input", "unknown item ids:] [no_such_item,nor_this]"),
    ),
    "wrong rank": (
        lambda a: predict_request({**a, F.HOUR: a[F.HOUR][:, None]}),
        grpc.StatusCode.INVALID_ARGUMENT,
        ("'hour'", "shape", "[4 1]"),
    ),
    "batch sizes disagree": (
        lambda a: predict_request({**a, F.PRICE: a[F.PRICE][:3]}),
        grpc.StatusCode.INVALID_ARGUMENT,
        "disagree on the batch size",
    ),
    "empty batch": (
        lambda a: predict_request({k: v[:0] for k, v in a.items()}),
        grpc.StatusCode.INVALID_ARGUMENT,
        "empty batch",
    ),
    "batch over the limit": (
        lambda a: predict_request({k: np.repeat(v, 17, axis=0) for k, v in a.items()}),
        grpc.StatusCode.INVALID_ARGUMENT,
        "over this server's limit of 64",
    ),
    "malformed tf.Example": (
        lambda a: predict_request({"examples": np.array([b"\x08garbage"], dtype=object)}, signature="serving_default"),
        grpc.StatusCode.INVALID_ARGUMENT,
        ("signature 'serving_default' refused the input", "Could not parse example input"),
    ),
    "value out of range": (
        lambda a: predict_request({**a, F.HOUR: a[F.HOUR] + 24}),
        grpc.StatusCode.INVALID_ARGUMENT,
        ("signature 'dense' refused the input", "'hour'"),
    ),
    "unknown output": (
        lambda a: _with_filter(predict_request(a), "price"),
        grpc.StatusCode.INVALID_ARGUMENT,
        "unknown output(s) ['price']",
    ),
}


def _with_filter(request, name):
    request.output_filter.append(name)
    return request


@pytest.mark.parametrize("case", sorted(BAD_REQUESTS))
def test_bad_request_gets_its_code_and_the_server_goes_on(served, catalog, case):
    _, stubs = served
    spoil, code, words = BAD_REQUESTS[case]
    good = dense_inputs(catalog[0], n=4)
    with pytest.raises(grpc.RpcError) as caught:
        stubs.predict.Predict(spoil(good), timeout=10)
    assert caught.value.code() == code, caught.value.details()
    for word in (words,) if isinstance(words, str) else words:
        assert word in caught.value.details()
    assert stubs.predict.Predict(predict_request(good), timeout=10).outputs[F.CVR].tensor_shape.dim[0].size == 4


def test_declared_shapes_are_checked_before_the_graph_runs(served_toy, catalog):
    _, stubs = served_toy  # its signature declares [None, 12] text tokens (CameNN's export checks in its graph)
    good = dense_inputs(catalog[0], n=4)
    with pytest.raises(grpc.RpcError) as caught:
        stubs.predict.Predict(predict_request({**good, F.TEXT_EMBEDDINGS: good[F.TEXT_EMBEDDINGS][:, :5]}), timeout=10)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "input 'text_embeddings' has shape [4, 5]; signature 'dense' expects [None, 12]" in caught.value.details()


def test_unimplemented_methods_say_so(served):
    _, stubs = served
    from tensorflow_serving.apis import classification_pb2

    with pytest.raises(grpc.RpcError) as caught:
        stubs.predict.Classify(classification_pb2.ClassificationRequest(), timeout=10)
    assert caught.value.code() == grpc.StatusCode.UNIMPLEMENTED and "Predict" in caught.value.details()


def test_new_version_is_picked_up_and_half_written_ones_are_not(tmp_path, toy_v1, catalog, push):
    base = tmp_path / "camenn"
    push(base, 1, source=toy_v1)
    good = predict_request(dense_inputs(catalog[0], n=4))
    with ModelServer([ModelConfig("camenn", str(base))], port=0, poll_seconds=0.1) as server:
        stubs = Stubs(server.port)
        before = stubs.predict.Predict(good, timeout=10)
        assert before.model_spec.version.value == 1

        # A folder mid-copy: a graph but no variables index yet; and one whose files are broken.
        (base / "7").mkdir()
        shutil.copy(toy_v1 / "saved_model.pb", base / "7")
        (base / "7" / "variables").mkdir()
        (base / "8").mkdir()
        (base / "8" / "saved_model.pb").write_bytes(b"not a graph")
        _wait_for(lambda: 8 in stubs.status(), "version 8's failed load to be reported")
        assert stubs.status()[8].status.error_code != 0 and stubs.status()[8].status.error_message
        assert 7 not in stubs.status()
        assert stubs.predict.Predict(good, timeout=10).model_spec.version.value == 1
        shutil.rmtree(base / "7")
        shutil.rmtree(base / "8")

        push(base, 2, cvr_bias=2.0)
        _wait_for(lambda: stubs.predict.Predict(good, timeout=10).model_spec.version.value == 2, "version 2")
        after = stubs.predict.Predict(good, timeout=10)
        assert (outputs(after)[F.CVR] > outputs(before)[F.CVR]).all()  # the new weights answer
        status = stubs.status()
        assert status[2].state == AVAILABLE and status[1].state == get_model_status_pb2.ModelVersionStatus.END
        stubs.channel.close()


def _wait_for(condition, what, timeout=30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def test_model_config_file_serves_each_model_by_its_policy(tmp_path, toy_v1, push):
    push(tmp_path / "a", 1, source=toy_v1)
    push(tmp_path / "a", 2, source=toy_v1)
    push(tmp_path / "b", 5, source=toy_v1)
    config = tmp_path / "models.config"
    config.write_text(f"""
model_config_list {{
  config {{ name: "a" base_path: "{tmp_path / "a"}" model_platform: "tensorflow"
           model_version_policy {{ specific {{ versions: 1 }} }} }}
  config {{ name: "b" base_path: "{tmp_path / "b"}" model_platform: "tensorflow"
           version_labels {{ key: "stable" value: 5 }} }}
}}""")
    configs = read_model_config_file(str(config))
    with ModelServer(configs, port=0, poll_seconds=0) as server:
        stubs = Stubs(server.port)
        assert set(stubs.status("a")) == {1}
        request = predict_request({}, model="b")
        request.model_spec.version_label = "stable"
        with pytest.raises(grpc.RpcError) as caught:  # b is served; the empty request is what is wrong
            stubs.predict.Predict(request, timeout=10)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        stubs.channel.close()


def test_bad_model_config_file_is_refused_with_its_reason(tmp_path):
    config = tmp_path / "models.config"
    config.write_text('model_config_list { config { name: "a" base_pth: "/x" } }')
    with pytest.raises(ValueError, match="base_pth"):
        read_model_config_file(str(config))


def test_limits_answer_resource_exhausted(toy_base, catalog):
    items, _ = catalog
    with ModelServer(
        [ModelConfig("camenn", str(toy_base))],
        port=0,
        poll_seconds=0,
        max_message_bytes=64 << 10,
        max_concurrent_requests=1,
        grpc_max_threads=4,
    ) as server:
        stubs = Stubs(server.port)
        too_big = predict_request(dense_inputs(items, n=60, shopper="s" * 2000))
        assert too_big.ByteSize() > 64 << 10
        with pytest.raises(grpc.RpcError) as caught:
            stubs.predict.Predict(too_big, timeout=10)
        assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED

        request = predict_request(dense_inputs(items, n=8))
        calls = [stubs.predict.Predict.future(request, timeout=30) for _ in range(32)]  # all at once
        codes = [_code(call) for call in calls]
        assert grpc.StatusCode.RESOURCE_EXHAUSTED in codes and grpc.StatusCode.OK in codes
        assert stubs.predict.Predict(request, timeout=10).model_spec.version.value == 1
        stubs.channel.close()


def _code(call):
    try:
        call.result()
        return grpc.StatusCode.OK
    except grpc.RpcError as error:
        return error.code()


def test_a_version_still_changing_waits_until_it_stops(tmp_path, toy_v1):
    from camenn.serving.servables import ModelManager

    base = tmp_path / "camenn"
    shutil.copytree(toy_v1, base / "1")
    manager = ModelManager([ModelConfig("camenn", str(base))], poll_seconds=0)
    manager.poll()
    shutil.copytree(toy_v1, base / "2")
    manager.poll(require_stable=True)  # first sight: not loaded yet
    assert manager.get("camenn").version == 1
    (base / "2" / "assets" / "still-copying").write_bytes(b"x")
    manager.poll(require_stable=True)  # changed since the last look: still waiting
    assert manager.get("camenn").version == 1
    manager.poll(require_stable=True)  # unchanged for one poll: loaded, and it replaces version 1
    assert manager.get("camenn").version == 2
    assert set(manager.status("camenn")) == {1, 2}
