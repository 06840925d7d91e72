"""Recommendation latency: retrieval over every listing, then ranking its top 100, through one `camenn serve`
serving both models on 127.0.0.1, against ranking 100 given item ids alone (what `camenn rank` does),
measured in the same run.

Rows, one client, `--requests` requests each after a warm-up, the three paths taking turns request by
request:
1. baseline, `rank` of 100 item ids over gRPC (`RankingClient.score`);
2. `retrieve`: one Predict to the retrieval model (the top 100 of every listing, with their columns);
3. `recommend`: both, as `camenn recommend` does (`RecommendationClient.recommend`). Goal: p99 <= 25 ms.

    python bench/recommend.py                                  # camenn_small + retrieval_small, 480 synthetic listings
    python bench/recommend.py --serving-base outputs/serving_model   # the pushed versions
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
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import tensorflow as tf  # noqa: E402

import camenn  # noqa: E402,F401  (tf.keras as Keras 2 before TensorFlow is used)
from camenn.model import features as F  # noqa: E402
from camenn.serving import bundle, servables  # noqa: E402
from camenn.serving.recommend import RecommendationClient  # noqa: E402
from serving import NUM_PATCHES, PATCH_DIM, TEXT_DIM, TEXT_TOKENS, HashedIds, export_preset, synthetic_catalog  # noqa: E402


def export_retrieval(preset, directory, catalog, buckets=1000, top_k=100):
    """`preset` with random weights (they cost what trained ones do), its index filled with `catalog`."""
    from camenn.model.retrieval import TwoTowerRetrieval
    from camenn.model.retrieval.export import export_retrieval_model
    from camenn.serving.retrieval_index import write_index

    model = TwoTowerRetrieval.from_preset(
        preset,
        vocabulary_sizes={name: buckets for name in F.ID_FEATURES},
        num_text_tokens=TEXT_TOKENS,
        text_dim=TEXT_DIM,
        num_patches=NUM_PATCHES,
        patch_dim=PATCH_DIM,
    )
    spec = {
        name: tf.io.FixedLenFeature([], tf.string)
        for name in (F.SHOPPER_ID, F.ITEM_ID, F.MERCHANT_ID, F.CATEGORY, F.COARSE_CATEGORY)
    }
    spec.update(
        {
            F.HOUR: tf.io.FixedLenFeature([], tf.int64),
            F.PRICE: tf.io.FixedLenFeature([], tf.float32),
            F.TEXT_EMBEDDINGS: tf.io.FixedLenFeature([TEXT_TOKENS * TEXT_DIM], tf.float32),
            F.PATCH_EMBEDDINGS: tf.io.FixedLenFeature([NUM_PATCHES * PATCH_DIM], tf.float32),
        }
    )
    staging = directory + ".empty"
    # Every shopper "known" (hashed ids have no OOV), every listing clicked once.
    export_retrieval_model(
        model,
        staging,
        transform=HashedIds(buckets),
        raw_feature_spec=spec,
        known_shoppers=buckets,
        item_click_counts=np.ones(buckets, np.float32),
        top_k=top_k,
    )
    write_index(staging, catalog, directory)
    shutil.rmtree(staging)


def start_server(config_file):
    command = [
        sys.executable,
        "-m",
        "camenn.serving.server",
        "--model_config_file",
        config_file,
        "--port",
        "0",
        "--file_system_poll_wait_seconds",
        "0",
    ]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    for line in process.stdout:
        if "serving gRPC on" in line:
            threading.Thread(target=lambda: [None for _ in process.stdout], daemon=True).start()
            return process, int(line.rsplit(":", 1)[1].split()[0])
    raise SystemExit(f"camenn serve did not start (exit {process.wait()})")


def timed(paths, requests):
    """p50 and p99 ms of each path, the paths taking turns request by request, so that a change in the
    machine's load during the run weighs on every path alike."""
    latencies = {name: [] for name, _ in paths}
    for request in requests:
        for name, call in paths:
            start = time.perf_counter()
            call(*request)
            latencies[name].append(time.perf_counter() - start)
    return {
        name: (np.percentile(np.array(values) * 1e3, 50), np.percentile(np.array(values) * 1e3, 99))
        for name, values in latencies.items()
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--serving-base", default=None, help="pushed camenn/ and camenn_retrieval/ (default: export)")
    parser.add_argument("--preset", default="camenn_small")
    parser.add_argument("--retrieval-preset", default="retrieval_small")
    parser.add_argument("--listings", type=int, default=480, help="synthetic catalog size (default 480, the sample's)")
    parser.add_argument("--requests", type=int, default=200, help="requests per row (default 200)")
    parser.add_argument("--k", type=int, default=10)
    args = parser.parse_args()

    workdir = tempfile.mkdtemp(prefix="camenn-bench-recommend-")
    base = args.serving_base
    if base is None:
        base = workdir
        catalog = synthetic_catalog(args.listings)
        started = time.perf_counter()
        export_preset(args.preset, os.path.join(base, "camenn", "1"), catalog)
        export_retrieval(args.retrieval_preset, os.path.join(base, "camenn_retrieval", "1"), catalog)
        print(
            f"exported {args.preset} and {args.retrieval_preset} over {args.listings} synthetic listings in "
            f"{time.perf_counter() - started:.0f} s"
        )
    written = bundle.write_serving_bundle(base, "camenn", more_models=["camenn_retrieval"], image="unused")
    retrieval_dir = max(servables.version_directories(os.path.join(base, "camenn_retrieval")).items())[1]
    listings = len(tf.saved_model.load(retrieval_dir).index.item_ids.numpy())

    process, port = start_server(str(written.local_models_config))
    client = RecommendationClient(port=port, timeout=120)
    shoppers = [(f"shopper_{i % 50}",) for i in range(args.requests)]
    fixed = [i.decode() for i in client.retrieve("shopper_0", 12)[F.ITEM_ID]]  # 100 listings, the same each time
    paths = [
        ("rank 100 ids (baseline)", lambda s: client.ranker.score(s, fixed, hour=12)),
        ("retrieve", lambda s: client.retrieve(s, 12)),
        ("recommend (retrieve + rank)", lambda s: client.recommend(s, k=args.k, hour=12)),
    ]
    try:
        for _, call in paths:
            for request in shoppers[:10]:
                call(*request)
        load = os.getloadavg()[0]
        rows = timed(paths, shoppers)
    finally:
        client.close()
        process.terminate()
        process.wait(30)
    baseline = rows[paths[0][0]]
    print(
        f"\none client, {args.requests} requests per row (paths interleaved), retrieval over {listings} listings, "
        f"{len(fixed)} candidates ranked; load average {load:.1f} at the start, {os.getloadavg()[0]:.1f} at the end "
        f"on {os.cpu_count()} CPUs"
    )
    print(f"{'path':<30} {'p50 ms':>8} {'p99 ms':>8} {'p50 / baseline':>15} {'p99 / baseline':>15}")
    for name, (p50, p99) in rows.items():
        print(f"{name:<30} {p50:8.2f} {p99:8.2f} {p50 / baseline[0]:15.2f} {p99 / baseline[1]:15.2f}")
    p99 = rows[paths[2][0]][1]
    print(f"\ngoal: recommend p99 <= 25 ms: {p99:.2f} ms ({'met' if p99 <= 25 else 'NOT met'})")
    shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
