"""CameNNBackbone / CameNNMultiTask: presets, outputs, config and .keras round trips, the LR schedule."""

import copy

import keras
import numpy as np
import pytest
import tensorflow as tf

from camenn.model import features as F
from camenn.model.camenn import CameNNBackbone, CameNNMultiTask, WarmupLinearDecay

VOCABULARY_SIZES = {name: 30 + i for i, name in enumerate(F.ID_FEATURES)}
NUM_PATCHES, PATCH_DIM = 4, 8
TEXT_TOKENS, TEXT_DIM = 4, 12
DATA = dict(
    vocabulary_sizes=VOCABULARY_SIZES,
    num_text_tokens=TEXT_TOKENS,
    text_dim=TEXT_DIM,
    num_patches=NUM_PATCHES,
    patch_dim=PATCH_DIM,
)


def model_inputs(batch_size, seed=0, token_ids=False):
    rng = np.random.default_rng(seed)
    inputs = {name: rng.integers(0, VOCABULARY_SIZES[name], batch_size) for name in F.ID_FEATURES}
    inputs[F.HOUR] = rng.integers(0, 24, batch_size)
    inputs.update({name: rng.normal(size=batch_size).astype("float32") for name in F.NUMERIC_FEATURES})
    if token_ids:
        text = rng.integers(1000, 3000, (batch_size, 64))
        text[:, rng.integers(5, 64) :] = 0  # padding
        inputs[F.TEXT_TOKEN_IDS] = text
    else:
        inputs[F.TEXT_EMBEDDINGS] = rng.normal(size=(batch_size, TEXT_TOKENS * TEXT_DIM)).astype("float32")
    inputs[F.PATCH_EMBEDDINGS] = rng.normal(size=(batch_size, NUM_PATCHES * PATCH_DIM)).astype("float32")
    return inputs


def assert_same_outputs(model, other, inputs):
    # Eager calls run the same kernels op by op: bit-identical unless a weight or the graph differs
    # (two `predict` graphs traced for different batch shapes may round differently).
    want, got = model(inputs, training=False), other(inputs, training=False)
    for task in F.TASKS:
        np.testing.assert_array_equal(got[task].numpy(), want[task].numpy())


@pytest.fixture(scope="module")
def model():
    return CameNNMultiTask.from_preset("camenn_tiny", **DATA)


def test_outputs_are_float32_probabilities_per_task(model):
    outputs = model(model_inputs(5), training=False)
    assert set(outputs) == set(F.TASKS)
    for task in F.TASKS:
        assert outputs[task].shape == (5,) and outputs[task].dtype == "float32"
        assert np.all((outputs[task].numpy() > 0) & (outputs[task].numpy() < 1))


def test_preset_overrides_reach_the_architecture_and_data_arguments_are_required(model):
    backbone = model.backbone
    assert backbone.vocabulary_sizes == VOCABULARY_SIZES
    assert backbone.input[F.PATCH_EMBEDDINGS].shape == (None, NUM_PATCHES * PATCH_DIM)
    assert backbone.input[F.TEXT_EMBEDDINGS].shape == (None, TEXT_TOKENS * TEXT_DIM)
    assert backbone.expert_mixture.num_experts == 4 and backbone.text_encoder is None
    with pytest.raises(ValueError, match="vocabulary_sizes"):
        CameNNBackbone.from_preset("camenn_tiny", num_text_tokens=4, text_dim=8, num_patches=4, patch_dim=8)
    with pytest.raises(ValueError, match="text_dim"):
        CameNNBackbone.from_preset(
            "camenn_tiny", vocabulary_sizes=VOCABULARY_SIZES, num_patches=4, patch_dim=8, num_text_tokens=4
        )


