"""Benchmark of the TFX pipeline: wall time and peak memory per component, and the Trainer's throughput
against a plain `model.fit` of the same model on the same data, measured in the same run.

    .venv/bin/python bench/pipeline.py [--profile small] [--dataset data/sample] [--beam-mode in_memory]

Runs the whole pipeline once into a fresh outputs folder (nothing cached; the patch-embedding cache is
the usual one unless --cold-images), sampling the memory of this process and its children (Beam workers)
every 0.2 s and charging it to the component running then. Then trains the Trainer's model again with a
bare `model.fit` on the same transformed examples held in memory, same batches, same number of steps, and
compares steady-state examples per second (each epoch's first step, which traces the graphs in the first
epoch, left out of both).
Goals (ISSUE 6): the whole main command within 15 minutes on 2 cores, peak memory under 8 GB, Trainer
overhead at most 1.2x a plain fit.
"""

import argparse
import json
import logging
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

from camenn import paths


class ComponentMeter:
    """Times each component's launch (TFX's Launcher.launch, wrapped); a thread samples the memory of
    this process and its children meanwhile and charges it to the component running."""

    def __init__(self, interval=0.2):
        self.current, self.interval = None, interval
        self.seconds, self.peak_rss = {}, {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self):
        me = psutil.Process()
        while not self._stop.wait(self.interval):
            try:
                rss = me.memory_info().rss + sum(c.memory_info().rss for c in me.children(recursive=True))
            except psutil.Error:
                continue
            key = self.current or "(between components)"
            self.peak_rss[key] = max(self.peak_rss.get(key, 0), rss)

    def __enter__(self):
        from tfx.orchestration.portable import launcher

        self._launcher, self._launch = launcher.Launcher, launcher.Launcher.launch
        meter = self

        def launch(launcher_self, *args, **kwargs):
            meter.current = launcher_self._pipeline_node.node_info.id
            started = time.perf_counter()
            try:
                return meter._launch(launcher_self, *args, **kwargs)
            finally:
                meter.seconds[meter.current] = time.perf_counter() - started
                meter.current = None

        launcher.Launcher.launch = launch
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self._launcher.launch = self._launch


def steady_rate(record) -> float:
    """Examples (true pairs) per second, each epoch's first step (graph tracing) left out."""
    steps = sum(n - 1 for n in record["epoch_steps"])
    seconds = sum(t - first for t, first in zip(record["epoch_seconds"], record["first_step_seconds"]))
    return steps * record["batch_size"] / seconds


def plain_fit(config, trainer_node, transform_node):
    """The Trainer's model trained by a bare `model.fit` on the same transformed examples, in memory."""
    import keras
    import tensorflow as tf
    import tensorflow_transform as tft

    from camenn.model.camenn import make_alignment_examples
    from camenn.tfx_pipeline import trainer
    from camenn.tfx_pipeline.configs import TrainerSettings

    settings = TrainerSettings.from_json(
        json.loads(trainer_node.execution.custom_properties["custom_config"].string_value)["settings"]
    )
    tft_output = tft.TFTransformOutput(transform_node.output("transform_graph").uri)
    files = tf.io.gfile.glob(os.path.join(transform_node.output("transformed_examples").uri, "Split-train", "*"))
    spec = tft_output.transformed_feature_spec()
    raw = (
        tf.data.TFRecordDataset(files, compression_type="GZIP")
        .batch(1024)
        .map(lambda records: tf.io.parse_example(records, spec))
    )
    columns = {}
    for batch in raw:
        for name, value in batch.items():
            columns.setdefault(name, []).append(value.numpy())
    columns = {name: tf.concat(parts, 0) for name, parts in columns.items()}
    count = int(columns[next(iter(columns))].shape[0])
    batch_size = settings.batch_size
    steps_per_epoch = settings.steps_per_epoch or -(-count // batch_size)
    data = tf.data.Dataset.from_tensor_slices(columns).shuffle(count, seed=0).repeat().batch(batch_size)
    data = make_alignment_examples(data, seed=0, hard_negatives=settings.hard_negatives).prefetch(tf.data.AUTOTUNE)
    keras.utils.set_random_seed(settings.seed)
    model = trainer.build_model(settings, tft_output, trainer.precision_policy(settings.mixed_precision))
    trainer.compile_model(model, settings, steps_per_epoch * settings.epochs)
    timing = trainer.ProgressLogger(10**9, batch_size, steps_per_epoch * settings.epochs)
    model.fit(data, epochs=settings.epochs, steps_per_epoch=steps_per_epoch, callbacks=[timing], verbose=0)
    return timing.record()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", default="small", help="pipeline profile (tfx_pipeline/configs.py PROFILES)")
    parser.add_argument("--dataset", default=str(paths.SAMPLE_DATASET))
    parser.add_argument("--outputs", default=None, help="default: a fresh temporary folder")
    parser.add_argument("--beam-mode", default=None, help="in_memory, multi_threading or multi_processing")
    parser.add_argument("--cold-images", action="store_true", help="embed every photo again (empty cache)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")

    from camenn.tfx_pipeline import configs, local_runner, run_summary

    outputs = args.outputs or tempfile.mkdtemp(prefix="camenn_bench_pipeline_")
    overrides = dict(dataset_dir=args.dataset, outputs_dir=outputs)
    if args.beam_mode:
        overrides["beam_direct_running_mode"] = args.beam_mode
    if args.cold_images:
        overrides["embedding_cache_dir"] = os.path.join(outputs, "embedding_cache")
    config = configs.from_profile(args.profile, **overrides)
    for assignment in args.set:
        config = configs.parse_override(config, assignment)

    started = time.perf_counter()
    with ComponentMeter() as meter:
        local_runner.run(config)
    total = time.perf_counter() - started
    summary = run_summary.summarize(config)
    nodes = run_summary.node_runs(run_summary.open_store(config.metadata_path), summary["run_id"])
    record = json.loads(Path(nodes["Trainer"].output("model_run").uri, "history.json").read_text())
    plain = plain_fit(config, nodes["Trainer"], nodes["Transform"])
    pipeline_rate, plain_rate = steady_rate(record), steady_rate(plain)

    print(
        f"\npipeline on {args.dataset}, profile {args.profile}, Beam {config.beam_direct_running_mode} "
        f"x{config.beam_num_workers or os.cpu_count()}, {os.cpu_count()} CPUs"
    )
    print(f"{'component':<32} {'wall s':>8} {'peak RSS MB':>12}")
    for name, seconds in meter.seconds.items():
        print(f"{name:<32} {seconds:8.1f} {meter.peak_rss.get(name, 0) / 2**20:12.0f}")
    peak = max(meter.peak_rss.values()) / 2**30
    print(f"{'whole pipeline':<32} {total:8.1f} {peak * 1024:12.0f}   (goals: < 900 s, < 8 GB)")
    print(
        f"Trainer: {pipeline_rate:.1f} examples/s; plain model.fit, same model and data in memory: "
        f"{plain_rate:.1f} examples/s; overhead {plain_rate / pipeline_rate:.2f}x (goal <= 1.2x)"
    )
    print(run_summary.format_summary(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
