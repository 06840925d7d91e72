"""InceptionV4: parity with the reference implementation (timm's, via ../shared/reference), both
converters, the presets."""

import zlib
from pathlib import Path

import numpy as np
import pytest

from camenn.model.inception_v4 import convert_inception_v4 as convert
from camenn.model.inception_v4.inception_v4_backbone import InceptionV4Backbone, conv_units

# ../shared beside the checkout (tests/conftest.py's SHARED; not importable from every test folder).
REFERENCE = Path(__file__).resolve().parents[3] / "shared" / "reference" / "inception_v4_reference.npz"
TINY = {"stackwise_num_blocks": (1, 1, 1), "width_multiplier": 0.125}


def reference_tensor(name, shape):
    """The rule of make_inception_v4_reference.py's docstring, with numpy alone."""
    rng = np.random.default_rng(zlib.crc32(name.encode()))
    if name.endswith("conv.weight"):
        value = rng.standard_normal(shape) * np.sqrt(2.0 / int(np.prod(shape[1:])))
    elif name.endswith("bn.weight"):
        value = rng.uniform(0.8, 1.2, shape)
    elif name.endswith("bn.bias") or name.endswith("running_mean"):
        value = rng.standard_normal(shape) * 0.1
    elif name.endswith("running_var"):
        value = rng.uniform(0.5, 1.5, shape)
    else:
        raise ValueError(name)
    return value.astype(np.float32)


def timm_state(backbone):
    """A timm-layout state dict for `backbone`'s configuration, weights by the reference rule."""
    state = {}
    for prefix, _, timm, _ in conv_units(backbone.stackwise_num_blocks):
        kh, kw, cin, cout = backbone.get_layer(f"{prefix}_conv").kernel.shape
        state[f"{timm}.conv.weight"] = reference_tensor(f"{timm}.conv.weight", (cout, cin, kh, kw))
        for part in ("weight", "bias", "running_mean", "running_var"):
            state[f"{timm}.bn.{part}"] = reference_tensor(f"{timm}.bn.{part}", (cout,))
    return state


def as_slim(state, backbone):
    """The same function in TF-slim's layout: slim has no BN scale, so fold gamma into the variance
    (gamma / sqrt(var + eps) == 1 / sqrt(var' + eps))."""
    eps = 1e-3
    tensors = {"global_step": np.array(1, np.int64)}
    for _, _, timm, scope in conv_units(backbone.stackwise_num_blocks):
        gamma = state[f"{timm}.bn.weight"]
        tensors[f"{scope}/weights"] = np.transpose(state[f"{timm}.conv.weight"], (2, 3, 1, 0))
        tensors[f"{scope}/BatchNorm/beta"] = state[f"{timm}.bn.bias"]
        tensors[f"{scope}/BatchNorm/moving_mean"] = state[f"{timm}.bn.running_mean"]
        tensors[f"{scope}/BatchNorm/moving_variance"] = (state[f"{timm}.bn.running_var"] + eps) / gamma**2 - eps
    return tensors


@pytest.fixture(scope="session")
def reference():
    if not REFERENCE.is_file():
        pytest.fail(f"{REFERENCE} is missing: CI and developers have ../shared beside the checkout")
    return np.load(REFERENCE)


@pytest.fixture(scope="session")
def reference_state(reference):
    """The reference weights in timm's layout (shapes are stored as tuple literals)."""
    return {
        name: reference_tensor(name, eval(shape))
        for name, shape in zip(reference["tensor_names"], reference["tensor_shapes"])
    }


@pytest.fixture(scope="session")
def reference_backbone(reference_state):
    """The paper's InceptionV4 with the reference weights, mapped by our timm converter."""
    backbone = InceptionV4Backbone()
    convert.load_timm_weights(backbone, reference_state)  # raises unless every reference tensor is used
    return backbone


@pytest.fixture(scope="session")
def tiny_timm():
    """A tiny InceptionV4 and the timm-layout state dict loaded into it."""
    backbone = InceptionV4Backbone(**TINY)
    state = timm_state(backbone)
    convert.load_timm_weights(backbone, state)
    return backbone, state


def assert_close_to(actual, expected):
    """Equal within 1e-4 of the output scale (the reference's outputs are of order 10)."""
    assert actual.shape == expected.shape
    assert np.abs(actual - expected).max() <= 1e-4 * np.abs(expected).max()


def test_parameter_count_and_layout_equal_the_reference(reference, reference_backbone):
    trainable = sum(int(np.prod(w.shape)) for w in reference_backbone.trainable_weights)
    assert trainable == int(reference["trainable_parameters"]) == 41_142_816
    expected = {
        f"{timm}.{p}"
        for _, _, timm, _ in conv_units((4, 7, 3))
        for p in ("conv.weight", "bn.weight", "bn.bias", "bn.running_mean", "bn.running_var")
    }
    assert expected == set(reference["tensor_names"])
    assert list(reference["bn_epsilon"]) == [reference_backbone.get_layer("stem_conv_1_bn").epsilon]


