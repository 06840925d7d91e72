"""Benchmark of CameNN's sparse mixture of transformer experts (training throughput: bench/train.py):

1. Forward + backward time of one `TransformerExpertMixture` with sparse dispatch (each expert gathers
   only the examples routed to it, up to its capacity) against the same mixture computing every expert
   on every example and masking by the gate weights (`dispatch="dense"`): E=8 experts, top-2, batch 256,
   64 tokens, the small preset's widths (hidden 128, 4 heads, feed-forward 256), three task gates.
   Goal: sparse at most 0.4x dense.
2. The same step as E grows (4, 8, 16) at top-2, sparse and dense. Goal: sparse nearly flat.

Each timing is the median of repeated steps after warm-up, as wall and CPU seconds (user + system, less
disturbed when other work shares the cores); ratios compare figures measured in this run.

    .venv/bin/python bench/moe.py [--quick]
"""

import argparse
import json
import os
import resource
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402


def _clock():
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return time.perf_counter(), usage.ru_utime + usage.ru_stime


def _median_step(step, repeats):
    walls, cpus = [], []
    for _ in range(repeats):
        wall, cpu = _clock()
        step()
        walls.append(time.perf_counter() - wall)
        cpus.append(_clock()[1] - cpu)
    return float(np.median(walls)), float(np.median(cpus))


def mixture_step(num_experts, dispatch, batch_size, length, repeats, top_k=2, hidden=128):
    """Median wall/CPU seconds of one forward + backward pass of the mixture, and its overflow."""
    import tensorflow as tf

    from camenn.model import features
    from camenn.model.camenn import TransformerExpertMixture

    mixture = TransformerExpertMixture(
        num_experts=num_experts,
        top_k=top_k,
        intermediate_dim=2 * hidden,
        num_heads=4,
        task_names=features.TASKS,
        dispatch=dispatch,
    )
    rng = np.random.default_rng(0)
    sequence = tf.constant(rng.normal(size=(batch_size, length, hidden)), tf.float32)
    lengths = rng.integers(length // 4, length + 1, batch_size)
    mask = tf.constant(np.arange(length)[None] < lengths[:, None])
    mixture(sequence, padding_mask=mask)

    @tf.function
    def step():
        with tf.GradientTape() as tape:
            tape.watch(sequence)
            outputs = mixture(sequence, padding_mask=mask, training=True)
            loss = sum(tf.reduce_mean(tf.square(out)) for out in outputs) + sum(mixture.losses)
        return tape.gradient(loss, [sequence, *mixture.trainable_variables])

    for _ in range(2):  # trace, then one warm run
        step()
    mixture.routing_metrics.reset_state()
    wall, cpu = _median_step(step, repeats)
    overflow = float(mixture.routing_metrics.result()["expert_overflow"])
    return {"experts": num_experts, "dispatch": dispatch, "wall_s": wall, "cpu_s": cpu, "overflow": overflow}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller batch and fewer steps (a smoke run)")
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args()
    batch_size, repeats = (64, 3) if args.quick else (256, 7)
    length = 64
    figures = {}

    print(f"1. mixture forward+backward, E=8, top-2, batch {batch_size}, {length} tokens, hidden 128", flush=True)
    sparse = mixture_step(8, "sparse", batch_size, length, repeats)
    dense = mixture_step(8, "dense", batch_size, length, repeats)
    for row in (sparse, dense):
        print(
            f"   {row['dispatch']:6s} {row['wall_s'] * 1000:8.1f} ms wall  {row['cpu_s'] * 1000:8.1f} ms CPU"
            f"  overflow {row['overflow']:.1%}"
        )
    figures["sparse_vs_dense"] = {
        "sparse": sparse,
        "dense": dense,
        "wall_ratio": sparse["wall_s"] / dense["wall_s"],
        "cpu_ratio": sparse["cpu_s"] / dense["cpu_s"],
    }
    print(
        f"   sparse / dense: {figures['sparse_vs_dense']['wall_ratio']:.2f}x wall, "
        f"{figures['sparse_vs_dense']['cpu_ratio']:.2f}x CPU (goal <= 0.4x)",
        flush=True,
    )

    print(f"2. as E grows, top-2, batch {batch_size}", flush=True)
    rows = [sparse if e == 8 else mixture_step(e, "sparse", batch_size, length, repeats) for e in (4, 8, 16)]
    rows += [dense if e == 8 else mixture_step(e, "dense", batch_size, length, repeats) for e in (4, 16)]
    base = rows[0]
    for row in rows:
        print(
            f"   E={row['experts']:2d} {row['dispatch']:6s} {row['wall_s'] * 1000:8.1f} ms wall "
            f"({row['wall_s'] / base['wall_s']:.2f}x sparse E=4)  {row['cpu_s'] * 1000:8.1f} ms CPU "
            f"({row['cpu_s'] / base['cpu_s']:.2f}x)  overflow {row['overflow']:.1%}",
            flush=True,
        )
    figures["experts_sweep"] = rows

    if args.json:
        with open(args.json, "w") as f:
            json.dump(figures, f, indent=2)


if __name__ == "__main__":
    main()
