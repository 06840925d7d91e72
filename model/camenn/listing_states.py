"""Serving CameNN with the listing's work done once: listing states and request scoring.

With `listing_only_attention`, everything CameNN computes from a listing alone (its tokens' states in
every layer, the experts its routing picks, its ITA and TIA scores) is the same for every shopper and
context. `encode_listings` computes it once per listing and model version: for every layer the CVR
path runs, the keys and values the request's tokens attend to. `score_requests` then runs only the
request's few tokens (the CVR task token, shopper, hour, distance) through the same layers, attending to
those cached keys and values: the same CVR as the full model (`tests/model/test_listing_states.py`
checks it), at a fraction of the cost. `camenn.model.listing_table.ListingTable` holds the rows by item
id inside the SavedModel (`export.py`), so a ranking request names its candidates and the server looks
them up.

Both functions reuse the backbone's own layers and sublayers (keras-hub's `TransformerEncoder`, CameNN's
`TaskTower`, which name their sublayers alike), so there is one set of weights and one definition of
each layer.
"""

import math

import tensorflow as tf


def _keys_values(layer, sequence):
    """The keys [batch, heads, head_dim, length] and values [batch, heads, length, head_dim] `layer`'s
    self-attention computes for `sequence`, laid out for `tf.matmul` (so a request multiplies them as they
    are stored, with no transpose)."""
    normed = layer._self_attention_layer_norm(sequence)
    attention = layer._self_attention_layer
    return (
        tf.transpose(attention._key_dense(normed), (0, 2, 3, 1)),
        tf.transpose(attention._value_dense(normed), (0, 2, 1, 3)),
    )


def _attend(attention, normed_queries, normed_request, listing_keys, listing_values):
    """Multi-head attention of `normed_queries` [B, Q, H] over the listing's cached keys and values and the
    request's own tokens `normed_request` [B, R, H], as `keras.layers.MultiHeadAttention` computes it (no
    mask: request tokens attend to every token). The softmax spans both parts; they are never concatenated."""
    heads = lambda x: tf.transpose(x, (0, 2, 1, 3))  # noqa: E731  [B, T, h, d] -> [B, h, T, d]
    query = heads(attention._query_dense(normed_queries)) * (1.0 / math.sqrt(float(attention._key_dim)))
    own_keys, own_values = heads(attention._key_dense(normed_request)), heads(attention._value_dense(normed_request))
    listing_scores = tf.matmul(query, listing_keys)  # [B, h, Q, L]
    scores = tf.concat([listing_scores, tf.matmul(query, own_keys, transpose_b=True)], axis=-1)
    probabilities = tf.nn.softmax(scores, axis=-1)
    length = tf.shape(listing_scores)[-1]
    context = tf.matmul(probabilities[..., :length], listing_values) + tf.matmul(
        probabilities[..., length:], own_values
    )  # [B, h, Q, d]
    return attention._output_dense(tf.transpose(context, (0, 2, 1, 3)))


def _feedforward(layer, x):
    return layer._feedforward_output_dense(layer._feedforward_intermediate_dense(layer._feedforward_layer_norm(x)))


def _request_layer(layer, tokens, listing_keys, listing_values):
    """A pre-layer-norm transformer layer run on the request's tokens only: they attend to the listing's
    cached keys and values and to each other."""
    normed = layer._self_attention_layer_norm(tokens)
    x = tokens + _attend(layer._self_attention_layer, normed, normed, listing_keys, listing_values)
    return x + _feedforward(layer, x)


def _request_tower(tower, tokens, query_index, listing_keys, listing_values):
    """A `TaskTower` read out at request token `query_index`, over the listing's cached keys and values."""
    normed = tower._self_attention_layer_norm(tokens)
    x = tokens[:, query_index : query_index + 1]
    x = x + _attend(
        tower._self_attention_layer, normed[:, query_index : query_index + 1], normed, listing_keys, listing_values
    )
    x = x + _feedforward(tower, x)
    return x[:, 0]


def _check_listing_only(model):
    backbone = model.backbone
    if not backbone.listing_only_attention:
        raise ValueError(
            "listing states need a backbone with listing_only_attention=True: with full attention "
            "every listing token depends on the shopper"
        )
    if len(backbone.request_tasks) > 1:
        raise ValueError(f"one request task is supported, got {backbone.request_tasks}")
    return backbone


