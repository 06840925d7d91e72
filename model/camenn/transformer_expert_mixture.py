"""A mixture of transformer-encoder experts with one top-k softmax gate per task and sparse dispatch.

TensorFlow backend only: the dispatch gathers a data-dependent number of examples per expert, which is
cheap in TensorFlow's graph mode but not XLA-compilable, so the layer sets `supports_jit = False`.
"""

import contextlib

import keras
import keras_hub
import tensorflow as tf

from camenn.model import features

DISPATCH_MODES = ("sparse", "dense")


def load_balancing_loss(gate_probs, assignments):
    """Switch/GShard load-balancing loss, `E * sum_e f_e * p_e`, one value per task.

    Args:
        gate_probs: float tensor [num_tasks, batch, num_experts], each task's softmax gate.
        assignments: 0/1 tensor of the same shape, 1 where the expert is in the example's top-k.

    `f_e` is the fraction of the batch's `batch * k` assignments that go to expert e and `p_e` the mean
    gate probability of e. Both are uniform (and the loss is 1) when the load is balanced.
    """
    num_experts = tf.cast(tf.shape(gate_probs)[-1], gate_probs.dtype)
    assignments = tf.cast(assignments, gate_probs.dtype)
    fraction = tf.reduce_sum(assignments, axis=1) / tf.reduce_sum(assignments, axis=(1, 2))[:, None]
    mean_prob = tf.reduce_mean(gate_probs, axis=1)
    return num_experts * tf.reduce_sum(fraction * mean_prob, axis=-1)


def router_z_loss(gate_logits):
    """ST-MoE router z-loss, `mean_b logsumexp(logits_b)^2`, one value per task: keeps logits small."""
    return tf.reduce_mean(tf.square(tf.reduce_logsumexp(gate_logits, axis=-1)), axis=-1)


@keras.saving.register_keras_serializable(package="camenn")
class ExpertRoutingMetrics(keras.metrics.Metric):
    """Running routing statistics of one `TransformerExpertMixture`, reported as one dict of scalars.

    Keys: `{task}_expert_{e}_load` (fraction of the task's top-k assignments that went to expert e),
    `{task}_gate_entropy` (mean entropy of the task's softmax gate, in nats; log(E) is uniform) and
    `expert_overflow` (fraction of routed example-expert pairs dropped for capacity, which then passed
    through the residual instead).
    """

    def __init__(self, task_names, num_experts, name="expert_routing", **kwargs):
        super().__init__(name=name, **kwargs)
        self.task_names = tuple(task_names)
        self.num_experts = num_experts
        shape = (len(self.task_names), num_experts)
        self.load_sum = self.add_variable(shape, initializer="zeros", name="load_sum")
        self.entropy_sum = self.add_variable((len(self.task_names),), initializer="zeros", name="entropy_sum")
        self.steps = self.add_variable((), initializer="zeros", name="steps")
        self.dropped = self.add_variable((), initializer="zeros", name="dropped")
        self.routed = self.add_variable((), initializer="zeros", name="routed")

    def update_state(self, load, entropy, dropped, routed):
        self.load_sum.assign_add(tf.cast(load, self.dtype))
        self.entropy_sum.assign_add(tf.cast(entropy, self.dtype))
        self.steps.assign_add(1.0)
        self.dropped.assign_add(tf.cast(dropped, self.dtype))
        self.routed.assign_add(tf.cast(routed, self.dtype))

    def result(self):
        load = tf.math.divide_no_nan(self.load_sum, self.steps)
        entropy = tf.math.divide_no_nan(self.entropy_sum, self.steps)
        results = {}
        for t, task in enumerate(self.task_names):
            for e in range(self.num_experts):
                results[f"{task}_expert_{e}_load"] = load[t, e]
            results[f"{task}_gate_entropy"] = entropy[t]
        results["expert_overflow"] = tf.math.divide_no_nan(self.dropped, self.routed)
        return results

    def get_config(self):
        return {
            "task_names": list(self.task_names),
            "num_experts": self.num_experts,
            "name": self.name,
            "dtype": self.dtype,
        }


