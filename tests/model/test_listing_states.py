"""Listing-only attention and the listing states: what depends on the listing alone does not change with the
shopper or the context, and scoring a request against a listing's cached states gives the full model's CVR."""

import numpy as np
import pytest
import tensorflow as tf
from keras import ops

from camenn.model import features as F
from camenn.model.camenn import CameNNMultiTask, encode_listings, score_requests
from camenn.model.camenn.transformer_expert_mixture import routing_metrics_paused

DATA = dict(
    vocabulary_sizes={name: 40 for name in F.ID_FEATURES}, num_text_tokens=3, text_dim=10, num_patches=4, patch_dim=8
)


def inputs(n, seed):
    rng = np.random.default_rng(seed)
    batch = {name: rng.integers(0, 40, n) for name in F.ID_FEATURES}
    batch[F.HOUR] = rng.integers(0, 24, n)
    batch.update({name: rng.normal(size=n).astype("float32") for name in F.NUMERIC_FEATURES})
    batch[F.TEXT_EMBEDDINGS] = rng.normal(size=(n, 30)).astype("float32")
    batch[F.PATCH_EMBEDDINGS] = rng.normal(size=(n, 32)).astype("float32")
    return batch


def with_other_requests(batch, seed):
    """The same listings asked by other shoppers, at other hours, from other distances."""
    rng = np.random.default_rng(seed)
    other = dict(batch)
    n = len(batch[F.HOUR])
    other[F.SHOPPER_ID] = rng.integers(0, 40, n)
    other[F.HOUR] = rng.integers(0, 24, n)
    other[F.DISTANCE_KM] = rng.normal(size=n).astype("float32")
    return other


def side(batch, names):
    return {name: tf.constant(value) for name, value in batch.items() if name in names}


@pytest.fixture(
    scope="module",
    params=[{}, {"num_experts": 0}, {"modalities": ["image"]}],
    ids=["camenn_tiny", "without_mixture", "image_only"],
)
def model(request):
    return CameNNMultiTask.from_preset("camenn_tiny", **DATA, **request.param, compile=False)


def test_listing_token_states_in_every_layer_do_not_depend_on_the_request(model):
    backbone = model.backbone
    batch = inputs(6, seed=0)
    states = []
    for version in (batch, with_other_requests(batch, seed=1)):
        x = ops.concatenate(
            [
                backbone.listing_tokens(side(version, F.LISTING_INPUTS)),
                backbone.request_tokens(side(version, F.REQUEST_INPUTS)),
            ],
            axis=1,
        )
        mask, _ = backbone.attention_masks(x)
        layers = []
        for layer in backbone.shared_layers:
            x = layer(x, attention_mask=mask)
            layers.append(x.numpy())
        states.append(layers)
    for first, second in zip(*states):
        listing = slice(0, backbone.listing_length)
        np.testing.assert_array_equal(first[:, listing], second[:, listing])  # the listing's tokens: unchanged
        assert not np.allclose(first[:, backbone.listing_length :], second[:, backbone.listing_length :])


def test_ita_and_tia_do_not_depend_on_the_request_and_cvr_does(model):
    batch = inputs(6, seed=2)
    first = model(batch, training=False)
    second = model(with_other_requests(batch, seed=3), training=False)
    for task in F.LISTING_TASKS:
        if task in first:
            np.testing.assert_array_equal(first[task].numpy(), second[task].numpy())
    assert not np.allclose(first[F.CVR].numpy(), second[F.CVR].numpy())


def test_a_request_scored_against_cached_listing_states_gets_the_full_models_scores(model):
    batch = inputs(9, seed=4)
    with routing_metrics_paused(model):
        full = model(batch, training=False)
        states = encode_listings(model, side(batch, F.LISTING_INPUTS))
        for seed in (5, 6):  # the same cached states serve other requests
            other = with_other_requests(batch, seed)
            expected = model(other, training=False)[F.CVR].numpy()
            np.testing.assert_allclose(
                score_requests(model, side(other, F.REQUEST_INPUTS), states).numpy(), expected, rtol=1e-5, atol=1e-6
            )
    for task in F.LISTING_TASKS:
        if task in full:
            np.testing.assert_allclose(states[task].numpy(), full[task].numpy(), rtol=1e-5, atol=1e-6)


def test_full_attention_has_no_listing_states():
    model = CameNNMultiTask.from_preset("camenn_tiny", **DATA, listing_only_attention=False, compile=False)
    batch = inputs(4, seed=7)
    first = model(batch, training=False)
    second = model(with_other_requests(batch, seed=8), training=False)
    assert not np.allclose(first[F.ITA].numpy(), second[F.ITA].numpy())  # the shopper reaches the alignment
    with pytest.raises(ValueError, match="listing_only_attention"):
        encode_listings(model, side(batch, F.LISTING_INPUTS))
