"""Ranking latency: one request of `--candidates` item ids (default 100) for one shopper, in-process and
through `camenn serve` over gRPC, against what the same ranking costs without the listing table.

Rows, all measured in this run on the same machine, at one client unless `--concurrency` says more:
1. `rank` in-process: the SavedModel's id-based signature called directly; each listing's states come
   from the version's listing table and only the request's tokens run. Goal: p99 <= 15 ms.
2. `rank` over gRPC: the same request through `RankingClient.score` and a `camenn serve` process on
   127.0.0.1. Goal: adds <= 1 ms to the in-process p99.
3. `dense` in-process: the same candidates scored by the whole model, every listing feature sent and
   every listing token recomputed per candidate (what serving cost before the listing table).
4. with `--full-attention`: `dense` of the same preset without listing-only attention (the alternative
   architecture, which has no listing table at all).
Besides: the model's multiply-adds per candidate on each path (counted from the architecture), and the
CPU's matrix-multiply rate measured now, at the request path's shapes and at a large square GEMM, so that
the achieved share of the machine is known.

    python bench/serving.py                                   # camenn_small, 480 synthetic listings
    python bench/serving.py --model_base_path outputs/serving_model/camenn   # a pushed version
"""

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf  # noqa: E402

from camenn.model import features as F  # noqa: E402
from camenn.serving import listings, servables  # noqa: E402
from camenn.serving.client import RankingClient  # noqa: E402

TEXT_TOKENS, TEXT_DIM, NUM_PATCHES, PATCH_DIM = 4, 384, 4, 1280


def synthetic_catalog(num_items, seed=0):
    rng = np.random.default_rng(seed)
    ids = np.array([f"item_{i:06d}".encode() for i in range(num_items)], dtype=object)
    return {
        F.ITEM_ID: ids,
        F.MERCHANT_ID: np.array([f"m{i % 40}".encode() for i in range(num_items)], dtype=object),
        F.CATEGORY: np.array([f"c{i % 81}".encode() for i in range(num_items)], dtype=object),
        F.COARSE_CATEGORY: np.array([f"k{i % 20}".encode() for i in range(num_items)], dtype=object),
        F.PRICE: rng.uniform(5, 50, num_items).astype(np.float32),
        F.TITLE: np.array([f"listing {i}".encode() for i in range(num_items)], dtype=object),
        F.TEXT_EMBEDDINGS: rng.normal(size=(num_items, TEXT_TOKENS * TEXT_DIM)).astype(np.float32),
        F.PATCH_EMBEDDINGS: rng.normal(size=(num_items, NUM_PATCHES * PATCH_DIM)).astype(np.float32),
    }


class HashedIds:
    """Raw string ids -> indices by hashing (the benchmark's stand-in for tf.Transform's vocabularies)."""

    def __init__(self, buckets):
        self.buckets = buckets

    def __call__(self, raw):
        out = {}
        for name, value in raw.items():
            value = tf.squeeze(value, 1) if value.shape.rank == 2 and value.shape[1] == 1 else value
            out[name] = tf.strings.to_hash_bucket_fast(value, self.buckets) if value.dtype == tf.string else value
        return out


def export_preset(preset, directory, catalog, **options):
    """`preset` with random weights (they cost what trained ones do), its listing table filled with `catalog`."""
    from camenn.model.camenn import CameNNMultiTask
    from camenn.model.camenn.export import export_saved_model

    buckets = 1000
    model = CameNNMultiTask.from_preset(
        preset,
        vocabulary_sizes={name: buckets for name in F.ID_FEATURES},
        num_text_tokens=TEXT_TOKENS,
        text_dim=TEXT_DIM,
        num_patches=NUM_PATCHES,
        patch_dim=PATCH_DIM,
        **options,
    )
    spec = {name: tf.io.FixedLenFeature([], tf.string) for name in F.ID_FEATURES}
    spec.update(
        {
            F.HOUR: tf.io.FixedLenFeature([], tf.int64),
            F.PRICE: tf.io.FixedLenFeature([], tf.float32),
            F.DISTANCE_KM: tf.io.FixedLenFeature([], tf.float32),
            F.TEXT_EMBEDDINGS: tf.io.FixedLenFeature([TEXT_TOKENS * TEXT_DIM], tf.float32),
            F.PATCH_EMBEDDINGS: tf.io.FixedLenFeature([NUM_PATCHES * PATCH_DIM], tf.float32),
        }
    )
    staging = directory + ".empty"
    export_saved_model(model, staging, transform=HashedIds(buckets), raw_feature_spec=spec)
    if listings.has_listing_table(staging):
        listings.write_listing_table(staging, catalog, directory)
        shutil.rmtree(staging)
    else:
        os.rename(staging, directory)
    return model