@pytest.mark.parametrize("preset,experts,width", [("camenn_mini", 4, 64), ("camenn_small", 8, 128)])
def test_every_cpu_preset_reads_cached_text(preset, experts, width):
    built = CameNNMultiTask.from_preset(
        preset,
        vocabulary_sizes=VOCABULARY_SIZES,
        num_text_tokens=4,
        text_dim=384,
        num_patches=4,
        patch_dim=1280,
        compile=False,
    )
    backbone = built.backbone
    assert (backbone.num_experts, backbone.hidden_dim, backbone.text_encoder) == (experts, width, None)
    assert built.input[F.TEXT_EMBEDDINGS].shape == (None, 4 * 384) and F.TEXT_TOKEN_IDS not in built.input


def test_the_gpu_preset_fine_tunes_its_text_encoder_on_token_ids_at_a_smaller_rate():
    built = CameNNMultiTask.from_preset(
        "camenn_base", vocabulary_sizes=VOCABULARY_SIZES, num_patches=4, patch_dim=1280, load_weights=False
    )
    backbone = built.backbone
    assert (backbone.num_experts, backbone.hidden_dim, backbone.text_encoder.hidden_dim) == (16, 384, 384)
    assert F.TEXT_TOKEN_IDS in built.input and F.TEXT_EMBEDDINGS not in built.input
    assert backbone.text_encoder.trainable
    built.compile(total_steps=10, learning_rate=1e-3, pretrained_learning_rate_multiplier=0.05)
    encoder_paths = {v.path for v in backbone.text_encoder.trainable_variables}
    assert set(built.optimizer.scaled_paths) == encoder_paths and built.optimizer.learning_rate_multiplier == 0.05


def test_the_pretrained_step_is_the_multiplier_times_the_fresh_one():
    from camenn.model.camenn import GroupedAdamW

    fresh, pretrained = keras.Variable([1.0], name="fresh"), keras.Variable([1.0], name="pretrained")
    optimizer = GroupedAdamW(
        scaled_paths=[pretrained.path], learning_rate_multiplier=0.1, learning_rate=0.01, weight_decay=0.0
    )
    optimizer.apply([tf.constant([1.0]), tf.constant([1.0])], [fresh, pretrained])
    # Adam's first step moves each variable by its learning rate, whatever the gradient's size.
    np.testing.assert_allclose([1.0 - fresh.numpy()[0], 1.0 - pretrained.numpy()[0]], [0.01, 0.001], rtol=1e-3)


def test_end_to_end_text_pools_the_encoders_token_states_like_preprocessing():
    from camenn.model.camenn import load_text_encoder
    from camenn.model.text_encoders import TextEncoder

    encoder = load_text_encoder("bert_tiny")
    model = CameNNMultiTask.from_preset(
        "camenn_tiny", **{**DATA, "text_dim": 32}, text_encoder=encoder, max_text_length=64, compile=False
    )
    inputs = model_inputs(3, token_ids=True)
    tokens = model.backbone.listing_tokens({k: tf.constant(v) for k, v in inputs.items()})
    cached = dict(inputs)
    cached[F.TEXT_EMBEDDINGS] = TextEncoder(encoder, TEXT_TOKENS)(inputs.pop(F.TEXT_TOKEN_IDS)).reshape(3, -1)
    text_only = CameNNBackbone.from_config({**model.backbone.get_config(), "text_encoder": None})
    text_only.set_weights([w for w in model.backbone.get_weights()][len(encoder.weights) :])
    np.testing.assert_allclose(
        text_only.listing_tokens({k: tf.constant(v) for k, v in cached.items()}), tokens, rtol=1e-4, atol=1e-5
    )


def test_score_of_an_example_does_not_depend_on_its_batch(model):
    inputs = model_inputs(8)
    batched = model(inputs, training=False)
    for row in (0, 3, 5, 7):
        alone = model({k: v[row : row + 1] for k, v in inputs.items()}, training=False)
        for task in F.TASKS:
            np.testing.assert_allclose(alone[task][0], batched[task][row], rtol=1e-5)


def test_config_round_trip_rebuilds_the_same_model(model):
    config = model.get_config()
    clone = CameNNMultiTask.from_config(copy.deepcopy(config))
    assert clone.get_config() == config
    clone.set_weights(model.get_weights())
    assert_same_outputs(model, clone, model_inputs(4, seed=1))


