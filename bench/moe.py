"""Benchmark of CameNN's sparse mixture of transformer experts and of the small preset's training speed:

1. Forward + backward time of one `TransformerExpertMixture` with sparse dispatch (each expert gathers
   only the examples routed to it, up to its capacity) against the same mixture computing every expert
   on every example and masking by the gate weights (`dispatch="dense"`): E=8 experts, top-2, batch 256,
   64 tokens, the small preset's widths (hidden 128, 4 heads, feed-forward 256), three task gates.
   Goal: sparse at most 0.4x dense.
2. The same step as E grows (4, 8, 16) at top-2, sparse and dense. Goal: sparse nearly flat.
3. Training examples per second of `camenn_small` (all-MiniLM-L6-v2 text encoder, fine-tuned, then
   frozen) under `model.fit` on synthetic batches through `make_alignment_examples` (each true pair
   becomes 3 rows: itself, an ITA and a TIA negative), after the first (tracing) step.

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

    mixture = TransformerExpertMixture(num_experts=num_experts, top_k=top_k, intermediate_dim=2 * hidden,
                                       num_heads=4, task_names=features.TASKS, dispatch=dispatch)
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


def synthetic_batch(size, num_patches, patch_dim, vocabulary_size, seed=0):
    from camenn.model import features as F

    rng = np.random.default_rng(seed)
    batch = {name: rng.integers(0, vocabulary_size, size) for name in F.ID_FEATURES}
    batch[F.CATEGORY] = rng.integers(0, 40, size)
    batch[F.COARSE_CATEGORY] = batch[F.CATEGORY] // 4
    batch[F.HOUR] = rng.integers(0, 24, size)
    batch.update({name: rng.normal(size=size).astype("float32") for name in F.NUMERIC_FEATURES})
    lengths = rng.integers(12, 65, size)
    text = rng.integers(1000, 30000, (size, 64))
    text[np.arange(64)[None] >= lengths[:, None]] = 0
    batch[F.TEXT_TOKEN_IDS] = text
    batch[F.PATCH_EMBEDDINGS] = rng.normal(size=(size, num_patches * patch_dim)).astype("float32")
    batch[F.LABEL] = rng.integers(0, 2, size)
    return batch


def training_throughput(preset, batch_size, steps, num_patches=4, patch_dim=1280, **overrides):
    """True-pair examples per second of `model.fit` on `preset`, the first (tracing) step excluded."""
    import keras
    import tensorflow as tf

    from camenn.model import features as F
    from camenn.model.camenn import CameNNMultiTask, make_alignment_examples

    vocabulary_size = 1000
    model = CameNNMultiTask.from_preset(preset, vocabulary_sizes={name: vocabulary_size for name in F.ID_FEATURES},
                                        num_patches=num_patches, patch_dim=patch_dim, **overrides)
    model.compile(total_steps=steps + 1)
    batch = synthetic_batch(batch_size, num_patches, patch_dim, vocabulary_size)
    dataset = make_alignment_examples(tf.data.Dataset.from_tensors(batch).repeat(), seed=0).prefetch(2)

    class StepClock(keras.callbacks.Callback):
        def on_train_batch_end(self, step, logs=None):
            if step == 0:
                self.start = _clock()

    clock = StepClock()
    first = time.perf_counter()
    model.fit(dataset, steps_per_epoch=steps + 1, epochs=1, verbose=0, callbacks=[clock])
    end = _clock()
    wall, cpu = end[0] - clock.start[0], end[1] - clock.start[1]
    return {"preset": preset, "overrides": overrides, "batch_size": batch_size, "rows_per_step": 3 * batch_size,
            "timed_steps": steps, "first_step_s": clock.start[0] - first, "examples_per_s": steps * batch_size / wall,
            "examples_per_cpu_s": steps * batch_size / cpu, "parameters": model.count_params()}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller batch and fewer steps (a smoke run)")
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args()
    batch_size, repeats, train_steps = (64, 3, 3) if args.quick else (256, 7, 10)
    length = 64
    figures = {}

    print(f"1. mixture forward+backward, E=8, top-2, batch {batch_size}, {length} tokens, hidden 128", flush=True)
    sparse = mixture_step(8, "sparse", batch_size, length, repeats)
    dense = mixture_step(8, "dense", batch_size, length, repeats)
    for row in (sparse, dense):
        print(f"   {row['dispatch']:6s} {row['wall_s'] * 1000:8.1f} ms wall  {row['cpu_s'] * 1000:8.1f} ms CPU"
              f"  overflow {row['overflow']:.1%}")
    figures["sparse_vs_dense"] = {"sparse": sparse, "dense": dense, "wall_ratio": sparse["wall_s"] / dense["wall_s"],
                                  "cpu_ratio": sparse["cpu_s"] / dense["cpu_s"]}
    print(f"   sparse / dense: {figures['sparse_vs_dense']['wall_ratio']:.2f}x wall, "
          f"{figures['sparse_vs_dense']['cpu_ratio']:.2f}x CPU (goal <= 0.4x)", flush=True)

    print(f"2. as E grows, top-2, batch {batch_size}", flush=True)
    rows = [sparse if e == 8 else mixture_step(e, "sparse", batch_size, length, repeats) for e in (4, 8, 16)]
    rows += [dense if e == 8 else mixture_step(e, "dense", batch_size, length, repeats) for e in (4, 16)]
    base = rows[0]
    for row in rows:
        print(f"   E={row['experts']:2d} {row['dispatch']:6s} {row['wall_s'] * 1000:8.1f} ms wall "
              f"({row['wall_s'] / base['wall_s']:.2f}x sparse E=4)  {row['cpu_s'] * 1000:8.1f} ms CPU "
              f"({row['cpu_s'] / base['cpu_s']:.2f}x)  overflow {row['overflow']:.1%}", flush=True)
    figures["experts_sweep"] = rows

    print("3. camenn_small training throughput, batches of 32 true pairs (model.fit, negatives included)",
          flush=True)
    figures["training"] = []
    for label, overrides in (("text encoder fine-tuned", {}), ("text encoder frozen", {"freeze_text_encoder": True})):
        throughput = training_throughput("camenn_small", 32, train_steps, **overrides)
        print(f"   {label}: {throughput['examples_per_s']:.1f} true pairs/s "
              f"({3 * throughput['examples_per_s']:.1f} rows/s) wall, {throughput['examples_per_cpu_s']:.1f} per "
              f"CPU-second; first step (trace) {throughput['first_step_s']:.0f} s; "
              f"{throughput['parameters']:,} parameters", flush=True)
        figures["training"].append(throughput)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(figures, f, indent=2)


if __name__ == "__main__":
    main()
