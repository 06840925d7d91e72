"""Scale: the sample at 1x, 4x and 16x, through preprocessing and one training epoch, with the in-memory
and the multi-process DirectRunner; wall time and peak memory per size, and how time grows with rows.

For each size factor F, `camenn sample` builds a dataset of F times the sample (listings, merchants,
shoppers and clicks; listings reuse the Grocery Store photos, so distinct photos grow less than F), then
for each Beam mode a fresh process runs the TFX pipeline up to the Trainer (tiny profile, one epoch, an
empty patch-embedding cache of its own): PreprocessDataset, StatisticsGen, schema and validation,
Transform, Trainer. Per component it records wall time and the peak resident memory of the process and
its Beam workers (bench/pipeline.py's meter). It then checks that both modes wrote the same records
(PreprocessDataset's examples, listings and quarantine, byte for byte; Transform's transformed examples,
as tf.Examples), and fits
the exponent b of time ~ rows^b over the sizes (goal: b <= 1, linear or better).

Goals: time grows at most linearly; preprocessing's peak memory under 4 GB at 16x; the multi-process
output equal to the in-memory output record for record.

    .venv/bin/python bench/scale.py [--factors 1,4,16] [--modes in_memory,multi_processing] [--keep DIR]

Times on a shared machine are noisy: the load average is printed with each run.
"""

import argparse
import glob
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SAMPLE = dict(listings=480, merchants=40, shoppers=200, events=6000)
COMPONENTS = (
    "PreprocessDataset",
    "StatisticsGen",
    "ContractSchemaGen",
    "ExampleValidator",
    "AnomaliesGate",
    "Transform",
    "Trainer",
)


def build_dataset(source: Path, output: Path, factor: int) -> float:
    """`camenn sample` at `factor` times the sample; returns its wall seconds."""
    sizes = [f"--{name}={value * factor}" for name, value in SAMPLE.items()]
    started = time.perf_counter()
    subprocess.run(
        [
            sys.executable,
            "-m",
            "camenn",
            "sample",
            "--source",
            str(source),
            "--output",
            str(output),
            "--seed",
            "0",
            *sizes,
        ],
        check=True,
        capture_output=True,
    )
    return time.perf_counter() - started


def run_to_trainer(dataset: str, outputs: str, mode: str) -> dict:
    """In this process: the pipeline up to the Trainer, metered; returns figures and artifact folders."""
    sys.path.insert(0, str(REPO / "bench"))
    from pipeline import ComponentMeter  # bench/pipeline.py
    from tfx import v1 as tfx
    from tfx.orchestration.pipeline import RunOptions

    from camenn.tfx_pipeline import configs, run_summary
    from camenn.tfx_pipeline.pipeline import create_pipeline

    config = configs.from_profile(
        "tiny",
        dataset_dir=dataset,
        outputs_dir=outputs,
        epochs=1,
        checkpoint_every_steps=1000,
        beam_direct_running_mode=mode,
        beam_num_workers=2,
        embedding_cache_dir=os.path.join(outputs, "embedding_cache"),
    )
    os.makedirs(os.path.dirname(config.metadata_path), exist_ok=True)
    pipeline = create_pipeline(
        config,
        metadata_connection_config=(tfx.orchestration.metadata.sqlite_metadata_connection_config(config.metadata_path)),
    )
    started = time.perf_counter()
    with ComponentMeter() as meter:
        tfx.orchestration.LocalDagRunner().run(pipeline, run_options=RunOptions(to_nodes=["Trainer"]))
    total = time.perf_counter() - started
    store = run_summary.open_store(config.metadata_path)
    nodes = run_summary.node_runs(store, run_summary.run_ids(store, config.pipeline_name)[-1])
    report = nodes["PreprocessDataset"].output("report").uri
    summary = json.loads(Path(report, "summary.json").read_text())
    history_path = Path(nodes["Trainer"].output("model_run").uri, "history.json")
    history = json.loads(history_path.read_text()) if history_path.exists() else {}
    return {
        "mode": mode,
        "total_s": total,
        "seconds": meter.seconds,
        "peak_rss": meter.peak_rss,
        "rows": summary["items"]["in"] + summary["events"]["in"],
        "events": summary["events"]["in"],
        "items": summary["items"]["in"],
        "distinct_photos": summary["images"]["distinct"],
        "train_steps": sum(history.get("epoch_steps", [])) or None,
        "artifacts": {
            "examples": nodes["PreprocessDataset"].output("examples").uri,
            "items": nodes["PreprocessDataset"].output("items").uri,
            "report": report,
            "transformed": nodes["Transform"].output("transformed_examples").uri,
        },
        "load_average": os.getloadavg()[0],
    }


def records(artifacts: dict) -> dict:
    """Every output of PreprocessDataset and Transform -> its sorted records.

    PreprocessDataset's records are compared as written (bytes); Transform's as tf.Examples (parsed and
    serialized deterministically), since tf.Transform writes a tf.Example's features in an order that
    differs between processes.
    """
    import tensorflow as tf

    def tfrecords(pattern, parsed=False):
        files = sorted(glob.glob(pattern))
        found = (r.numpy() for r in tf.data.TFRecordDataset(files, compression_type="GZIP"))
        if parsed:
            found = (tf.train.Example.FromString(r).SerializeToString(deterministic=True) for r in found)
        return sorted(found)

    found = {
        f"examples/{s}": tfrecords(os.path.join(artifacts["examples"], f"Split-{s}", "*")) for s in ("train", "eval")
    }
    found["items"] = tfrecords(os.path.join(artifacts["items"], "*"))
    found.update(
        {
            f"transformed/{s}": tfrecords(os.path.join(artifacts["transformed"], f"Split-{s}", "*"), parsed=True)
            for s in ("train", "eval")
        }
    )
    for name in ("items", "events"):
        lines = Path(artifacts["report"], "quarantine", f"{name}.csv").read_text(encoding="utf-8").splitlines()
        found[f"quarantine/{name}"] = [lines[0]] + sorted(lines[1:])
    return found


