"""Closed-loop gRPC clients for load tests of a PredictionService (bench/serving_load.py and the tests).

Each client sends the same Predict again and again, waiting for each answer; a refused request
(RESOURCE_EXHAUSTED) is retried after a jittered backoff (5 ms doubling to 100 ms, reset by a success),
as a gRPC client with a retry policy would. Figures per step: admitted (OK) latency p50 and p99, the
count of each status, the server's peak resident memory and CPU, and the clients' own CPU.

Example:
    step = Step("127.0.0.1", port, request, clients=16, seconds=3, max_requests=2000)
    figures = step.run(psutil.Process(server_pid))
    figures["p99_ms"], figures["codes"]
"""

import asyncio
import random
import threading
import time

import grpc
import numpy as np
import psutil
from tensorflow_serving.apis import prediction_service_pb2_grpc

BACKOFF_FIRST, BACKOFF_MAX = 0.005, 0.1


class Step:
    """`clients` closed-loop clients sending `request` for `seconds` (at most `max_requests` attempts in all).

    Args:
        host, port: the server (127.0.0.1 in the benchmarks and tests).
        request: the PredictRequest every client sends.
        clients, seconds, max_requests: how many, how long, how many requests at most.
        timeout: each request's deadline, seconds.

    The clients are coroutines on one asyncio loop (grpc.aio), each with its own channel: on a machine
    whose CPUs the server shares, they take far less CPU than as many threads would.
    """

    def __init__(
        self, host: str, port: int, request, clients: int, seconds: float, max_requests: int, timeout: float = 30.0
    ):
        self.address, self.request, self.clients = f"{host}:{port}", request, clients
        self.seconds, self.max_requests, self.timeout = seconds, max_requests, timeout
        self.ok = []  # latencies of admitted requests, seconds
        self.codes = {}
        self._attempts = 0

    async def _client(self, deadline: float) -> None:
        async with grpc.aio.insecure_channel(
            self.address, options=[("grpc.max_send_message_length", 64 << 20)]
        ) as channel:
            stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
            backoff = BACKOFF_FIRST
            while time.monotonic() < deadline and self._attempts < self.max_requests:
                self._attempts += 1
                started = time.perf_counter()
                try:
                    await stub.Predict(self.request, timeout=self.timeout)
                    code = grpc.StatusCode.OK
                except grpc.aio.AioRpcError as error:
                    code = error.code()
                latency = time.perf_counter() - started
                self.codes[code.name] = self.codes.get(code.name, 0) + 1
                if code == grpc.StatusCode.OK:
                    self.ok.append(latency)
                if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
                    await asyncio.sleep(random.uniform(0.5, 1.0) * backoff)
                    backoff = min(backoff * 2, BACKOFF_MAX)
                else:
                    backoff = BACKOFF_FIRST

    async def _all(self) -> None:
        deadline = time.monotonic() + self.seconds
        await asyncio.gather(*(self._client(deadline) for _ in range(self.clients)))

    def run(self, server: psutil.Process) -> dict:
        """Runs the step while sampling `server` (its process); returns the step's figures."""
        me = psutil.Process()
        thread = threading.Thread(target=lambda: asyncio.run(self._all()))
        cpu_before, own_before, started = server.cpu_times(), me.cpu_times(), time.perf_counter()
        rss = [server.memory_info().rss]
        thread.start()
        while thread.is_alive():
            rss.append(server.memory_info().rss)
            thread.join(0.2)
        wall = time.perf_counter() - started
        cpu_after, own_after = server.cpu_times(), me.cpu_times()
        ok = np.array(self.ok) * 1e3
        return {
            "clients": self.clients,
            "wall_s": wall,
            "attempts": sum(self.codes.values()),
            "codes": dict(self.codes),
            "ok": len(ok),
            "ok_per_s": len(ok) / wall,
            "p50_ms": float(np.percentile(ok, 50)) if len(ok) else float("nan"),
            "p99_ms": float(np.percentile(ok, 99)) if len(ok) else float("nan"),
            "rejected": self.codes.get("RESOURCE_EXHAUSTED", 0),
            "other_errors": {k: v for k, v in self.codes.items() if k not in ("OK", "RESOURCE_EXHAUSTED")},
            "server_rss_mib": max(rss) / 2**20,
            "server_rss_end_mib": rss[-1] / 2**20,
            "server_cpu": (sum(cpu_after[:2]) - sum(cpu_before[:2])) / wall,
            "client_cpu": (sum(own_after[:2]) - sum(own_before[:2])) / wall,
        }
