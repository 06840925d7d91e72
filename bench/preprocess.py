"""Benchmark of `camenn preprocess`: rows per second with a cold and a warm patch-embedding cache, peak memory.

Runs the preprocessing twice over the same dataset (default: the embedded sample) in fresh processes, the
first with an empty cache (every photo decoded and embedded), the second with the cache the first filled
(no photo decoded or embedded), and prints both with their ratio (goal: warm at least 5x faster). Rows are
input rows, items plus events. Peak memory is the largest resident set of the run's process tree, sampled
every 0.1 s. CPU seconds (user + system of the run's processes) are less disturbed than wall time when
other work shares the machine.

    .venv/bin/python bench/preprocess.py [--dataset data/sample] [--image-encoder E --image-preset P]
"""

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

from camenn import paths
from camenn.preprocessing import defaults


def _children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_once(dataset: Path, output: Path, cache: Path, encoder: str, preset: str) -> dict:
    command = [
        sys.executable,
        "-m",
        "camenn",
        "preprocess",
        "--dataset",
        str(dataset),
        "--output",
        str(output),
        "--image-encoder",
        encoder,
        "--image-preset",
        preset,
        "--cache-dir",
        str(cache),
    ]
    started, cpu_before = time.perf_counter(), _children_cpu_seconds()
    process = psutil.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    peak = 0
    while process.poll() is None:
        try:
            tree = [process] + process.children(recursive=True)
            peak = max(peak, sum(p.memory_info().rss for p in tree))
        except psutil.NoSuchProcess:
            pass
        time.sleep(0.1)
    seconds, cpu_seconds = time.perf_counter() - started, _children_cpu_seconds() - cpu_before
    log = process.stdout.read().decode(errors="replace")
    if process.returncode != 0:
        sys.exit(f"camenn preprocess failed ({process.returncode}):\n{log[-3000:]}")
    summary = json.loads((output / "summary.json").read_text())
    rows = summary["items"]["in"] + summary["events"]["in"]
    return {
        "seconds": seconds,
        "cpu_seconds": cpu_seconds,
        "pipeline_seconds": summary["seconds"],
        "rows": rows,
        "rows_per_second": rows / seconds,
        "pipeline_rows_per_second": rows / summary["seconds"],
        "embedded": summary["images"]["embedded"],
        "cache_hits": summary["images"]["cache_hits"],
        "peak_rss_mib": peak / 2**20,
        "summary": summary,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", type=Path, default=paths.SAMPLE_DATASET)
    parser.add_argument("--image-encoder", default=defaults.IMAGE_ENCODER)
    parser.add_argument("--image-preset", default=defaults.IMAGE_PRESET)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="camenn-bench-") as scratch:
        scratch = Path(scratch)
        runs = {
            name: run_once(args.dataset, scratch / name, scratch / "cache", args.image_encoder, args.image_preset)
            for name in ("cold", "warm")
        }
    cold, warm = runs["cold"], runs["warm"]
    summary = cold.pop("summary")
    warm.pop("summary")
    print(
        f"camenn preprocess over {args.dataset}: {summary['items']['in']} item rows + {summary['events']['in']} "
        f"event rows; encoder {args.image_encoder}/{args.image_preset}, grid {summary['grid']} "
        f"({summary['num_patches']} x {summary['patch_dim']}); Beam DirectRunner; {psutil.cpu_count()} CPUs"
    )
    print(
        f"{'cache':6} {'wall s':>8} {'rows/s':>8} {'CPU s':>7} {'pipeline s':>11} {'rows/s':>8} "
        f"{'embedded':>9} {'hits':>5} {'peak MiB':>9}"
    )
    for name, run in runs.items():
        print(
            f"{name:6} {run['seconds']:8.1f} {run['rows_per_second']:8.0f} {run['cpu_seconds']:7.1f} "
            f"{run['pipeline_seconds']:11.1f} {run['pipeline_rows_per_second']:8.0f} {run['embedded']:9d} "
            f"{run['cache_hits']:5d} {run['peak_rss_mib']:9.0f}"
        )
    ratios = {
        "wall": cold["seconds"] / warm["seconds"],
        "cpu": cold["cpu_seconds"] / warm["cpu_seconds"],
        "pipeline": cold["pipeline_seconds"] / warm["pipeline_seconds"],
    }
    print(
        f"warm vs cold: {ratios['wall']:.1f}x faster end to end (process start, imports and Beam set-up "
        f"included), {ratios['pipeline']:.1f}x inside the pipeline, {ratios['cpu']:.1f}x less CPU time "
        f"(goal: >= 5x)"
    )
    if args.json:
        args.json.write_text(
            json.dumps(
                {"runs": runs, "speedup": ratios, "encoder": args.image_encoder, "preset": args.image_preset}, indent=2
            )
        )


if __name__ == "__main__":
    main()
