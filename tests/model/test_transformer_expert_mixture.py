"""TransformerExpertMixture: top-k gating, sparse dispatch, capacity overflow, auxiliary losses."""

import numpy as np
import pytest
import tensorflow as tf

from camenn.model.camenn import TransformerExpertMixture, load_balancing_loss, router_z_loss

TASKS = ("cvr", "ita", "tia")
HIDDEN = 8


def make_mixture(num_experts=4, top_k=2, **kwargs):
    mixture = TransformerExpertMixture(
        num_experts=num_experts, top_k=top_k, intermediate_dim=16, num_heads=2, task_names=TASKS, **kwargs
    )
    mixture.build((None, 5, HIDDEN))
    return mixture


def set_gate_biases(mixture, biases):
    """Zero gate kernels and fixed biases: every example gets the same logits, `biases`."""
    for gate in mixture.gates:
        gate.kernel.assign(np.zeros(gate.kernel.shape, "float32"))
        gate.bias.assign(np.asarray(biases, "float32"))


def sequence(batch_size, seed=0):
    return tf.constant(np.random.default_rng(seed).normal(size=(batch_size, 5, HIDDEN)), tf.float32)


@pytest.mark.parametrize("num_experts,top_k", [(4, 1), (4, 2), (8, 3)])
def test_each_task_keeps_exactly_k_gate_weights_summing_to_one(num_experts, top_k):
    mixture = make_mixture(num_experts, top_k)
    _, routing = mixture(sequence(16), training=True, return_routing=True)
    weights = routing["gate_weights"].numpy()
    assert weights.shape == (len(TASKS), 16, num_experts)
    np.testing.assert_array_equal((weights > 0).sum(axis=-1), top_k)
    np.testing.assert_allclose(weights.sum(axis=-1), 1.0, rtol=1e-6)
    # The kept experts are the gate's k most probable ones.
    probs = routing["gate_probs"].numpy()
    kept_min = np.where(weights > 0, probs, np.inf).min(axis=-1)
    dropped_max = np.where(weights > 0, -np.inf, probs).max(axis=-1)
    assert np.all(kept_min >= dropped_max)


def test_gradients_reach_only_the_experts_an_example_was_routed_to():
    mixture = make_mixture(num_experts=4, top_k=1, capacity_factor=4.0)
    x = sequence(6, seed=1)
    _, routing = mixture(x, training=True, return_routing=True)
    routed = (routing["gate_weights"].numpy() > 0).any(axis=0)  # [batch, experts], by any task
    assert routed.any(axis=0).sum() >= 2, "the test needs examples routed to different experts"
    for b in range(6):
        with tf.GradientTape() as tape:
            outputs = mixture(x, training=True)
            loss = sum(tf.reduce_sum(out[b] ** 2) for out in outputs)
        grads = tape.gradient(loss, [expert.trainable_variables for expert in mixture.experts])
        for e, expert_grads in enumerate(grads):
            norm = sum(float(tf.reduce_sum(tf.abs(g))) for g in expert_grads if g is not None)
            if routed[b, e]:
                assert norm > 0, f"example {b} was routed to expert {e} but gave it no gradient"
            else:
                assert norm == 0, f"example {b} was not routed to expert {e} but gave it gradient {norm}"


def test_a_batch_routed_away_from_an_expert_gives_it_zero_gradient():
    mixture = make_mixture(num_experts=4, top_k=2, capacity_factor=2.0)  # capacity 8: no overflow
    set_gate_biases(mixture, [0.0, 5.0, 5.0, 1.0])  # every task keeps experts 1 and 2
    with tf.GradientTape() as tape:
        outputs, routing = mixture(sequence(8), training=True, return_routing=True)
        loss = sum(tf.reduce_sum(out**2) for out in outputs)
    assert [int(tf.size(i)) for i in routing["expert_indices"]] == [0, 8, 8, 0]
    grads = tape.gradient(loss, [expert.trainable_variables for expert in mixture.experts])
    for e in (0, 3):
        assert all(g is None or not np.any(g.numpy()) for g in grads[e])
    for e in (1, 2):
        assert any(g is not None and np.any(g.numpy()) for g in grads[e])


def test_load_balancing_and_z_losses_equal_their_formulas_on_a_hand_computed_case():
    # One task, three examples, two experts, top-1: assignments e0, e0, e1.
    probs = tf.constant([[[0.9, 0.1], [0.6, 0.4], [0.3, 0.7]]])
    assignments = tf.constant([[[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]]])
    # f = (2/3, 1/3), p = (0.6, 0.4): 2 * (2/3 * 0.6 + 1/3 * 0.4) = 1.0666...
    np.testing.assert_allclose(load_balancing_loss(probs, assignments).numpy(), [2 * (0.4 + 0.4 / 3)], rtol=1e-6)
    logits = tf.constant([[[0.0, 0.0], [np.log(3.0), 0.0]]])
    # logsumexp: log 2 and log 4; mean of squares.
    np.testing.assert_allclose(router_z_loss(logits).numpy(), [(np.log(2) ** 2 + np.log(4) ** 2) / 2], rtol=1e-6)


