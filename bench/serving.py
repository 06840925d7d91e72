"""Serving latency and throughput: `camenn serve` over gRPC against the same SavedModel called in-process.

Each request ranks `--candidates` listings (default 100) for one shopper. Through gRPC a request is what
`camenn rank` does: the ranking client attaches the cached item features, builds the `dense` Predict
request, sends it to a `camenn serve` process on localhost and reads the scores back. The baseline, in
this process and in the same run, attaches the same features and calls the SavedModel's `dense` signature
directly. Both run at 1, 4 and 16 concurrent clients (threads) and report p50 and p99 latency and
candidates scored per second; the ratios gRPC / in-process are the serving overhead.

Goals (small preset, cached item features, this 2-core CPU): p99 <= 20 ms at one client; gRPC at most
1.5x the in-process call.

    python bench/serving.py --model_base_path outputs/serving_model/camenn --item-features OUT/items

Without --item-features the listings are synthesised with the shapes the model's `dense` signature
declares (ids unknown to the model: its out-of-vocabulary rows, which cost the same).
"""
import argparse
import os
import re
import subprocess
import sys
import threading
import time

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf  # noqa: E402

from camenn.model import features as F  # noqa: E402
from camenn.serving import defaults, examples, servables  # noqa: E402
from camenn.serving.client import ItemFeatureStore, RankingClient  # noqa: E402

CONTEXT = (F.SHOPPER_ID, F.HOUR, F.DISTANCE_KM)


