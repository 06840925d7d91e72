"""Does reading events.csv stream? Peak memory reading a 2 GB events.csv against a 32 MB one.

Writes an events.csv of `--gigabytes` (default 2) and one of 1/64 of that (the baseline) into a scratch
folder, then reads each, in a fresh process, the way `camenn preprocess` does:

- `reader`: `ReadCsv` (dataset.read_rows) and the row checks (`_parse_events`), in plain Python;
- `beam`:   the same DoFns in a Beam pipeline on the DirectRunner, ending in a count (a fused stage: no
            element is held between steps), as the first stage of `camenn preprocess` runs.

For each it prints rows, seconds, rows per second, and the process's peak resident memory (ru_maxrss)
over its resident memory once everything was imported (what reading added). Streaming means the
added memory is the same for the 2 GB file as for the baseline: the ratio big / baseline is ~1, where
holding the file would make it ~64.

    .venv/bin/python bench/events_stream.py [--gigabytes 2] [--modes reader,beam] [--keep DIR]

(What follows the read in `camenn preprocess`, the join of events to listings, is a GroupByKey: on the
DirectRunner it holds its input in memory, so a whole run over 2 GB needs a distributed runner; the
memory of whole runs is what bench/scale.py measures.)
"""

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HEADER = "request_id,shopper_id,item_id,timestamp,hour,distance_km,converted\n"


def write_events(path: Path, size_bytes: int, seed: int = 0) -> int:
    """An events.csv of at most `size_bytes`: a block of 100,000 varied rows, repeated. Returns its rows."""
    import numpy as np

    rng = np.random.default_rng(seed)
    n = 100_000
    shoppers, items = rng.integers(0, 20_000, n), rng.integers(0, 5_000, n)
    hours, labels = rng.integers(0, 24, n), (rng.random(n) < 0.23).astype(int)
    distances, times = rng.uniform(0, 12, n).round(2), 1_709_510_400 + np.sort(rng.integers(0, 28 * 86400, n))
    lines = [
        f"r{k:08d},s{shoppers[k]:05d},i{items[k]:05d},{times[k]},{hours[k]},{distances[k]},{labels[k]}\n".encode()
        for k in range(n)
    ]
    block = b"".join(lines)
    rows = 0
    with open(path, "wb") as file:
        file.write(HEADER.encode())
        while file.tell() + len(block) <= size_bytes:
            file.write(block)
            rows += n
        for line in lines:  # the rest, whole rows only
            if file.tell() + len(line) > size_bytes:
                break
            file.write(line)
            rows += 1
    return rows


def _maxrss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB


def _current_rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def read_in_this_process(path: str, mode: str) -> dict:
    """Reads `path` as `mode` says; returns rows, seconds and memory figures (bytes)."""
    import apache_beam as beam

    from camenn.preprocessing import dataset, transforms

    read_csv = transforms.ReadCsv(dataset.EVENT_COLUMNS, dataset.EVENTS_FILE)
    imported = _current_rss_bytes()
    started = time.perf_counter()
    if mode == "reader":
        rows = sum(1 for element in read_csv.process(path) for _ in transforms._parse_events(element))
    else:
        counted = Path(tempfile.mkdtemp()) / "count"
        with beam.Pipeline(
            options=beam.options.pipeline_options.PipelineOptions(
                ["--direct_running_mode=in_memory", "--direct_num_workers=1"]
            )
        ) as p:
            records = p | beam.Create([path]) | beam.ParDo(read_csv).with_outputs(transforms.REJECTED, main="rows")
            events = records.rows | beam.FlatMap(transforms._parse_events).with_outputs(
                transforms.REJECTED, main="events"
            )
            _ = (
                events.events
                | beam.combiners.Count.Globally()
                | beam.io.WriteToText(str(counted), shard_name_template="")
            )
        rows = int(counted.read_text())
        shutil.rmtree(counted.parent)
    seconds = time.perf_counter() - started
    return {"rows": rows, "seconds": seconds, "imported_rss": imported, "peak_rss": _maxrss_bytes()}


def measure(path: Path, mode: str) -> dict:
    """`read_in_this_process` in a fresh Python process (its peak memory is the read's alone)."""
    output = subprocess.run(
        [sys.executable, __file__, "--child", str(path), mode], check=True, capture_output=True, text=True
    ).stdout
    return json.loads(output.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gigabytes", type=float, default=2.0)
    parser.add_argument("--modes", default="reader,beam")
    parser.add_argument("--keep", type=Path, help="write the files here and keep them (default: a temp folder)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(read_in_this_process(*args.child)))
        return

    scratch = args.keep or Path(tempfile.mkdtemp(prefix="camenn-events-"))
    scratch.mkdir(parents=True, exist_ok=True)
    try:
        big, small = scratch / "events_big.csv", scratch / "events_baseline.csv"
        started = time.perf_counter()
        files = {
            "baseline": (small, write_events(small, int(args.gigabytes * 2**30 / 64))),
            "big": (big, write_events(big, int(args.gigabytes * 2**30))),
        }
        print(
            f"wrote {big.stat().st_size / 2**30:.2f} GiB ({files['big'][1]:,} rows) and a baseline of "
            f"{small.stat().st_size / 2**20:.0f} MiB ({files['baseline'][1]:,} rows) in "
            f"{time.perf_counter() - started:.0f} s; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs"
        )
        print(
            f"{'mode':7} {'file':9} {'MiB':>7} {'rows':>12} {'s':>7} {'rows/s':>9} {'imported MiB':>13} "
            f"{'peak MiB':>9} {'added MiB':>10}"
        )
        results = {}
        for mode in args.modes.split(","):
            for name, (path, rows) in files.items():
                result = measure(path, mode)
                assert result["rows"] == rows, (mode, name, result["rows"], rows)
                result["file_bytes"] = path.stat().st_size
                result["added_rss"] = result["peak_rss"] - result["imported_rss"]
                results[f"{mode}/{name}"] = result
                print(
                    f"{mode:7} {name:9} {result['file_bytes'] / 2**20:7.0f} {rows:12,} {result['seconds']:7.1f} "
                    f"{rows / result['seconds']:9,.0f} {result['imported_rss'] / 2**20:13.0f} "
                    f"{result['peak_rss'] / 2**20:9.0f} {result['added_rss'] / 2**20:10.1f}"
                )
            big_run, base_run = results[f"{mode}/big"], results[f"{mode}/baseline"]
            added = (
                f"{big_run['added_rss'] / base_run['added_rss']:.2f}x"
                if base_run["added_rss"] >= 2**20
                else f"{max(big_run['added_rss'], 0) / 2**20:.1f} MiB against under 1 MiB"
            )
            print(
                f"{mode}: the file is {big_run['file_bytes'] / base_run['file_bytes']:.0f}x the baseline; peak "
                f"memory {big_run['peak_rss'] / base_run['peak_rss']:.2f}x, memory added by reading {added} "
                "(streaming: ~1x; holding the file: ~64x)"
            )
        if args.json:
            args.json.write_text(json.dumps(results, indent=2))
    finally:
        if not args.keep:
            shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