def test_keras_file_save_and_load_give_identical_outputs(model, tmp_path):
    model.compile(total_steps=100, learning_rate=2e-4)
    path = tmp_path / "camenn.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert isinstance(loaded, CameNNMultiTask) and isinstance(loaded.backbone, CameNNBackbone)
    schedule = loaded.optimizer.get_config()["learning_rate"]
    assert schedule["class_name"] == "WarmupLinearDecay" and schedule["config"]["peak_learning_rate"] == 2e-4
    assert_same_outputs(model, loaded, model_inputs(4, seed=2))


def test_default_losses_honour_the_per_task_sample_weights(model):
    model.compile(total_steps=10)
    inputs = model_inputs(6, seed=3)
    y_pred = model(inputs, training=False)
    rng = np.random.default_rng(0)
    y = {task: rng.integers(0, 2, 6).astype("float32") for task in F.TASKS}
    weights = {task: np.array([1, 1, 0, 1, 0, 1], "float32") * (i + 1) for i, task in enumerate(F.TASKS)}
    expected = sum(model.losses)
    for task in F.TASKS:
        p = np.clip(y_pred[task].numpy(), 1e-7, 1 - 1e-7)
        bce = -(y[task] * np.log(p) + (1 - y[task]) * np.log(1 - p))
        expected += model.loss_weights[task] * np.sum(weights[task] * bce) / np.sum(weights[task])
    total = model.compute_loss(x=inputs, y=y, y_pred=y_pred, sample_weight=weights, training=False)
    np.testing.assert_allclose(float(total), float(expected), rtol=1e-5)


def test_end_to_end_mode_takes_pixels_and_trains_the_image_encoder():
    from camenn.model.patch_embedding import PatchEmbedding

    image_encoder = PatchEmbedding("inception_v4", "inception_v4_tiny", grid=(2, 2))
    model = CameNNMultiTask.from_preset(
        "camenn_tiny",
        vocabulary_sizes=VOCABULARY_SIZES,
        num_text_tokens=TEXT_TOKENS,
        text_dim=TEXT_DIM,
        image_encoder=image_encoder,
        compile=False,
    )
    assert F.IMAGE in model.input and F.PATCH_EMBEDDINGS not in model.input
    assert model.backbone.num_patches == 4 and model.backbone.patch_dim == image_encoder.output_dim
    inputs = model_inputs(2)
    del inputs[F.PATCH_EMBEDDINGS]
    inputs[F.IMAGE] = np.random.default_rng(0).integers(0, 256, (2, 48, 48, 3)).astype("uint8")
    with tf.GradientTape() as tape:
        outputs = model(inputs, training=True)
        loss = sum(tf.reduce_sum(outputs[task]) for task in F.TASKS)
    gradients = tape.gradient(loss, image_encoder.trainable_variables)
    assert gradients and all(g is not None for g in gradients)
    assert sum(float(tf.reduce_sum(tf.abs(g))) for g in gradients) > 0
    clone = CameNNMultiTask.from_config(copy.deepcopy(model.get_config()))
    clone.set_weights(model.get_weights())
    assert_same_outputs(model, clone, inputs)


def test_mixed_precision_keeps_outputs_float32():
    model = CameNNMultiTask.from_preset("camenn_tiny", **DATA, dtype="mixed_bfloat16", compile=False)
    assert model.backbone.expert_mixture.compute_dtype == "bfloat16"
    outputs = model(model_inputs(3))
    assert all(outputs[task].dtype == "float32" for task in F.TASKS)


def test_warmup_linear_decay_schedule():
    schedule = WarmupLinearDecay(1e-3, warmup_steps=10, total_steps=110, end_learning_rate=1e-5)
    values = [float(schedule(step)) for step in (0, 5, 10, 60, 110, 500)]
    np.testing.assert_allclose(values, [0.0, 5e-4, 1e-3, (1e-3 + 1e-5) / 2, 1e-5, 1e-5], rtol=1e-5)
    assert WarmupLinearDecay.from_config(schedule.get_config()).get_config() == schedule.get_config()
