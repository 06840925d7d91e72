"""Patch encoders (offline path) and the PatchEmbedding layer (in-model path) agree and behave."""

import numpy as np
import pytest

from camenn.model.patch_embedding import PatchEmbedding
from camenn.model.patch_encoders import load_patch_encoder
from camenn.preprocessing.images import split_into_patches


@pytest.fixture(scope="module")
def encoder():
    return load_patch_encoder("inception_v4", "inception_v4_tiny", batch_size=3)


@pytest.fixture(scope="module")
def photos():
    rng = np.random.default_rng(0)
    # 97x131 is not divisible by the grid: split_into_patches drops the remainder, so must the layer.
    return [rng.integers(0, 256, (97, 131, 3), dtype=np.uint8), rng.integers(0, 256, (60, 60, 3), dtype=np.uint8)]


def test_encoder_embeds_each_patch_independently_of_batching(encoder, photos):
    patches = split_into_patches(photos[0], (2, 3))
    embeddings = encoder(patches)
    assert (encoder.output_dim, encoder.image_size) == (192, (75, 75))
    assert embeddings.shape == (6, 192) and embeddings.dtype == np.float32
    one_by_one = np.concatenate([encoder(patches[i : i + 1]) for i in range(len(patches))])
    np.testing.assert_allclose(embeddings, one_by_one, rtol=1e-5, atol=1e-6)
    assert np.abs(embeddings[0] - embeddings[1]).max() > 1e-4  # different pixels, different embeddings
    groups = encoder.embed_groups([patches, split_into_patches(photos[1], (2, 2)), patches[:0]])
    assert [g.shape for g in groups] == [(6, 192), (4, 192), (0, 192)]
    np.testing.assert_allclose(groups[0], embeddings, rtol=1e-5, atol=1e-6)


def test_encoder_normalises_to_minus_one_one(encoder):
    prepared = encoder.prepare(np.array([[[[0, 255, 128]]]], np.uint8))
    assert prepared.shape == (1, 75, 75, 3)
    np.testing.assert_allclose(prepared[0, 0, 0], [-1.0, 1.0, 128 / 127.5 - 1], atol=1e-6)


def test_encoder_rejects_bad_inputs_and_names(encoder):
    with pytest.raises(ValueError, match="uint8"):
        encoder(np.zeros((2, 10, 10, 3), np.float32))
    with pytest.raises(ValueError, match="uint8"):
        encoder(np.zeros((10, 10, 3), np.uint8))
    with pytest.raises(ValueError, match="unknown image encoder"):
        load_patch_encoder("resnet", "inception_v4_tiny")
    with pytest.raises(ValueError, match="not a preset of encoder"):
        load_patch_encoder("efficientnet_lite0", "inception_v4_tiny")


def test_layer_equals_the_offline_path(encoder, photos):
    layer = PatchEmbedding("inception_v4", "inception_v4_tiny", grid=(2, 3))
    images = np.stack([photos[0], photos[0][::-1]])
    embedded = np.asarray(layer(images))
    assert embedded.shape == (2, 6, 192) == layer.compute_output_shape(images.shape)
    for image, row in zip(images, embedded):
        np.testing.assert_allclose(row, encoder(split_into_patches(image, (2, 3))), rtol=1e-5, atol=1e-6)
    float_images = np.asarray(layer(images.astype(np.float32)))
    np.testing.assert_allclose(float_images, embedded, rtol=1e-5, atol=1e-6)


def test_layer_serialises_and_trains():
    import tensorflow as tf

    layer = PatchEmbedding("inception_v4", "inception_v4_tiny", grid=(1, 2))
    clone = PatchEmbedding.from_config(layer.get_config())
    assert (clone.encoder, clone.preset, clone.grid) == ("inception_v4", "inception_v4_tiny", (1, 2))
    kernel = layer.backbone.get_layer("stem_conv_1_conv").kernel
    assert any(w is kernel for w in layer.trainable_weights)  # end-to-end mode trains the encoder too
    images = tf.constant(np.random.default_rng(3).uniform(0, 255, (2, 80, 160, 3)), tf.float32)
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(layer(images, training=True) ** 2)
    assert float(tf.reduce_max(tf.abs(tape.gradient(loss, kernel.value)))) > 0
