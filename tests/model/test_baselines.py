"""The baselines and CameNN's ablations: each builds from its preset, round-trips its config and scores;
the baselines export SavedModels whose `dense` signature gives what the Keras model gives. (Training them,
ablations included, is tested through the pipeline: tests/tfx_pipeline/test_experiments.py.)"""

import numpy as np
import pytest
import tensorflow as tf

from camenn.model import features
from camenn.model.baselines import DNNRanker, DNNRankerBackbone, MMoE, MMoEBackbone
from camenn.model.camenn import CameNNBackbone, CameNNMultiTask
from camenn.model.camenn.export import export_saved_model

VOCABULARY = {name: 20 for name in features.ID_FEATURES}
NUM_PATCHES, PATCH_DIM, TEXT_TOKENS, TEXT_DIM = 4, 8, 2, 6
ABLATIONS = {
    "without_mixture": dict(num_experts=0),
    "cvr_only": dict(task_names=[features.CVR]),
    "text_only": dict(modalities=["text"]),
    "image_only": dict(modalities=["image"]),
}


def _batch(size, seed=0):
    rng = np.random.default_rng(seed)
    batch = {name: rng.integers(0, 20, size) for name in features.ID_FEATURES}
    batch[features.HOUR] = rng.integers(0, 24, size)
    batch.update({name: rng.normal(size=size).astype("float32") for name in features.NUMERIC_FEATURES})
    batch[features.TEXT_EMBEDDINGS] = rng.normal(size=(size, TEXT_TOKENS * TEXT_DIM)).astype("float32")
    batch[features.PATCH_EMBEDDINGS] = rng.normal(size=(size, NUM_PATCHES * PATCH_DIM)).astype("float32")
    return batch


def _build(task_cls, preset, **kwargs):
    return task_cls.from_preset(
        preset,
        vocabulary_sizes=VOCABULARY,
        num_patches=NUM_PATCHES,
        patch_dim=PATCH_DIM,
        num_text_tokens=TEXT_TOKENS,
        text_dim=TEXT_DIM,
        **kwargs,
    )


BASELINES = {"dnn_ranker": (DNNRanker, "dnn_ranker_tiny"), "mmoe": (MMoE, "mmoe_tiny")}


def _inputs(model, batch):
    return {name: batch[name] for name in model.input}


@pytest.mark.parametrize("name", sorted(BASELINES))
def test_baseline_round_trips_exports_and_scores(name, tmp_path):
    model = _build(*BASELINES[name])
    restored = type(model.backbone).from_config(model.backbone.get_config())
    assert restored.get_config() == model.backbone.get_config()
    assert list(restored.input) == list(model.input)
    assert set(model.input) == set(features.MODEL_INPUTS) - {features.TEXT_TOKEN_IDS}

    batch = _batch(5, seed=1)
    expected = model(_inputs(model, batch))
    assert not np.allclose(expected[features.CVR], expected[features.CVR][0])  # the inputs matter
    export_saved_model(model, tmp_path / "model")
    loaded = tf.saved_model.load(str(tmp_path / "model"))
    assert "rank" not in loaded.signatures  # no listing-only attention, no listing table
    dense = loaded.signatures["dense"](**{k: tf.constant(v) for k, v in _inputs(model, batch).items()})
    assert set(dense) == set(features.TASKS)
    for task in features.TASKS:
        np.testing.assert_allclose(dense[task].numpy(), expected[task], atol=1e-5)


@pytest.mark.parametrize("name", sorted(ABLATIONS))
def test_ablation_round_trips_and_scores(name):
    model = _build(CameNNMultiTask, "camenn_tiny", **ABLATIONS[name])
    restored = CameNNBackbone.from_config(model.backbone.get_config())
    assert restored.get_config() == model.backbone.get_config()
    outputs = model(_inputs(model, _batch(4)))
    assert set(outputs) == set(model.backbone.task_names)
    for value in outputs.values():
        assert value.shape == (4,) and np.all((value > 0) & (value < 1))


def test_ablations_drop_what_they_say():
    inputs = {name: list(_build(CameNNMultiTask, "camenn_tiny", **kwargs).input) for name, kwargs in ABLATIONS.items()}
    assert features.PATCH_EMBEDDINGS not in inputs["text_only"] and features.TEXT_EMBEDDINGS in inputs["text_only"]
    assert features.TEXT_EMBEDDINGS not in inputs["image_only"] and features.PATCH_EMBEDDINGS in inputs["image_only"]
    without = _build(CameNNMultiTask, "camenn_tiny", num_experts=0).backbone
    assert without.expert_mixture is None and without.get_config()["num_experts"] == 0
    with pytest.raises(ValueError, match="modalities"):
        _build(CameNNMultiTask, "camenn_tiny", modalities=["audio"])


def test_baseline_presets_build_with_their_families():
    for backbone_cls in (DNNRankerBackbone, MMoEBackbone):
        for preset in backbone_cls.preset_configs:
            assert preset not in CameNNBackbone.preset_configs
    with pytest.raises(ValueError, match="vocabulary_sizes"):
        DNNRankerBackbone.from_preset("dnn_ranker_tiny", num_patches=4, patch_dim=8, num_text_tokens=2, text_dim=6)
