"""EmbedPatches on Beam's DirectRunner: keys kept, embeddings equal to the encoder's, batched."""

import apache_beam as beam
import numpy as np
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that

from camenn.model.patch_encoders import load_patch_encoder
from camenn.preprocessing.images import split_into_patches
from camenn.preprocessing.patch_embedding import EmbedPatches


def test_embed_patches_matches_the_encoder():
    rng = np.random.default_rng(0)
    # Photos of different sizes: their patches differ in size but still share forward passes.
    elements = [
        (f"item-{i}", split_into_patches(rng.integers(0, 256, (80 + 9 * i, 90 + 5 * i, 3), np.uint8))) for i in range(7)
    ]
    encoder = load_patch_encoder("inception_v4", "inception_v4_tiny")
    expected = {key: encoder(patches) for key, patches in elements}

    def check(actual):
        assert sorted(key for key, _ in actual) == sorted(expected)
        for key, embeddings in actual:
            assert embeddings.dtype == np.float32 and embeddings.shape == (4, 192)
            np.testing.assert_allclose(embeddings, expected[key], rtol=1e-5, atol=1e-6)

    with TestPipeline() as pipeline:
        embedded = pipeline | beam.Create(elements) | EmbedPatches("inception_v4", "inception_v4_tiny", batch_size=8)
        assert_that(embedded, check)