def synthetic_store(signature_inputs, num_items, vocabulary_size, seed=0):
    """Listings with the dense signature's item inputs, random values of the declared shapes and dtypes."""
    rng = np.random.default_rng(seed)
    columns = {F.ITEM_ID: np.array([f"bench_item_{i}".encode() for i in range(num_items)], dtype=object)}
    for name, info in signature_inputs.items():
        if name in CONTEXT or name == F.ITEM_ID:
            continue
        dtype = tf.dtypes.as_dtype(info.dtype)
        inner = [d.size for d in info.tensor_shape.dim[1:]]
        shape = [num_items] + inner
        if dtype == tf.string:
            columns[name] = np.array([f"bench_{name}_{i % 17}".encode() for i in range(num_items)], dtype=object)
        elif name == F.TEXT_TOKEN_IDS:
            tokens = rng.integers(1, vocabulary_size, size=shape)
            tokens[:, shape[1] // 2:] = 0  # half padding, as real listings
            columns[name] = tokens.astype(np.int64)
        elif dtype.is_integer:
            columns[name] = rng.integers(0, 24, size=shape).astype(dtype.as_numpy_dtype)
        else:
            columns[name] = rng.random(size=shape).astype(dtype.as_numpy_dtype)
    columns.setdefault(F.MERCHANT_ID, np.array([b"bench_merchant"] * num_items, dtype=object))
    return ItemFeatureStore(columns, source="synthetic listings")


def start_server(base_path, threads):
    command = [sys.executable, "-m", "camenn.serving.server", "--port", "0", "--model_base_path", str(base_path),
               "--file_system_poll_wait_seconds", "0", "--grpc_max_threads", str(threads)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    for line in process.stdout:
        match = re.search(r"serving gRPC on \S+:(\d+)", line)
        if match:
            threading.Thread(target=lambda: [None for _ in process.stdout], daemon=True).start()  # drain its log
            return process, int(match.group(1))
    raise RuntimeError("the server did not start")


def measure(call, request_args, concurrency):
    """Runs every request once, spread over `concurrency` threads; returns latencies (s) and wall time."""
    latencies = [0.0] * len(request_args)
    chunks = [range(i, len(request_args), concurrency) for i in range(concurrency)]

    def worker(indices):
        for i in indices:
            start = time.perf_counter()
            call(*request_args[i])
            latencies[i] = time.perf_counter() - start

    threads = [threading.Thread(target=worker, args=(chunk,)) for chunk in chunks]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return np.array(latencies), time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model_base_path", default=str(defaults.MODEL_BASE_PATH),
                        help="folder of numbered SavedModel versions (default outputs/serving_model/camenn)")
    parser.add_argument("--item-features", default=None, help="OUT/items of `camenn preprocess` (default: synthetic)")
    parser.add_argument("--vocabulary-size", type=int, default=30522,
                        help="token ids of synthetic listings lie below this (default 30522, the BERT vocabulary)")
    parser.add_argument("--candidates", type=int, default=100)
    parser.add_argument("--requests", type=int, default=96, help="requests per measurement (default 96)")
    parser.add_argument("--concurrency", default="1,4,16")
    args = parser.parse_args()

    versions = servables.version_directories(args.model_base_path)
    if not versions:
        raise SystemExit(f"no SavedModel version under {args.model_base_path}")
    version_dir = versions[max(versions)]
    signature_inputs = servables._read_meta_graph(version_dir).signature_def["dense"].inputs
    store = (ItemFeatureStore.load(args.item_features) if args.item_features
             else synthetic_store(signature_inputs, max(1000, args.candidates), args.vocabulary_size))
    print(f"model: {version_dir}")
    print(f"listings: {store.source} ({len(store)}); {args.candidates} candidates per request, "
          f"{args.requests} requests per measurement")

    rng = np.random.default_rng(1)
    request_args = [(f"shopper_{i % 50}", list(rng.choice(store.item_ids, args.candidates, replace=False)))
                    for i in range(args.requests)]

    dense = tf.saved_model.load(version_dir).signatures["dense"]

    def in_process(shopper, items):
        columns = store.rows(items)
        n = len(items)
        columns[F.SHOPPER_ID] = np.full(n, shopper.encode(), dtype=object)
        columns[F.HOUR] = np.full(n, 12, dtype=np.int64)
        columns[F.DISTANCE_KM] = np.full(n, defaults.DISTANCE_KM, dtype=np.float32)
        outputs = dense(**examples.signature_arrays(columns, signature_inputs))
        return {task: outputs[task].numpy() for task in F.TASKS}

    levels = [int(c) for c in args.concurrency.split(",")]
    process, port = start_server(args.model_base_path, threads=max(levels))
    client = RankingClient(store, port=port, timeout=120)
    grpc_call = lambda shopper, items: client.score(shopper, items, hour=12)  # noqa: E731
    try:
        # Same answers both ways, then warm both paths up (first calls trace and allocate).
        probe = request_args[0]
        expected, served = in_process(*probe), grpc_call(*probe)
        for task in F.TASKS:
            np.testing.assert_allclose(served[task], expected[task], rtol=1e-4, atol=1e-6)
        for _ in range(3):
            in_process(*probe)
            grpc_call(*probe)

        rows = []
        for concurrency in levels:
            for name, call in (("in-process", in_process), ("gRPC", grpc_call)):
                latencies, wall = measure(call, request_args, concurrency)
                rows.append((concurrency, name, np.percentile(latencies, 50) * 1e3, np.percentile(latencies, 99) * 1e3,
                             len(request_args) * args.candidates / wall))
    finally:
        client.close()
        process.terminate()
        process.wait(30)

    print(f"\n{'clients':>7}  {'path':<10} {'p50 ms':>8} {'p99 ms':>8} {'cand/s':>9}")
    for concurrency, name, p50, p99, rate in rows:
        print(f"{concurrency:>7}  {name:<10} {p50:8.2f} {p99:8.2f} {rate:9.0f}")
    print("\ngRPC / in-process (same run):")
    by_key = {(c, n): (p50, p99, rate) for c, n, p50, p99, rate in rows}
    for concurrency in levels:
        base, served = by_key[(concurrency, "in-process")], by_key[(concurrency, "gRPC")]
        print(f"  {concurrency:>2} clients: p50 {served[0] / base[0]:.2f}x, p99 {served[1] / base[1]:.2f}x, "
              f"throughput {served[2] / base[2]:.2f}x")
    p99_one = by_key[(levels[0], "gRPC")][1]
    overhead = by_key[(levels[0], "gRPC")][0] / by_key[(levels[0], "in-process")][0]
    print(f"\ngoals: p99 at {levels[0]} client <= 20 ms: {p99_one:.1f} ms ({'met' if p99_one <= 20 else 'NOT met'}); "
          f"gRPC overhead <= 1.5x: {overhead:.2f}x ({'met' if overhead <= 1.5 else 'NOT met'})")


if __name__ == "__main__":
    main()
