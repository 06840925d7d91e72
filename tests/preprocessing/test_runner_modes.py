"""`camenn preprocess` writes the same records whether Beam's DirectRunner runs in this process or in
worker processes (`--direct_running_mode=multi_processing`), the mode for data that fills the CPUs.

(bench/scale.py compares the two modes at 1x, 4x and 16x the sample, with their times and memory.)
"""

import glob
from pathlib import Path

import pytest
import tensorflow as tf

from camenn.preprocessing import pipeline

ENCODER, PRESET = "inception_v4", "inception_v4_tiny"


def records(output: Path) -> dict:
    """Every output file kind -> the sorted list of its records (tf.Examples as bytes, quarantine lines)."""
    found = {}
    for kind in ("examples/train", "examples/eval", "items"):
        files = sorted(glob.glob(str(output / kind / "*.tfrecord.gz")))
        found[kind] = sorted(r.numpy() for r in tf.data.TFRecordDataset(files, compression_type="GZIP"))
    for name in ("items", "events"):
        lines = (output / "quarantine" / f"{name}.csv").read_text(encoding="utf-8").splitlines()
        found[f"quarantine/{name}"] = [lines[0]] + sorted(lines[1:])
    return found


@pytest.mark.slow
def test_multi_processing_writes_what_in_memory_writes(tiny_sample, tmp_path):
    outputs = {}
    for mode, workers in (("in_memory", 1), ("multi_processing", 2)):
        output = tmp_path / mode
        summary = pipeline.preprocess(
            tiny_sample,
            output,
            ENCODER,
            PRESET,
            text_encoder="bert_tiny",
            beam_args=[f"--direct_running_mode={mode}", f"--direct_num_workers={workers}"],
            cache_dir=tmp_path / f"cache-{mode}",
        )
        outputs[mode] = (summary, records(output))
    (memory_summary, in_memory), (process_summary, multi_processing) = outputs["in_memory"], outputs["multi_processing"]
    assert in_memory["examples/train"] and in_memory["items"] and len(in_memory["quarantine/items"]) > 1
    for kind in in_memory:
        assert multi_processing[kind] == in_memory[kind], kind
    for key in ("items", "events", "split", "images", "features"):
        if key == "images":  # the cache folders differ by design
            memory_summary[key].pop("cache_dir"), process_summary[key].pop("cache_dir")
        assert process_summary[key] == memory_summary[key], key