def multiply_adds_per_candidate(backbone):
    """Multiply-adds per candidate: the `rank` path (the request's tokens against cached keys and values)
    and the whole model (every token of the sequence), from the architecture's sizes."""
    h, i = backbone.hidden_dim, backbone.intermediate_dim
    listing, request = backbone.listing_length, backbone.request_length
    total = listing + request

    def layer(queries, keys, new_kv):  # projections, attention, feed-forward
        return (2 * queries + 2 * new_kv) * h * h + 2 * queries * keys * h + 2 * queries * h * i

    experts = backbone.top_k if backbone.expert_mixture is not None else 0
    tasks = len(backbone.task_names)
    rank = (backbone.num_shared_layers + experts) * layer(request, total, request) + layer(1, total, request)
    # The whole model: every layer over every token, the experts of the union of the tasks' choices (as
    # many as top_k when the task gates agree), and each task's tower at its own token.
    embed = (TEXT_TOKENS * TEXT_DIM + NUM_PATCHES * PATCH_DIM) * h
    whole = embed + (backbone.num_shared_layers + experts) * layer(total, total, total) + tasks * layer(1, total, total)
    return rank, whole


def gemm_rate(m, k, n, seconds=2.0):
    """Multiply-adds per second of a [m, k] x [k, n] float32 matmul on this CPU, now."""
    a, b = tf.random.normal([m, k]), tf.random.normal([k, n])
    matmul = tf.function(lambda a, b: tf.matmul(a, b))
    matmul(a, b).numpy()
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        matmul(a, b).numpy()
        count += 1
    return count * m * k * n / (time.perf_counter() - start)


def start_server(model_base_path, threads):
    command = [
        sys.executable,
        "-m",
        "camenn.serving.server",
        "--model_base_path",
        model_base_path,
        "--port",
        "0",
        "--grpc_max_threads",
        str(threads),
        "--file_system_poll_wait_seconds",
        "0",
        "--max_concurrent_requests",
        str(threads),
    ]  # every client admitted: this measures latency, not shedding
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    for line in process.stdout:
        if "serving gRPC on" in line:
            threading.Thread(target=lambda: [None for _ in process.stdout], daemon=True).start()  # keep draining
            return process, int(line.rsplit(":", 1)[1].split()[0])
    raise SystemExit(f"camenn serve did not start (exit {process.wait()})")