@keras.saving.register_keras_serializable(package="camenn")
class TransformerExpertMixture(keras.layers.Layer):
    """A mixture of transformer-encoder experts, gated per task (MMoE) and routed per example (top-k).

    Each task has a softmax gate over the `num_experts` experts, fed with the masked mean of the input
    sequence (over the tokens `router_mask` marks, default the unpadded ones) standardised per feature
    (batch normalisation without scale or offset: batch statistics in training, moving averages at
    inference), so that routing follows how examples differ. The gate
    keeps its `top_k` weights and renormalises them to sum to 1. Each expert is a
    `keras_hub.layers.TransformerEncoder`; task t's output for an example is
    `x + sum_e w_te * (expert_e(x) - x)`, the experts' residual updates mixed by that task's weights.

    Dispatch is truly sparse (`dispatch="sparse"`): an expert gathers only the examples that some task
    routed to it, runs on them, and its updates are scattered back, so compute grows with `top_k`, not
    with `num_experts`. Capacity is per expert, shared by the tasks (an expert runs once per example,
    whichever tasks chose it): in training each expert takes at most
    `ceil(capacity_factor * routed / num_experts)` examples, `routed` being the batch's (example, expert)
    pairs that some task chose (`batch * top_k` while the task gates agree, up to `num_tasks` times that
    when they route apart: a fixed `batch * top_k` share dropped a quarter of the pairs once CameNN's
    gates specialised), those with the largest summed gate weight first; the rest overflow, are counted,
    and pass through the residual for that expert. At inference every routed example is processed, so a
    score never depends on its batch neighbours. The task gates start equal, so that tasks route an
    example together (one expert run serving them all) until their losses pull them apart.
    `dispatch="dense"` runs every expert on every example and masks by the gate weights instead
    (no capacity; the baseline that `bench/moe.py` compares against, and XLA-compatible in principle).

    Auxiliary losses (added with `add_loss`, averaged over tasks): the Switch/GShard load-balancing
    loss weighted by `load_balance_loss_weight` and the router z-loss weighted by
    `router_z_loss_weight`. Routing statistics (per-task expert load, gate entropy, overflow) are kept
    in an `ExpertRoutingMetrics`, so they appear in `fit()` logs and TensorBoard.

    TensorFlow backend only (see the module docstring).

    Args:
        num_experts: int. Number of transformer-encoder experts E.
        top_k: int. Experts kept per example and task, 1 <= top_k <= num_experts.
        intermediate_dim: int. Feed-forward width of each expert.
        num_heads: int. Attention heads of each expert.
        task_names: sequence of str. One gate per task; outputs come in this order.
        capacity_factor: float. Training capacity per expert, as a multiple of its fair share.
        load_balance_loss_weight: float. Weight of the load-balancing loss (0 disables it).
        router_z_loss_weight: float. Weight of the router z-loss (0 disables it).
        dropout: float. Dropout of each expert (attention probabilities and residual branches).
        activation: str. Feed-forward activation of each expert.
        layer_norm_epsilon: float. Epsilon of the experts' layer normalisation.
        normalize_first: bool. Pre-layer-norm experts (True) or post-layer-norm (False).
        kernel_initializer: str or initializer, for experts and gates.
        dispatch: "sparse" (default) or "dense".
        **kwargs: base `keras.layers.Layer` arguments (`name`, `dtype`, ...).

    Call args:
        sequence: float tensor [batch, length, hidden_dim].
        padding_mask: optional bool/int tensor [batch, length]; 0/False marks padding.
        attention_mask: optional bool/int tensor [batch, length, length] for the experts' self-attention
            (CameNN's listing-only attention).
        router_mask: optional bool/int tensor [batch, length]: the tokens the gates pool (CameNN routes by
            the listing's tokens, so that routing is a property of the listing).
        training: bool.
        return_routing: bool. Also return a dict with `gate_logits`, `gate_probs`, `gate_weights`
            (each [num_tasks, batch, num_experts]), `expert_indices` (per expert, the batch indices it
            ran on), `capacity`, `routed` and `dropped` (example-expert pair counts).

    Returns:
        A list with one [batch, length, hidden_dim] tensor per task (and the routing dict if asked).

    Example:
    ```python
    import numpy as np

    mixture = TransformerExpertMixture(
        num_experts=4, top_k=2, intermediate_dim=64, num_heads=2, task_names=("cvr", "ita", "tia"))
    sequence = np.random.normal(size=(8, 10, 32)).astype("float32")
    cvr, ita, tia = mixture(sequence, training=True)
    assert cvr.shape == ita.shape == tia.shape == (8, 10, 32)

    outputs, routing = mixture(sequence, return_routing=True)  # inference: every routed example runs
    assert routing["gate_weights"].shape == (3, 8, 4) and int(routing["dropped"]) == 0
    ```
    """

    def __init__(
        self,
        num_experts,
        top_k,
        intermediate_dim,
        num_heads,
        task_names=features.TASKS,
        capacity_factor=1.25,
        load_balance_loss_weight=1e-2,
        router_z_loss_weight=1e-3,
        dropout=0.0,
        activation="gelu",
        layer_norm_epsilon=1e-6,
        normalize_first=True,
        kernel_initializer="glorot_uniform",
        dispatch="sparse",
        **kwargs,
    ):
        super().__init__(**kwargs)
        if not 1 <= top_k <= num_experts:
            raise ValueError(f"top_k must be in [1, num_experts={num_experts}], got {top_k}")
        if dispatch not in DISPATCH_MODES:
            raise ValueError(f"dispatch must be one of {DISPATCH_MODES}, got {dispatch!r}")
        if capacity_factor <= 0:
            raise ValueError(f"capacity_factor must be > 0, got {capacity_factor}")
        self.num_experts = num_experts
        self.top_k = top_k
        self.intermediate_dim = intermediate_dim
        self.num_heads = num_heads
        self.task_names = tuple(task_names)
        self.capacity_factor = capacity_factor
        self.load_balance_loss_weight = load_balance_loss_weight
        self.router_z_loss_weight = router_z_loss_weight
        self.dropout = dropout
        self.activation = activation
        self.layer_norm_epsilon = layer_norm_epsilon
        self.normalize_first = normalize_first
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.dispatch = dispatch
        # Not config: `export` turns it off so that serving graphs do not update training statistics.
        self.record_routing_metrics = True
        self.supports_jit = False
        self.routing_metrics = ExpertRoutingMetrics(self.task_names, num_experts, name=f"{self.name}_routing")
        self.experts = [
            keras_hub.layers.TransformerEncoder(
                intermediate_dim=intermediate_dim,
                num_heads=num_heads,
                dropout=dropout,
                activation=activation,
                layer_norm_epsilon=layer_norm_epsilon,
                normalize_first=normalize_first,
                kernel_initializer=self._clone_initializer(),
                dtype=self.dtype_policy,
                name=f"expert_{e}",
            )
            for e in range(num_experts)
        ]
        # Routers stay in float32 under mixed precision: softmax and top-k are sensitive to rounding.
        # What all examples share dominates the pooled vector (measured at initialisation: gate-logit
        # means differ across experts by ~1.5, per-example spread ~0.2, so every example picked the
        # same experts); standardising it per feature makes routing follow how examples differ. The
        # moving statistics must keep up with a changing input: with Keras' default momentum (0.99)
        # they lagged, and inference routed otherwise than training (held-out ITA AUC 0.75 against
        # 0.99 in training after 72 steps; 1.0 with 0.9).
        self.router_input_norm = keras.layers.BatchNormalization(
            momentum=0.9, center=False, scale=False, dtype="float32", name="router_input_norm"
        )
        self.gates = [
            keras.layers.Dense(
                num_experts, kernel_initializer=self._clone_initializer(), dtype="float32", name=f"{task}_gate"
            )
            for task in self.task_names
        ]

    def _clone_initializer(self):
        return keras.initializers.get(keras.initializers.serialize(self.kernel_initializer))

    def build(self, sequence_shape, padding_mask_shape=None, attention_mask_shape=None, router_mask_shape=None):
        for expert in self.experts:
            expert.build(sequence_shape)
        self.router_input_norm.build((sequence_shape[0], sequence_shape[-1]))
        for gate in self.gates:
            gate.build((sequence_shape[0], sequence_shape[-1]))
        # The task gates start equal, so that tasks route an example to the same experts (one run each)
        # until their losses pull them apart; random gates would disagree, and the union of their
        # choices would overflow the shared capacity.
        for gate in self.gates[1:]:
            gate.kernel.assign(self.gates[0].kernel)
        self.built = True

    def compute_output_shape(
        self, sequence_shape, padding_mask_shape=None, attention_mask_shape=None, router_mask_shape=None
    ):
        return [tuple(sequence_shape) for _ in self.task_names]

    def _route(self, sequence, mask, training):
        """Gates: [num_tasks, batch, num_experts] logits, probabilities and renormalised top-k weights."""
        mask_f = tf.cast(mask, tf.float32)[:, :, None]
        pooled = tf.reduce_sum(tf.cast(sequence, tf.float32) * mask_f, axis=1) / tf.maximum(
            tf.reduce_sum(mask_f, axis=1), 1.0
        )
        pooled = self.router_input_norm(pooled, training=training)
        logits = tf.stack([gate(pooled) for gate in self.gates])
        probs = tf.nn.softmax(logits, axis=-1)
        top_probs, top_experts = tf.math.top_k(probs, k=self.top_k)
        top_weights = top_probs / tf.reduce_sum(top_probs, axis=-1, keepdims=True)
        chosen = tf.one_hot(top_experts, self.num_experts, dtype=tf.float32)  # [tasks, batch, k, E]
        weights = tf.einsum("tbk,tbke->tbe", top_weights, chosen)
        assignments = tf.reduce_sum(chosen, axis=2)
        return logits, probs, weights, assignments

    def _capacity(self, batch_size, routed_pairs, training):
        """Examples each expert may take: `capacity_factor` times its fair share of the batch's routed
        (example, expert) pairs in training (when the task gates agree that is `batch * top_k`; when they
        disagree an example routes to more experts and capacity grows with it), every example at inference."""
        if not training:
            return batch_size
        fair_share = self.capacity_factor * tf.cast(routed_pairs, tf.float32) / self.num_experts
        return tf.minimum(tf.cast(tf.math.ceil(fair_share), tf.int32), batch_size)

    def _sparse_updates(self, sequence, mask, attention_mask, weights, assignments, training):
        """Runs each expert on the examples routed to it; returns per-task residual updates [B, L, H]."""
        batch_size = tf.shape(sequence)[0]
        routed = tf.transpose(tf.reduce_max(assignments, axis=0) > 0)  # [E, batch], by any task
        capacity = self._capacity(batch_size, tf.reduce_sum(tf.cast(routed, tf.int32)), training)
        priority = tf.transpose(tf.reduce_sum(weights, axis=0))  # [E, batch]
        indices, updates, routed_count, kept_count = [], [], 0, 0
        for e, expert in enumerate(self.experts):
            count = tf.reduce_sum(tf.cast(routed[e], tf.int32))
            kept = tf.minimum(count, capacity)
            order = tf.math.top_k(tf.where(routed[e], priority[e], -1.0), k=capacity).indices
            batch_indices = order[:kept]
            x = tf.gather(sequence, batch_indices)
            y = expert(
                x,
                padding_mask=tf.gather(mask, batch_indices),
                attention_mask=None if attention_mask is None else tf.gather(attention_mask, batch_indices),
                training=training,
            )
            indices.append(batch_indices)
            updates.append(y - x)
            routed_count += count
            kept_count += kept
        all_indices = tf.concat(indices, axis=0)
        all_updates = tf.concat(updates, axis=0)
        # weights[t, b, e] for each (e, b) pair that ran, in the same order as all_indices.
        pair_weights = tf.concat([tf.gather(weights[:, :, e], idx, axis=1) for e, idx in enumerate(indices)], axis=1)
        pair_weights = tf.cast(pair_weights, all_updates.dtype)
        task_updates = [
            tf.math.unsorted_segment_sum(pair_weights[t][:, None, None] * all_updates, all_indices, batch_size)
            for t in range(len(self.task_names))
        ]
        return task_updates, indices, capacity, routed_count, routed_count - kept_count

    def _dense_updates(self, sequence, mask, attention_mask, weights, assignments, training):
        """Runs every expert on every example and masks by the gate weights (no capacity)."""
        weights = tf.cast(weights, sequence.dtype)
        task_updates = [tf.zeros_like(sequence) for _ in self.task_names]
        for e, expert in enumerate(self.experts):
            update = expert(sequence, padding_mask=mask, attention_mask=attention_mask, training=training) - sequence
            for t in range(len(self.task_names)):
                task_updates[t] += weights[t, :, e][:, None, None] * update
        batch_size = tf.shape(sequence)[0]
        indices = [tf.range(batch_size) for _ in self.experts]
        routed = tf.reduce_sum(tf.cast(tf.reduce_max(assignments, axis=0) > 0, tf.int32))
        return task_updates, indices, batch_size, routed, 0

    def call(
        self, sequence, padding_mask=None, attention_mask=None, router_mask=None, training=None, return_routing=False
    ):
        if padding_mask is None:
            mask = tf.ones(tf.shape(sequence)[:2], dtype=tf.bool)
        else:
            mask = tf.cast(padding_mask, tf.bool)
        pooled_mask = mask if router_mask is None else mask & tf.cast(router_mask, tf.bool)
        logits, probs, weights, assignments = self._route(sequence, pooled_mask, training)

        dispatch = self._sparse_updates if self.dispatch == "sparse" else self._dense_updates
        task_updates, indices, capacity, routed, dropped = dispatch(
            sequence, mask, attention_mask, weights, assignments, training
        )
        outputs = [sequence + update for update in task_updates]

        aux_loss = 0.0
        if self.load_balance_loss_weight:
            aux_loss += self.load_balance_loss_weight * tf.reduce_mean(load_balancing_loss(probs, assignments))
        if self.router_z_loss_weight:
            aux_loss += self.router_z_loss_weight * tf.reduce_mean(router_z_loss(logits))
        if self.load_balance_loss_weight or self.router_z_loss_weight:
            self.add_loss(aux_loss)

        if self.record_routing_metrics:
            load = tf.reduce_mean(assignments, axis=1) / self.top_k
            entropy = -tf.reduce_mean(tf.reduce_sum(tf.math.xlogy(probs, probs), axis=-1), axis=-1)
            self.routing_metrics.update_state(load, entropy, dropped, routed)

        if return_routing:
            return outputs, {
                "gate_logits": logits,
                "gate_probs": probs,
                "gate_weights": weights,
                "expert_indices": indices,
                "capacity": capacity,
                "routed": routed,
                "dropped": dropped,
            }
        return outputs

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "num_experts": self.num_experts,
                "top_k": self.top_k,
                "intermediate_dim": self.intermediate_dim,
                "num_heads": self.num_heads,
                "task_names": list(self.task_names),
                "capacity_factor": self.capacity_factor,
                "load_balance_loss_weight": self.load_balance_loss_weight,
                "router_z_loss_weight": self.router_z_loss_weight,
                "dropout": self.dropout,
                "activation": self.activation,
                "layer_norm_epsilon": self.layer_norm_epsilon,
                "normalize_first": self.normalize_first,
                "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
                "dispatch": self.dispatch,
            }
        )
        return config


@contextlib.contextmanager
def routing_metrics_paused(model):
    """Within this block, the model's mixtures do not update their routing statistics (for export)."""
    mixtures = [layer for layer in model._flatten_layers() if isinstance(layer, TransformerExpertMixture)]
    previous = [m.record_routing_metrics for m in mixtures]
    for m in mixtures:
        m.record_routing_metrics = False
    try:
        yield
    finally:
        for m, value in zip(mixtures, previous):
            m.record_routing_metrics = value