def encode_listings(model, inputs):
    """Everything a `CameNNMultiTask` computes from listings alone, one row per listing.

    Args:
        model: a `CameNNMultiTask` whose backbone has `listing_only_attention=True`.
        inputs: the listing side of the model inputs (`features.LISTING_INPUTS` the model takes), [N, ...].

    Returns:
        dict of float32 [N, ...] tensors (int32 for expert ids): each listing task's score (`ita`,
        `tia`); and for the request task (CVR), the keys [N, heads, head_dim, length] and values [N, heads,
        length, head_dim] of the listing's tokens in every shared layer (`shared_{l}_keys`,
        `shared_{l}_values`), its top-k experts and their weights (`experts`, `expert_weights`) with those
        experts' keys and values (`expert_keys`, `expert_values`, [N, k, ...]), and its tower's
        (`tower_keys`, `tower_values`).
    """
    backbone = _check_listing_only(model)
    x = backbone.listing_tokens(inputs, training=False)
    states = {}
    for index, layer in enumerate(backbone.shared_layers):
        states[f"shared_{index}_keys"], states[f"shared_{index}_values"] = _keys_values(layer, x)
        x = layer(x, training=False)
    mixture = backbone.expert_mixture
    if mixture is None:
        mixed = [x] * len(backbone.task_names)
    else:
        mixed, routing = mixture(x, training=False, return_routing=True)
    for t, task in enumerate(backbone.task_names):
        if task in backbone.listing_tasks:
            pooled = backbone.tower_layer_norms[t](backbone.task_towers[t](mixed[t], training=False))
            states[task] = tf.cast(tf.squeeze(model.heads[t](pooled), axis=-1), tf.float32)
            continue
        if mixture is not None:
            weights, experts = tf.math.top_k(routing["gate_weights"][t], k=mixture.top_k)
            per_expert = [_keys_values(expert, x) for expert in mixture.experts]  # E x [N, L, h, d]
            chosen = tf.stack(
                [experts, tf.broadcast_to(tf.range(tf.shape(experts)[0])[:, None], tf.shape(experts))], axis=-1
            )  # [N, k, 2]
            states["experts"] = experts
            states["expert_weights"] = weights
            states["expert_keys"] = tf.gather_nd(tf.stack([k for k, _ in per_expert]), chosen)
            states["expert_values"] = tf.gather_nd(tf.stack([v for _, v in per_expert]), chosen)
        states["tower_keys"], states["tower_values"] = _keys_values(backbone.task_towers[t], mixed[t])
    return states


def score_requests(model, inputs, states):
    """The request task's score (CVR) for requests against listing rows of `encode_listings`.

    Args:
        model: the `CameNNMultiTask` that encoded the listings.
        inputs: the request side of the model inputs (`features.REQUEST_INPUTS`), [B].
        states: `encode_listings` rows for each request's listing, [B, ...].

    Returns:
        float32 [B]: the same probability the full model gives for that listing and request.
    """
    backbone = _check_listing_only(model)
    (task,) = backbone.request_tasks
    t = backbone.task_names.index(task)
    tokens = backbone.request_tokens(inputs, training=False)
    for index, layer in enumerate(backbone.shared_layers):
        tokens = _request_layer(layer, tokens, states[f"shared_{index}_keys"], states[f"shared_{index}_values"])
    mixture = backbone.expert_mixture
    if mixture is not None:
        batch_size = tf.shape(tokens)[0]
        top_k = mixture.top_k
        # One (request, expert) pair per chosen expert, run expert by expert on the pairs routed to it.
        pair_expert = tf.reshape(states["experts"], [-1])
        pair_row = tf.repeat(tf.range(batch_size), top_k)
        pair_weight = tf.cast(tf.reshape(states["expert_weights"], [-1]), tokens.dtype)
        pair_keys = tf.reshape(states["expert_keys"], tf.concat([[-1], tf.shape(states["expert_keys"])[2:]], 0))
        pair_values = tf.reshape(states["expert_values"], tf.concat([[-1], tf.shape(states["expert_values"])[2:]], 0))
        rows, updates = [], []
        for e, expert in enumerate(mixture.experts):
            pairs = tf.where(tf.equal(pair_expert, e))[:, 0]
            row = tf.gather(pair_row, pairs)
            x = tf.gather(tokens, row)
            y = _request_layer(expert, x, tf.gather(pair_keys, pairs), tf.gather(pair_values, pairs))
            rows.append(row)
            updates.append(tf.gather(pair_weight, pairs)[:, None, None] * (y - x))
        tokens = tokens + tf.math.unsorted_segment_sum(tf.concat(updates, 0), tf.concat(rows, 0), batch_size)
    query_index = backbone.task_token_index[task] - backbone.listing_length
    pooled = _request_tower(backbone.task_towers[t], tokens, query_index, states["tower_keys"], states["tower_values"])
    pooled = backbone.tower_layer_norms[t](pooled)
    return tf.cast(tf.squeeze(model.heads[t](pooled), axis=-1), tf.float32)
