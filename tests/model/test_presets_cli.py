"""`camenn presets list` names everything a user picks by name: encoder presets, model presets, pipeline
profiles."""

import subprocess
import sys
from pathlib import Path


def test_presets_list_shows_encoders_model_presets_and_pipeline_profiles():
    from camenn.model import preset_store
    from camenn.model.presets_cli import model_presets
    from camenn.tfx_pipeline import configs

    camenn = Path(sys.executable).with_name("camenn")
    result = subprocess.run([str(camenn), "presets", "list"], capture_output=True, text=True, timeout=300, check=True)
    sections = result.stdout.split("\n\n")
    assert [s.splitlines()[0].split(" (")[0] for s in sections] == [
        "encoder presets",
        "model presets",
        "pipeline profiles",
    ]
    listed = [{line.split()[0] for line in s.splitlines()[1:]} for s in sections]
    assert listed[0] == set(preset_store.names())
    assert listed[1] == set(model_presets()) and {"camenn_small", "dnn_ranker_mini", "retrieval_small"} <= listed[1]
    assert listed[2] == set(configs.PROFILES) == {"tiny", "small", "base"}
