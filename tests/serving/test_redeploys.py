"""Redeploys while `camenn serve` answers: good and broken pushes under load, and a SIGKILLed server restarted.

Versions are pushed the way TFX's Pusher writes them (tfx.utils.io_utils: every file but saved_model.pb,
then saved_model.pb last, straight into `<base>/<version>/`), over real gRPC on 127.0.0.1.
"""

import logging
import os
import shutil
import signal
import threading
import time
from pathlib import Path

import grpc
from serving_helpers import Stubs, dense_inputs, export_toy_model, predict_request, start_server_process
from tensorflow_serving.apis import get_model_status_pb2

from camenn.serving.servables import SETTLE_SECONDS, ModelConfig
from camenn.serving.server import ModelServer

AVAILABLE = get_model_status_pb2.ModelVersionStatus.AVAILABLE
POLL_SECONDS = 0.5
CLIENTS = 8


def push_like_the_pusher(source: Path, base: Path, version: int) -> Path:
    """Copies a SavedModel into base/version as tfx.components.Pusher does (saved_model.pb last)."""
    from tfx.utils import io_utils

    destination = base / str(version)
    io_utils.copy_dir(str(source), str(destination), deny_regex_patterns=[r"saved_model\.pb"])
    io_utils.copy_file(str(source / "saved_model.pb"), str(destination / "saved_model.pb"))
    return destination


def truncated_graph(source: Path, scratch: Path) -> Path:
    """A copy of `source` whose saved_model.pb lost its second half (a push cut short)."""
    broken = scratch / "truncated_graph"
    shutil.copytree(source, broken)
    graph = (source / "saved_model.pb").read_bytes()
    (broken / "saved_model.pb").write_bytes(graph[: len(graph) // 2])
    return broken


def unrestorable_variables(source: Path, scratch: Path) -> Path:
    """A copy of `source` whose graph parses but whose variables cannot be restored (a load that fails late)."""
    broken = scratch / "bad_variables"
    shutil.copytree(source, broken)
    for data in (broken / "variables").glob("variables.data-*"):
        data.write_bytes(data.read_bytes()[:16])
    return broken


class Clients:
    """`count` threads sending the same Predict in a loop; records (time, version or status name)."""

    def __init__(self, port: int, request, count: int):
        self.port, self.request = port, request
        self.answers = [[] for _ in range(count)]
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(k,)) for k in range(count)]

    def _run(self, k: int) -> None:
        stubs = Stubs(self.port)
        while not self._stop.is_set():
            try:
                answer = stubs.predict.Predict(self.request, timeout=30).model_spec.version.value
            except grpc.RpcError as error:
                answer = error.code().name
            self.answers[k].append((time.monotonic(), answer))
        stubs.channel.close()

    def __enter__(self) -> "Clients":
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join()

    def first_answer_from(self, version: int, timeout: float = 60.0) -> float:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            times = [t for answers in self.answers for t, v in list(answers) if v == version]
            if times:
                return min(times)
            time.sleep(0.02)
        raise AssertionError(f"no answer from version {version} within {timeout} s")


def _wait_for(condition, what, timeout=60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def test_good_and_broken_pushes_under_load_fail_no_request(tmp_path, toy_v1, catalog, caplog):
    items, _ = catalog
    base = tmp_path / "camenn"
    push_like_the_pusher(toy_v1, base, 1)
    v2 = export_toy_model(tmp_path / "v2", items, cvr_bias=2.0)
    request = predict_request(dense_inputs(items, n=8))
    caplog.set_level(logging.INFO, logger="camenn.serving.servables")
    with (
        ModelServer(
            [ModelConfig("camenn", str(base))], port=0, poll_seconds=POLL_SECONDS, max_concurrent_requests=4 * CLIENTS
        ) as server,
        Clients(server.port, request, CLIENTS) as clients,
    ):
        stubs = Stubs(server.port)
        time.sleep(1.0)
        pushed = time.monotonic()
        push_like_the_pusher(v2, base, 2)
        done = time.monotonic()
        answered = clients.first_answer_from(2) - done
        loaded = [r for r in caplog.records if "version 2 loaded" in r.getMessage()]
        load_seconds = float(loaded[0].getMessage().split(" in ")[1].split("s ")[0]) if loaded else float("nan")

        push_like_the_pusher(truncated_graph(v2, tmp_path), base, 3)
        push_like_the_pusher(unrestorable_variables(v2, tmp_path), base, 4)
        _wait_for(lambda: {3, 4} <= set(stubs.status()), "versions 3 and 4 to be tried")
        time.sleep(2 * POLL_SECONDS)  # more polls: the broken versions are not retried, and stay unserved
        status = stubs.status()
        stubs.channel.close()

    answers = [a for per_client in clients.answers for a in per_client]
    failed = [v for _, v in answers if not isinstance(v, int)]
    print(
        f"\nredeploys under {CLIENTS} clients: {len(answers)} requests, {len(failed)} failed; version 2 pushed in "
        f"{done - pushed:.2f} s, first answered {answered:.2f} s after the push (poll {POLL_SECONDS} s, settle "
        f"{SETTLE_SECONDS} s, load and warm-up {load_seconds:.2f} s)"
    )
    assert not failed, failed[:5]
    assert answered <= POLL_SECONDS + SETTLE_SECONDS + load_seconds + 1.0, answered
    for per_client in clients.answers:
        versions = [v for _, v in per_client]
        assert set(versions) <= {1, 2} and versions == sorted(versions), "a client went back, or got a broken one"
        assert versions[-1] == 2
    assert status[2].state == AVAILABLE
    for broken in (3, 4):
        assert status[broken].state != AVAILABLE and status[broken].status.error_message
        assert [r for r in caplog.records if r.levelno == logging.ERROR and f"version {broken} at" in r.getMessage()]
        assert len([r for r in caplog.records if f"version {broken} at" in r.getMessage()]) == 1, "retried"


def test_a_sigkilled_server_restarts_on_the_newest_version_that_loads(tmp_path, toy_v1, catalog):
    items, _ = catalog
    base = tmp_path / "camenn"
    push_like_the_pusher(toy_v1, base, 1)
    push_like_the_pusher(toy_v1, base, 2)
    request = predict_request(dense_inputs(items, n=4))
    flags = ["--model_base_path", str(base), "--file_system_poll_wait_seconds", "0.2"]
    process, port, _ = start_server_process(flags)
    try:
        stubs = Stubs(port)
        assert stubs.predict.Predict(request, timeout=30).model_spec.version.value == 2
        push_like_the_pusher(truncated_graph(toy_v1, tmp_path), base, 3)  # a bad push, then a crash
        _wait_for(lambda: 3 in stubs.status(), "version 3's failed load")
        stubs.channel.close()
    finally:
        os.kill(process.pid, signal.SIGKILL)
        process.wait()
    assert process.returncode == -signal.SIGKILL

    process, port, _ = start_server_process(flags)
    try:
        stubs = Stubs(port)
        assert stubs.predict.Predict(request, timeout=30).model_spec.version.value == 2
        status = stubs.status()
        assert status[2].state == AVAILABLE and status[3].state != AVAILABLE and status[3].status.error_message
        stubs.channel.close()
    finally:
        process.terminate()
        process.wait(30)
