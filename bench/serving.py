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

Without --item-features the listings are synthesised (--max-text-length token ids, --num-patches x
--patch-dim floats). Without --model_base_path the benchmark exports `--preset` (default camenn_small: the
all-MiniLM-L6-v2 text encoder's weights, the rest random, which costs the same as trained) for 2x2 patches
of EfficientNet-Lite0 (1280 floats), the preprocessing default, with ids hashed into 1000 rows.

    python bench/serving.py                      # camenn_small, synthetic listings
"""
import argparse
import os
import re
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf  # noqa: E402

from camenn.model import features as F  # noqa: E402
from camenn.serving import defaults, examples, servables  # noqa: E402
from camenn.serving.client import ItemFeatureStore, RankingClient  # noqa: E402

def synthetic_store(num_items, max_text_length, patch_floats, vocabulary_size, seed=0):
    """Listings with contract 2's item features and random values (half of each text is padding)."""
    rng = np.random.default_rng(seed)
    tokens = rng.integers(1, vocabulary_size, size=(num_items, max_text_length))
    tokens[:, max_text_length // 2:] = 0
    columns = {name: np.array([f"bench_{name}_{i % 17}".encode() for i in range(num_items)], dtype=object)
               for name in (F.MERCHANT_ID, F.CATEGORY, F.COARSE_CATEGORY, F.MERCHANT_SIZE)}
    columns[F.ITEM_ID] = np.array([f"bench_item_{i}".encode() for i in range(num_items)], dtype=object)
    columns[F.PRICE] = rng.uniform(5, 50, size=num_items).astype(np.float32)
    columns[F.TEXT_TOKEN_IDS] = tokens.astype(np.int64)
    columns[F.PATCH_EMBEDDINGS] = rng.random(size=(num_items, patch_floats), dtype=np.float32)
    return ItemFeatureStore(columns, source="synthetic listings")


def export_preset(preset, directory, num_patches, patch_dim, max_text_length, vocabulary_size=1000):
    """A random-weight export of a CameNN preset behind a raw-feature transform that hashes the ids."""
    from camenn.model.camenn import CameNNMultiTask
    from camenn.model.camenn.export import export_saved_model

    model = CameNNMultiTask.from_preset(preset, vocabulary_sizes={name: vocabulary_size for name in F.ID_FEATURES},
                                        num_patches=num_patches, patch_dim=patch_dim, max_text_length=max_text_length)
    spec = {name: tf.io.FixedLenFeature([], tf.string) for name in F.ID_FEATURES}
    spec.update({name: tf.io.FixedLenFeature([], tf.float32) for name in F.NUMERIC_FEATURES})
    spec.update({name: tf.io.FixedLenFeature([], tf.int64) for name in F.INTEGER_FEATURES})
    spec[F.TEXT_TOKEN_IDS] = tf.io.FixedLenFeature([max_text_length], tf.int64)
    spec[F.PATCH_EMBEDDINGS] = tf.io.FixedLenFeature([num_patches * patch_dim], tf.float32)

    def hash_ids(raw):
        return {**raw, **{name: tf.strings.to_hash_bucket_fast(raw[name], vocabulary_size) for name in F.ID_FEATURES}}

    export_saved_model(model, str(directory), transform=hash_ids, raw_feature_spec=spec)


def start_server(base_path, threads):
    command = [sys.executable, "-m", "camenn.serving.server", "--port", "0", "--model_base_path", str(base_path),
               "--file_system_poll_wait_seconds", "0", "--grpc_max_threads", str(threads),
               "--max_concurrent_requests", str(threads)]  # every client admitted: this measures latency, not shedding
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
    parser.add_argument("--model_base_path", default=None,
                        help="folder of numbered SavedModel versions (default: export --preset)")
    parser.add_argument("--preset", default="camenn_small", help="CameNN preset to export (default camenn_small)")
    parser.add_argument("--num-patches", type=int, default=4)
    parser.add_argument("--patch-dim", type=int, default=1280)
    parser.add_argument("--max-text-length", type=int, default=64)
    parser.add_argument("--item-features", default=None, help="OUT/items of `camenn preprocess` (default: synthetic)")
    parser.add_argument("--vocabulary-size", type=int, default=30522,
                        help="token ids of synthetic listings lie below this (default 30522, the BERT vocabulary)")
    parser.add_argument("--candidates", type=int, default=100)
    parser.add_argument("--requests", type=int, default=96, help="requests per measurement (default 96)")
    parser.add_argument("--concurrency", default="1,4,16")
    args = parser.parse_args()

    if args.model_base_path is None:
        args.model_base_path = os.path.join(tempfile.mkdtemp(prefix="camenn-bench-serving-"), "camenn")
        start = time.perf_counter()
        export_preset(args.preset, os.path.join(args.model_base_path, "1"), args.num_patches, args.patch_dim,
                      args.max_text_length)
        print(f"exported {args.preset} in {time.perf_counter() - start:.0f}s")
    versions = servables.version_directories(args.model_base_path)
    if not versions:
        raise SystemExit(f"no SavedModel version under {args.model_base_path}")
    version_dir = versions[max(versions)]
    signature_inputs = servables.read_meta_graph(version_dir).signature_def["dense"].inputs
    store = (ItemFeatureStore.load(args.item_features) if args.item_features
             else synthetic_store(max(1000, args.candidates), args.max_text_length, args.num_patches * args.patch_dim,
                                  args.vocabulary_size))
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