def test_mixture_adds_the_weighted_auxiliary_losses_computed_from_its_gates():
    mixture = make_mixture(num_experts=3, top_k=2, load_balance_loss_weight=0.5, router_z_loss_weight=0.25)
    pooled = np.array([[1.0, -2.0, 0.0, 0.5, 0.0, 0.0, 0.0, 1.0], [0.0, 1.0, 2.0, -1.0, 0.5, 0.0, 0.0, 0.0]], "float32")
    rng = np.random.default_rng(3)
    for gate in mixture.gates:
        gate.kernel.assign(rng.normal(size=(HIDDEN, 3)).astype("float32"))
        gate.bias.assign(rng.normal(size=3).astype("float32"))
    # Constant tokens: the masked mean is `pooled`; at inference the router norm holds its initial
    # moving statistics (mean 0, variance 1), so it divides by sqrt(1 + epsilon).
    x = np.repeat(pooled[:, None, :], 5, axis=1)
    mixture(x, training=False)
    normalised = pooled / np.sqrt(1.0 + mixture.router_input_norm.epsilon)
    expected_lb, expected_z = [], []
    for gate in mixture.gates:
        logits = normalised @ gate.kernel.numpy() + gate.bias.numpy()
        probs = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
        top2 = np.argsort(-probs, axis=-1)[:, :2]
        assigned = np.zeros_like(probs)
        np.put_along_axis(assigned, top2, 1.0, axis=-1)
        f = assigned.sum(0) / assigned.sum()
        expected_lb.append(3 * np.sum(f * probs.mean(0)))
        expected_z.append(np.mean(np.log(np.exp(logits).sum(-1)) ** 2))
    expected = 0.5 * np.mean(expected_lb) + 0.25 * np.mean(expected_z)
    assert len(mixture.losses) == 1
    np.testing.assert_allclose(mixture.losses[0].numpy(), expected, rtol=1e-5)


def test_overflow_beyond_capacity_is_counted_and_passes_through_the_residual():
    mixture = make_mixture(num_experts=4, top_k=2, capacity_factor=1.0)
    set_gate_biases(mixture, [4.0, 3.0, 0.0, 0.0])  # all tasks pick experts 0 and 1
    x = sequence(8)
    outputs, routing = mixture(x, training=True, return_routing=True)
    # capacity = ceil(1.0 * 8 * 2 / 4) = 4 per expert: 16 routed pairs, 8 dropped.
    assert int(routing["capacity"]) == 4
    assert int(routing["routed"]) == 16 and int(routing["dropped"]) == 8
    ran = [set(i.numpy().tolist()) for i in routing["expert_indices"]]
    assert len(ran[0]) == len(ran[1]) == 4 and not ran[2] and not ran[3]
    for b in set(range(8)) - ran[0] - ran[1]:  # dropped by both of its experts: the input, unchanged
        for out in outputs:
            np.testing.assert_array_equal(out[b].numpy(), x[b].numpy())
    assert mixture.routing_metrics.result()["expert_overflow"].numpy() == pytest.approx(0.5)
    # At inference every routed example runs, whatever the batch.
    _, routing = mixture(x, training=False, return_routing=True)
    assert int(routing["dropped"]) == 0


def test_sparse_dispatch_matches_computing_every_expert_and_masking():
    sparse = make_mixture(num_experts=4, top_k=2)
    dense = TransformerExpertMixture.from_config({**sparse.get_config(), "dispatch": "dense"})
    dense.build((None, 5, HIDDEN))
    dense.set_weights(sparse.get_weights())
    x = sequence(16)
    for got, want in zip(sparse(x, training=False), dense(x, training=False)):
        np.testing.assert_allclose(got.numpy(), want.numpy(), atol=1e-5)


def test_routing_metrics_report_load_and_entropy_per_task():
    mixture = make_mixture(num_experts=4, top_k=2)
    mixture(sequence(16), training=True)
    result = {k: float(v) for k, v in mixture.routing_metrics.result().items()}
    for task in TASKS:
        loads = [result[f"{task}_expert_{e}_load"] for e in range(4)]
        assert sum(loads) == pytest.approx(1.0)
        assert 0.0 < result[f"{task}_gate_entropy"] <= np.log(4) + 1e-6
    mixture.routing_metrics.reset_state()
    assert float(mixture.routing_metrics.result()["cvr_expert_0_load"]) == 0.0


def test_config_round_trip():
    mixture = make_mixture(num_experts=4, top_k=2, capacity_factor=1.5, router_z_loss_weight=0.0)
    clone = TransformerExpertMixture.from_config(mixture.get_config())
    assert clone.get_config() == mixture.get_config()


def test_capacity_follows_the_routed_pairs_when_the_task_gates_route_apart():
    mixture = make_mixture(num_experts=4, top_k=2, capacity_factor=1.0)
    set_gate_biases(mixture, [4.0, 3.0, 0.0, 0.0])
    mixture.gates[1].bias.assign([0.0, 0.0, 4.0, 3.0])  # one task picks experts 2 and 3: every expert busy
    _, routing = mixture(sequence(8), training=True, return_routing=True)
    # 32 routed pairs (each example on all four experts) share the capacity: 8 per expert, none dropped.
    assert int(routing["routed"]) == 32 and int(routing["capacity"]) == 8 and int(routing["dropped"]) == 0