def test_outputs_equal_the_reference(reference, reference_backbone):
    feature_map = np.asarray(reference_backbone(reference["images"], training=False))
    assert_close_to(feature_map, reference["feature_map"])  # (2, 8, 8, 1536)
    assert_close_to(feature_map.mean(axis=(1, 2)), reference["pooled"])
    small = np.asarray(reference_backbone(reference["small_image"], training=False))
    assert_close_to(small.mean(axis=(1, 2)), reference["pooled_small"])


def test_a_wrong_tensor_fails_the_parity_check(reference, reference_backbone):
    """The comparison above can fail: one changed BN offset in the last block moves the output."""
    beta = reference_backbone.get_layer("inception_c_3_branch_0_conv_1_bn").beta
    original = beta.numpy()
    try:
        beta.assign(original + 1.0)
        small = np.asarray(reference_backbone(reference["small_image"], training=False)).mean(axis=(1, 2))
    finally:
        beta.assign(original)
    assert np.abs(small - reference["pooled_small"]).max() > 1e-2 * np.abs(reference["pooled_small"]).max()


def test_slim_checkpoint_gives_the_same_model_as_timm(tmp_path, tiny_timm):
    import tensorflow as tf

    timm_backbone, state = tiny_timm
    slim = as_slim(state, timm_backbone)
    prefix = str(tmp_path / "inception_v4.ckpt")
    names = sorted(slim)
    tf.raw_ops.SaveV2(
        prefix=prefix,
        tensor_names=names,
        shape_and_slices=[""] * len(names),
        tensors=[tf.constant(slim[n]) for n in names],
    )
    kind, tensors = convert.read_checkpoint(prefix)
    assert kind == "slim"
    slim_backbone = InceptionV4Backbone(**TINY)
    convert.load_slim_weights(slim_backbone, tensors)
    images = np.random.default_rng(1).uniform(-1, 1, (2, 80, 90, 3)).astype(np.float32)
    expected = np.asarray(timm_backbone(images, training=False))
    np.testing.assert_allclose(
        np.asarray(slim_backbone(images, training=False)), expected, atol=1e-5 * np.abs(expected).max()
    )


def test_converters_reject_foreign_checkpoints(tiny_timm):
    backbone, state = tiny_timm
    with pytest.raises(ValueError, match="does not use"):
        convert.load_timm_weights(backbone, {**state, "fc.weight": np.zeros((2, 2), np.float32)})
    incomplete = {k: v for k, v in state.items() if k != "features.3.conv.bn.bias"}
    with pytest.raises(KeyError, match="features.3.conv.bn.bias"):
        convert.load_timm_weights(backbone, incomplete)
    with pytest.raises(ValueError, match="another width_multiplier"):
        convert.load_timm_weights(InceptionV4Backbone(stackwise_num_blocks=(1, 1, 1), width_multiplier=0.25), state)
    with pytest.raises(KeyError, match="Conv2d_1a_3x3/BatchNorm/beta"):
        convert.load_slim_weights(backbone, {"InceptionV4/Conv2d_1a_3x3/weights": np.zeros((3, 3, 3, 4))})


def test_timm_safetensors_converts_to_a_preset_folder(tmp_path, tiny_timm):
    from safetensors.numpy import save_file

    from camenn.model.patch_encoders import load_patch_encoder

    expected_model, state = tiny_timm
    head = {"last_linear.weight": np.zeros((1000, 192), np.float32), "last_linear.bias": np.zeros(1000, np.float32)}
    save_file({**state, **head}, str(tmp_path / "model.safetensors"))
    convert.convert_checkpoint(tmp_path / "model.safetensors", tmp_path / "preset", image_size=(80, 80), **TINY)
    encoder = load_patch_encoder("inception_v4", str(tmp_path / "preset"))
    assert (encoder.output_dim, encoder.image_size) == (192, (80, 80))
    images = np.random.default_rng(2).uniform(-1, 1, (1, 80, 80, 3)).astype(np.float32)
    np.testing.assert_array_equal(np.asarray(encoder.backbone(images)), np.asarray(expected_model(images)))


def test_tiny_preset_loads_by_name_and_round_trips_its_config():
    backbone = InceptionV4Backbone.from_preset("inception_v4_tiny")
    assert "inception_v4_tiny" in InceptionV4Backbone.presets
    assert backbone.stackwise_num_blocks == (1, 1, 1) and backbone.output_dim == 192
    clone = InceptionV4Backbone.from_config(backbone.get_config())
    assert clone.count_params() == backbone.count_params()
    assert backbone(np.zeros((1, 75, 75, 3), np.float32)).shape == (1, 1, 1, 192)


def test_bad_configurations_are_refused():
    with pytest.raises(ValueError, match="three positive"):
        InceptionV4Backbone(stackwise_num_blocks=(4, 7))
    with pytest.raises(ValueError, match="width_multiplier"):
        InceptionV4Backbone(width_multiplier=0)