def exponent(points) -> float:
    """Least-squares slope of log(seconds) on log(rows)."""
    xs, ys = [math.log(r) for r, _ in points], [math.log(s) for _, s in points]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--factors", default="1,4,16")
    parser.add_argument("--modes", default="in_memory,multi_processing")
    parser.add_argument("--source", type=Path, default=REPO.parent / "shared" / "data" / "grocery_store")
    parser.add_argument("--keep", type=Path, help="work here and keep everything (default: a temp folder)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print("RESULT " + json.dumps(run_to_trainer(*args.child)))
        return

    scratch = args.keep or Path(tempfile.mkdtemp(prefix="camenn-scale-"))
    scratch.mkdir(parents=True, exist_ok=True)
    factors, modes = [int(f) for f in args.factors.split(",")], args.modes.split(",")
    results, equal = [], {}
    try:
        for factor in factors:
            dataset = scratch / f"x{factor}" / "dataset"
            sample_s = build_dataset(args.source, dataset, factor)
            runs = {}
            for mode in modes:
                outputs = scratch / f"x{factor}" / mode
                shutil.rmtree(outputs, ignore_errors=True)
                log = outputs.with_suffix(".log")
                outputs.mkdir(parents=True)
                with open(log, "w") as out:
                    done = subprocess.run(
                        [sys.executable, __file__, "--child", str(dataset), str(outputs), mode],
                        stdout=subprocess.PIPE,
                        stderr=out,
                        text=True,
                        cwd=REPO,
                    )
                if done.returncode:
                    raise SystemExit(f"x{factor} {mode} failed; see {log}")
                run = json.loads(next(line for line in done.stdout.splitlines() if line.startswith("RESULT "))[7:])
                run.update(factor=factor, sample_s=sample_s)
                runs[mode] = run
                results.append(run)
                pre = run["seconds"]["PreprocessDataset"]
                print(
                    f"x{factor:<3} {mode:17} {run['rows']:8,} rows: preprocess {pre:6.1f} s "
                    f"(peak {run['peak_rss'].get('PreprocessDataset', 0) / 2**30:.2f} GiB), Transform "
                    f"{run['seconds'].get('Transform', 0):6.1f} s, Trainer {run['seconds'].get('Trainer', 0):6.1f} s, "
                    f"to Trainer {run['total_s']:6.1f} s; load average {run['load_average']:.1f}",
                    flush=True,
                )
            if len(runs) == 2:
                a, b = (records(runs[m]["artifacts"]) for m in modes)
                equal[factor] = {kind: a[kind] == b[kind] for kind in a}
                print(
                    f"x{factor}: {modes[1]} equals {modes[0]} record for record: "
                    + ", ".join(f"{k} {'yes' if v else 'NO'} ({len(a[k])})" for k, v in equal[factor].items()),
                    flush=True,
                )
    finally:
        if not args.keep:
            shutil.rmtree(scratch, ignore_errors=True)

    print(
        f"\n{'size':>4} {'mode':17} {'items':>7} {'events':>8} {'photos':>7} {'sample s':>8} "
        + " ".join(f"{c[:10]:>10}" for c in ("Preprocess", "Statistics", "Transform", "Trainer"))
        + f" {'pre GiB':>8}"
    )
    for run in results:
        s = run["seconds"]
        print(
            f"{run['factor']:>3}x {run['mode']:17} {run['items']:7,} {run['events']:8,} {run['distinct_photos']:7,} "
            f"{run['sample_s']:8.1f} "
            + " ".join(f"{s.get(c, 0):10.1f}" for c in ("PreprocessDataset", "StatisticsGen", "Transform", "Trainer"))
            + f" {run['peak_rss'].get('PreprocessDataset', 0) / 2**30:8.2f}"
        )
    print("\nexponent b of wall time ~ rows^b over the sizes (goal: <= 1):")
    for mode in modes:
        runs = [r for r in results if r["mode"] == mode]
        if len(runs) < 2:
            continue
        parts = {
            c: exponent([(r["rows"], r["seconds"][c]) for r in runs])
            for c in ("PreprocessDataset", "StatisticsGen", "Transform", "Trainer")
        }
        parts["to Trainer"] = exponent([(r["rows"], r["total_s"]) for r in runs])
        parts["camenn sample"] = exponent([(r["rows"], r["sample_s"]) for r in runs])
        print(f"  {mode:17} " + ", ".join(f"{k} {v:.2f}" for k, v in parts.items()))
    biggest = [r for r in results if r["factor"] == max(factors)]
    peak = max(r["peak_rss"].get("PreprocessDataset", 0) for r in biggest) / 2**30
    print(f"preprocessing peak memory at {max(factors)}x: {peak:.2f} GiB (goal < 4)")
    if args.json:
        args.json.write_text(json.dumps({"runs": results, "equal": equal}, indent=2))


if __name__ == "__main__":
    main()
