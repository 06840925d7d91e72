"""`camenn serve` under overload: clients ramp from 1 to 64 against its default limits, on 127.0.0.1 only.

Starts `camenn serve` (a child process, default limits) over a SavedModel, then runs one step per client
count (default 1, 2, 4, 8, 16, 32, 64). In a step every client, with its own channel, sends the same
Predict again and again for `--seconds` (and at most `--max-requests` in all): a closed loop, as callers
that wait for each answer. A refused request (RESOURCE_EXHAUSTED) is retried after a jittered
backoff (5 ms doubling to 100 ms, reset by a success), as a gRPC client with a retry policy would.

Per step it records the admitted (OK) requests' p50 and p99 latency, RESOURCE_EXHAUSTED and any other
status, OK requests per second, and the server's resident memory (RSS, sampled every 0.2 s) and CPU.
Figures are ratios against the 1-client step of the same run:

- overload: clients / (the server's capacity in concurrent requests = best OK/s x 1-client p50 s);
- p99 at N clients / p99 at 1 client (goal at 64: <= 3x);
- server RSS at the step's peak / after the 1-client step (goal: within 1.2x);
- no status but OK and RESOURCE_EXHAUSTED, and the server still answers at the end.

The clients are coroutines of one asyncio loop (grpc.aio) in this process, so they take little of the
CPUs the server shares (their CPU is printed too). The request comes from `build_request` alone: switch
it to load-test another signature.

    .venv/bin/python bench/serving_load.py [--model_base_path DIR] [--candidates 20] [--seconds 8]

Without --model_base_path it exports the tiny CameNN preset (random weights) the way the serving tests
do (tests/serving/serving_helpers.py). Extra server flags go after `--` (e.g. `-- --grpc_max_threads 4`).
"""

import argparse
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "serving"))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import serving_helpers  # noqa: E402
from load_clients import Step  # noqa: E402

HOST = "127.0.0.1"


def build_request(candidates: int):
    """The Predict request every client sends: one shopper, `candidates` listings, the `dense` signature.

    Args:
        candidates: rows of the request.

    Example:
    >>> build_request(20).model_spec.signature_name
    'dense'
    """
    items, _ = serving_helpers.make_catalog()
    return serving_helpers.predict_request(serving_helpers.dense_inputs(items, n=candidates))


def export_model(base: Path) -> Path:
    items, _ = serving_helpers.make_catalog()
    return serving_helpers.export_camenn_model(base / "1", items)


def start_server(base_path: str, extra_flags=()):
    """`camenn serve` on a free port of 127.0.0.1; returns (process, port) once it serves."""
    command = [
        sys.executable,
        "-m",
        "camenn",
        "serve",
        "--host",
        HOST,
        "--port",
        "0",
        "--model_base_path",
        base_path,
        *extra_flags,
    ]
    process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = []
    for line in process.stdout:
        lines.append(line)
        match = re.search(r"serving gRPC on \S+:(\d+)", line)
        if match:
            threading.Thread(target=lambda: [None for _ in process.stdout], daemon=True).start()  # drain its log
            return process, int(match.group(1))
    raise RuntimeError("camenn serve did not start:\n" + "".join(lines[-30:]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model_base_path", help="numbered SavedModel versions (default: export the tiny preset)")
    parser.add_argument("--clients", default="1,2,4,8,16,32,64")
    parser.add_argument("--candidates", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=8.0, help="per step (default 8)")
    parser.add_argument("--max-requests", type=int, default=5000, help="attempts per step at most (default 5000)")
    parser.add_argument("--timeout", type=float, default=30.0, help="client deadline per request, s (default 30)")
    parser.add_argument("server_flags", nargs="*", help="after --: more `camenn serve` flags")
    args = parser.parse_args()

    scratch = tempfile.TemporaryDirectory(prefix="camenn-load-")
    base = args.model_base_path
    if base is None:
        started = time.perf_counter()
        base = str(export_model(Path(scratch.name) / "camenn").parent)
        print(f"exported the tiny CameNN preset in {time.perf_counter() - started:.0f} s")
    request = build_request(args.candidates)
    process, port = start_server(base, args.server_flags)
    server = psutil.Process(process.pid)
    print(
        f"camenn serve (pid {process.pid}) on {HOST}:{port}, default limits"
        + (f" plus {' '.join(args.server_flags)}" if args.server_flags else "")
        + f"; {args.candidates} candidates per request; {psutil.cpu_count()} CPUs, "
        f"load average {os.getloadavg()[0]:.1f} before the run"
    )
    try:
        Step(HOST, port, request, 1, 2.0, 50, args.timeout).run(server)  # warm up: first calls trace and allocate
        results = [
            Step(HOST, port, request, int(n), args.seconds, args.max_requests, args.timeout).run(server)
            for n in args.clients.split(",")
        ]
        alive = process.poll() is None
        final = Step(HOST, port, request, 1, 1.0, 5, args.timeout).run(server) if alive else None
    finally:
        process.terminate()
        process.wait(30)
        scratch.cleanup()

    one = results[0]
    capacity = max(r["ok_per_s"] for r in results) * one["p50_ms"] / 1e3  # concurrent requests it completes
    print(
        f"\n{'clients':>7} {'overload':>8} {'attempts':>8} {'OK':>6} {'OK/s':>7} {'p50 ms':>8} {'p99 ms':>8} "
        f"{'p99/1':>6} {'EXHAUSTED':>9} {'other':>6} {'RSS MiB':>8} {'RSS/1':>6} {'srv CPU':>7} {'cli CPU':>7}"
    )
    for r in results:
        print(
            f"{r['clients']:7d} {r['clients'] / capacity:7.1f}x {r['attempts']:8d} {r['ok']:6d} "
            f"{r['ok_per_s']:7.1f} {r['p50_ms']:8.1f} {r['p99_ms']:8.1f} {r['p99_ms'] / one['p99_ms']:5.2f}x "
            f"{r['rejected']:9d} {sum(r['other_errors'].values()):6d} {r['server_rss_mib']:8.0f} "
            f"{r['server_rss_mib'] / one['server_rss_end_mib']:5.2f}x {r['server_cpu']:7.2f} {r['client_cpu']:7.2f}"
        )
    last = results[-1]
    others = {k: v for r in results for k, v in r["other_errors"].items()}
    rss_ratio = max(r["server_rss_mib"] for r in results) / one["server_rss_end_mib"]
    print(
        f"\ncapacity: about {capacity:.1f} concurrent requests (best {max(r['ok_per_s'] for r in results):.1f} OK/s "
        f"x 1-client p50 {one['p50_ms']:.1f} ms); load average {os.getloadavg()[0]:.1f} after the run"
    )
    goals = [
        ("server alive and answering after the ramp", alive and final is not None and final["ok"] > 0),
        (f"no status but OK / RESOURCE_EXHAUSTED: {others or 'none'}", not others),
        (f"server RSS within 1.2x of the 1-client step: {rss_ratio:.2f}x", rss_ratio <= 1.2),
        (
            f"admitted p99 at {last['clients']} clients <= 3x the 1-client p99: "
            f"{last['p99_ms']:.1f} / {one['p99_ms']:.1f} ms = {last['p99_ms'] / one['p99_ms']:.2f}x",
            last["p99_ms"] <= 3 * one["p99_ms"],
        ),
        (
            f"{last['clients']} clients are >= 10x overload: {last['clients'] / capacity:.1f}x",
            last["clients"] / capacity >= 10,
        ),
    ]
    for text, met in goals:
        print(f"  [{'met' if met else 'NOT met'}] {text}")


if __name__ == "__main__":
    main()