def measure(call, requests, concurrency):
    latencies = [0.0] * len(requests)
    chunks = [range(i, len(requests), concurrency) for i in range(concurrency)]

    def worker(indices):
        for i in indices:
            start = time.perf_counter()
            call(*requests[i])
            latencies[i] = time.perf_counter() - start

    threads = [threading.Thread(target=worker, args=(chunk,)) for chunk in chunks]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return np.array(latencies) * 1e3


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model_base_path", default=None, help="a pushed model's versions (default: export --preset)")
    parser.add_argument("--preset", default="camenn_small")
    parser.add_argument("--listings", type=int, default=480, help="synthetic catalog size (default 480, the sample's)")
    parser.add_argument("--candidates", type=int, default=100)
    parser.add_argument("--requests", type=int, default=200, help="requests per measurement (default 200)")
    parser.add_argument("--concurrency", default="1", help="comma-separated client counts (default 1)")
    parser.add_argument("--full-attention", action="store_true", help="also time the full-attention alternative")
    args = parser.parse_args()

    workdir = tempfile.mkdtemp(prefix="camenn-bench-serving-")
    catalog = synthetic_catalog(args.listings)
    backbone = None
    if args.model_base_path is None:
        args.model_base_path = os.path.join(workdir, "camenn")
        started = time.perf_counter()
        backbone = export_preset(args.preset, os.path.join(args.model_base_path, "1"), catalog).backbone
        print(
            f"exported {args.preset} with {args.listings} synthetic listings in {time.perf_counter() - started:.0f} s"
        )
    versions = servables.version_directories(args.model_base_path)
    version_dir = versions[max(versions)]
    model = tf.saved_model.load(version_dir)
    table_ids = listings.read_table(model)["item_ids"]
    if backbone is None:  # a pushed version: its own listings, features read back through `listings`
        catalog = None
    rank, dense = model.signatures["rank"], model.signatures["dense"]
    rng = np.random.default_rng(1)
    requests = [
        (f"shopper_{i % 50}", list(rng.choice(table_ids, args.candidates, replace=False))) for i in range(args.requests)
    ]

    def rank_in_process(shopper, items):
        n = len(items)
        return rank(
            item_id=tf.constant(items),
            shopper_id=tf.constant([shopper.encode()] * n),
            hour=tf.constant(np.full(n, 12, np.int64)),
            distance_km=tf.constant(np.full(n, 2.0, np.float32)),
        )

    rows = {}
    if catalog is not None:
        index = {item_id: k for k, item_id in enumerate(catalog[F.ITEM_ID])}

        def dense_of(signature):
            def call(shopper, items):
                take = [index[i] for i in items]
                inputs = {
                    name: tf.constant(catalog[name][take])
                    for name in signature.structured_input_signature[1]
                    if name in catalog
                }
                n = len(items)
                return signature(
                    **inputs,
                    shopper_id=tf.constant([shopper.encode()] * n),
                    hour=tf.constant(np.full(n, 12, np.int64)),
                    distance_km=tf.constant(np.full(n, 2.0, np.float32)),
                )

            return call

        expected, got = dense_of(dense)(*requests[0]), rank_in_process(*requests[0])
        for task in F.TASKS:
            np.testing.assert_allclose(got[task].numpy(), expected[task].numpy(), rtol=1e-4, atol=1e-6)
        paths = [("rank in-process", rank_in_process), ("dense in-process", dense_of(dense))]
        if args.full_attention:
            full_dir = os.path.join(workdir, "full", "1")
            export_preset(args.preset, full_dir, catalog, listing_only_attention=False)
            paths.append(("dense, full attention", dense_of(tf.saved_model.load(full_dir).signatures["dense"])))
    else:
        paths = [("rank in-process", rank_in_process)]

    levels = [int(c) for c in args.concurrency.split(",")]
    process, port = start_server(args.model_base_path, max(levels))
    client = RankingClient(port=port, timeout=120)
    grpc_rank = lambda shopper, items: client.score(shopper, [i.decode() for i in items], hour=12)  # noqa: E731
    paths.insert(1, ("rank over gRPC", grpc_rank))
    try:
        for _, call in paths:  # warm up: the first calls trace and allocate
            for request in requests[:5]:
                call(*request)
        for concurrency in levels:
            for name, call in paths:
                latencies = measure(call, requests, concurrency)
                rows[(concurrency, name)] = (np.percentile(latencies, 50), np.percentile(latencies, 99))
    finally:
        client.close()
        process.terminate()
        process.wait(30)

    print(f"\n{args.candidates} candidates per request, {args.requests} requests per row, model {version_dir}")
    print(f"{'clients':>7}  {'path':<24} {'p50 ms':>8} {'p99 ms':>8}")
    for (concurrency, name), (p50, p99) in rows.items():
        print(f"{concurrency:>7}  {name:<24} {p50:8.2f} {p99:8.2f}")
    one = levels[0]
    in_process, grpc = rows[(one, "rank in-process")], rows[(one, "rank over gRPC")]
    print(
        f"\ngoals: rank p99 in-process <= 15 ms: {in_process[1]:.2f} ms "
        f"({'met' if in_process[1] <= 15 else 'NOT met'}); gRPC adds <= 1 ms: {grpc[1] - in_process[1]:+.2f} ms at "
        f"p99, {grpc[0] - in_process[0]:+.2f} ms at p50 ({'met' if grpc[1] - in_process[1] <= 1 else 'NOT met'})"
    )
    if (one, "dense in-process") in rows:
        print(
            f"rank / dense (the listing table's saving): p50 {in_process[0] / rows[(one, 'dense in-process')][0]:.3f}x"
        )
    if backbone is not None:
        rank_macs, whole_macs = multiply_adds_per_candidate(backbone)
        square, shaped = (
            gemm_rate(1024, 1024, 1024),
            gemm_rate(args.candidates * backbone.request_length, backbone.hidden_dim, backbone.hidden_dim),
        )
        achieved = rank_macs * args.candidates / (in_process[0] / 1e3)
        print(
            f"multiply-adds per candidate: rank {rank_macs / 1e6:.2f} M, whole model {whole_macs / 1e6:.2f} M "
            f"({whole_macs / rank_macs:.1f}x)"
        )
        print(
            f"CPU matmul now: {square / 1e9:.1f} G multiply-adds/s at 1024^3, {shaped / 1e9:.1f} G at "
            f"[{args.candidates * backbone.request_length}, {backbone.hidden_dim}] x [{backbone.hidden_dim}, "
            f"{backbone.hidden_dim}]; rank achieves {achieved / 1e9:.2f} G/s at p50: {achieved / square:.1%} of the "
            f"large GEMM's rate, {achieved / shaped:.1%} of the request-shaped one's"
        )
    shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
