"""Benchmark of the pre-trained encoders on this machine's CPU, each part in a fresh process:

- patch embeddings per second of InceptionV4 (the paper's, full size: preset `inception_v4`) and of
  EfficientNet-Lite0 (`efficientnet_lite0_imagenet`), through `load_patch_encoder` (resize + normalise +
  backbone + pooling), on the 174x174 patches a 2x2 grid makes of a 348x348 grocery photo;
- sentences per second of the all-MiniLM-L6-v2 BERT backbone on 64-token listings (and of bert_tiny);
- the Beam transform `EmbedPatches` against bare `PatchEncoder.embed_groups` calls on the same photos in
  the same batches (goal: at most 1.3x the bare time). Both include one encoder load and trace: the bare
  side loads it itself, the Beam side is the whole DirectRunner pipeline (start, the DoFn's setup, batching).

Each part reports wall seconds, CPU seconds (user + system; less disturbed when other work shares the
cores) and its process's peak resident memory. Ratios compare figures measured in this run.

    .venv/bin/python bench/encoders.py [--quick]
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import time

import numpy as np

PATCH = (174, 174)  # a 348x348 photo split 2x2
PATCHES_PER_PHOTO = 4


def _clock():
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return time.perf_counter(), usage.ru_utime + usage.ru_stime


def _since(start):
    wall, cpu = _clock()
    return wall - start[0], cpu - start[1]


def _peak_mib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _patches(count, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (count, *PATCH, 3), dtype=np.uint8)


def part_encoder(encoder_name, preset, batches, batch_size=32):
    from camenn.model.patch_encoders import load_patch_encoder

    start = _clock()
    encoder = load_patch_encoder(encoder_name, preset, batch_size=batch_size)
    load_seconds = _since(start)[0]
    patches = _patches(batch_size)
    encoder(patches)  # trace once
    start = _clock()
    for _ in range(batches):
        encoder(patches)
    wall, cpu = _since(start)
    return {
        "figure": f"{encoder_name} ({preset}) patch embeddings/s",
        "value": batches * batch_size / wall,
        "per_cpu_s": batches * batch_size / cpu,
        "wall_s": wall,
        "cpu_s": cpu,
        "load_s": load_seconds,
        "output_dim": encoder.output_dim,
        "peak_mib": _peak_mib(),
    }


def part_bert(preset, batches, batch_size=64, length=64):
    import keras_hub
    import tensorflow as tf

    from camenn.model import bert

    backbone = keras_hub.models.BertBackbone.from_preset(bert.preset_dir(preset))
    rng = np.random.default_rng(0)
    token_ids = rng.integers(1000, 30000, (batch_size, length))
    lengths = rng.integers(16, length + 1, batch_size)  # listings are padded to 64 tokens
    mask = np.arange(length)[None] < lengths[:, None]
    inputs = {
        "token_ids": tf.constant(np.where(mask, token_ids, 0)),
        "padding_mask": tf.constant(mask),
        "segment_ids": tf.zeros((batch_size, length), tf.int64),
    }
    forward = tf.function(lambda x: backbone(x, training=False)["sequence_output"])
    forward(inputs)
    start = _clock()
    for _ in range(batches):
        forward(inputs)
    wall, cpu = _since(start)
    return {
        "figure": f"BERT {preset} sentences/s (64 tokens)",
        "value": batches * batch_size / wall,
        "per_cpu_s": batches * batch_size / cpu,
        "wall_s": wall,
        "cpu_s": cpu,
        "peak_mib": _peak_mib(),
    }


def part_embed_patches(encoder_name, preset, photos, batch_size=32):
    """Both sides load the encoder once and trace it (an untimed load first takes the imports out of
    both), and make each photo's patches from its seed, so the difference is what Beam adds: pipeline
    start, batching, moving elements between stages, metrics."""
    import apache_beam as beam
    from apache_beam.metrics.metric import MetricsFilter
    from apache_beam.options.pipeline_options import PipelineOptions

    from camenn.model import preset_store
    from camenn.model.patch_encoders import load_patch_encoder
    from camenn.preprocessing.patch_embedding import EmbedPatches

    preset_store.ensure(preset)  # checksums once, outside both timings
    load_patch_encoder(encoder_name, preset)  # imports and first-use costs, outside both timings
    per_batch = batch_size // PATCHES_PER_PHOTO  # what BatchElements forms from 4-patch elements

    start = _clock()
    encoder = load_patch_encoder(encoder_name, preset, batch_size=batch_size)
    for first in range(0, photos, per_batch):
        seeds = range(first, min(first + per_batch, photos))
        encoder.embed_groups([_patches(PATCHES_PER_PHOTO, seed) for seed in seeds])
    bare_wall, bare_cpu = _since(start)

    start = _clock()
    pipeline = beam.Pipeline(options=PipelineOptions(["--direct_num_workers=1"]))
    _ = (
        pipeline
        | beam.Create(range(photos), reshuffle=False)
        | beam.Map(lambda seed: (f"photo-{seed}", _patches(PATCHES_PER_PHOTO, seed)))
        | EmbedPatches(encoder_name, preset, batch_size=batch_size)
        | beam.combiners.Count.Globally()
    )
    result = pipeline.run()
    result.wait_until_finish()
    beam_wall, beam_cpu = _since(start)
    metrics = {r.key.metric.name: r.committed for r in result.metrics().query(MetricsFilter())["distributions"]}
    load_s = metrics["load_model_latency_milli_secs"].sum / 1000
    inference_s = metrics["inference_batch_latency_micro_secs"].sum / 1e6
    return {
        "figure": f"EmbedPatches / bare embed_groups ({encoder_name}, {photos} photos, batch {batch_size})",
        "value": beam_wall / bare_wall,
        "cpu_ratio": beam_cpu / bare_cpu,
        "bare_wall_s": bare_wall,
        "bare_cpu_s": bare_cpu,
        "beam_wall_s": beam_wall,
        "beam_cpu_s": beam_cpu,
        "beam_model_load_s": load_s,
        "beam_inference_s": inference_s,
        "beam_batches": metrics["batch_size"].count,
        "peak_mib": _peak_mib(),
    }


PARTS = {
    "inception_v4": lambda quick: part_encoder("inception_v4", "inception_v4", 2 if quick else 6),
    "efficientnet_lite0": lambda quick: part_encoder(
        "efficientnet_lite0", "efficientnet_lite0_imagenet", 4 if quick else 20
    ),
    "bert_minilm": lambda quick: part_bert("all_minilm_l6_v2", 3 if quick else 12),
    "bert_tiny": lambda quick: part_bert("bert_tiny", 10 if quick else 40),
    "embed_patches": lambda quick: part_embed_patches(
        "efficientnet_lite0", "efficientnet_lite0_imagenet", 64 if quick else 320
    ),
}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer repetitions (a smoke test)")
    parser.add_argument("--part", choices=PARTS, help=argparse.SUPPRESS)  # run one part in this process
    args = parser.parse_args()
    if args.part:
        print("RESULT " + json.dumps(PARTS[args.part](args.quick)))
        return
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    results = {}
    for name in PARTS:
        command = [sys.executable, __file__, "--part", name] + (["--quick"] if args.quick else [])
        run = subprocess.run(command, capture_output=True, text=True, env=env)
        lines = [line for line in run.stdout.splitlines() if line.startswith("RESULT ")]
        if run.returncode or not lines:
            sys.exit(f"part {name} failed:\n{run.stdout[-2000:]}\n{run.stderr[-3000:]}")
        results[name] = json.loads(lines[-1][len("RESULT ") :])
        print(
            f"{results[name]['figure']}: {results[name]['value']:.2f}   "
            + ", ".join(f"{k} {v:.1f}" for k, v in results[name].items() if k not in ("figure", "value")),
            flush=True,
        )
    inception, effnet = results["inception_v4"]["value"], results["efficientnet_lite0"]["value"]
    print(f"\nEfficientNet-Lite0 / InceptionV4 patch throughput: {effnet / inception:.1f}x")
    print(
        f"all-MiniLM-L6-v2 / bert_tiny sentence throughput: "
        f"{results['bert_minilm']['value'] / results['bert_tiny']['value']:.3f}x"
    )
    beam = results["embed_patches"]
    verdict = "meets" if beam["value"] <= 1.3 else "misses"
    print(
        f"EmbedPatches overhead: {beam['value']:.2f}x the bare calls' wall time ({beam['cpu_ratio']:.2f}x their "
        f"CPU time), each with one encoder load; {verdict} the 1.3x goal"
    )


if __name__ == "__main__":
    main()
