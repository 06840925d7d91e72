"""CameNN's backbone: every input becomes a token, a shared transformer, a mixture of transformer
experts gated per task, and one transformer tower per task.

TensorFlow backend only (the mixture's sparse dispatch; see `transformer_expert_mixture`).
"""

import keras
import keras_hub
from keras import ops

from camenn.model import features
from camenn.model.camenn.camenn_layers import (
    ModalityEmbedding,
    NumericFeatureEmbedding,
    SideAttentionMask,
    TaskTokens,
    TaskTower,
    UniqueRows,
)
from camenn.model.camenn.camenn_presets import backbone_presets
from camenn.model.camenn.transformer_expert_mixture import TransformerExpertMixture
from camenn.model.text_encoders import segment_mean_pool

# Settings a preset cannot know: the data decides them (Transform's vocabularies, preprocessing's
# summary.json). An end-to-end encoder decides its own modality's.
DATA_ARGUMENTS = ("vocabulary_sizes", "num_patches", "patch_dim", "num_text_tokens", "text_dim")
# The listing's modalities a backbone may read (the ablations drop one).
MODALITIES = ("text", "image")

# Which side of a ranking request each non-text, non-image input is on.
LISTING_ID_FEATURES = tuple(name for name in features.ID_FEATURES if name in features.LISTING_INPUTS)
REQUEST_ID_FEATURES = tuple(name for name in features.ID_FEATURES if name in features.REQUEST_INPUTS)
LISTING_NUMERIC_FEATURES = tuple(name for name in features.NUMERIC_FEATURES if name in features.LISTING_INPUTS)
REQUEST_NUMERIC_FEATURES = tuple(name for name in features.NUMERIC_FEATURES if name in features.REQUEST_INPUTS)
REQUEST_INTEGER_FEATURES = tuple(name for name in features.INTEGER_FEATURES if name in features.REQUEST_INPUTS)


def load_text_encoder(preset, load_weights=True, dtype=None):
    """A `keras_hub.models.BertBackbone` from a `camenn.model.bert` preset name or a preset folder."""
    from camenn.model import bert

    folder = bert.preset_dir(preset) if preset in bert.PRESETS else preset
    return keras_hub.models.BertBackbone.from_preset(folder, load_weights=load_weights, dtype=dtype)


class ConfigPresets:
    """`from_preset` for backbone families whose presets are named configurations (`preset_configs`:
    name -> {"config": the arguments, and "text_encoder": a `camenn.model.bert` preset for an end-to-end
    text encoder}), the data's arguments (`DATA_ARGUMENTS`) given at build time; its `from_config`
    rebuilds the encoders a config holds. Put it before `keras_hub.models.Backbone` in the bases.
    """

    preset_configs = {}

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        for name in ("text_encoder", "image_encoder"):
            if isinstance(config.get(name), dict):
                config[name] = keras.layers.deserialize(config[name])
        return cls(**config)

    @classmethod
    def from_preset(cls, preset, load_weights=True, **kwargs):
        """Builds a named preset of the family (`preset_configs`), or loads a preset folder.

        For a preset name, `kwargs` override the preset's configuration and must include what the data
        decides (`DATA_ARGUMENTS`: `vocabulary_sizes`, and unless an end-to-end encoder takes the
        modality, `num_text_tokens` and `text_dim`, `num_patches` and `patch_dim`). `load_weights` loads
        an end-to-end text encoder's pre-trained weights; everything else starts random. Anything else
        (a folder written by `save_to_preset`) goes to keras-hub's loader.

        Example:
        ```python
        from camenn.model import features

        backbone = CameNNBackbone.from_preset(
            "camenn_small", vocabulary_sizes={name: 1000 for name in features.ID_FEATURES}, num_text_tokens=4,
            text_dim=384, num_patches=4, patch_dim=1280, dropout=0.2)
        assert backbone.hidden_dim == 128 and backbone.dropout == 0.2  # the preset's width, the override

        backbone.save_to_preset("outputs/my_camenn")  # a folder: keras-hub's loader, weights included
        reloaded = CameNNBackbone.from_preset("outputs/my_camenn")
        assert reloaded.count_params() == backbone.count_params()
        ```
        """
        if preset not in cls.preset_configs:
            return super().from_preset(preset, load_weights=load_weights, **kwargs)
        config = {**cls.preset_configs[preset]["config"], **kwargs}
        text_preset = cls.preset_configs[preset].get("text_encoder")
        if text_preset and "text_encoder" not in config:
            config["text_encoder"] = load_text_encoder(
                text_preset, load_weights=load_weights, dtype=config.get("dtype")
            )
        needed = ["vocabulary_sizes"]
        if config.get("text_encoder") is None:
            needed += ["num_text_tokens", "text_dim"]
        if config.get("image_encoder") is None:
            needed += ["num_patches", "patch_dim"]
        missing = [name for name in needed if name not in config]
        if missing:
            raise ValueError(
                f"{preset} needs {missing}: the data decides them (vocabulary sizes from "
                "Transform, the text and image encodings' shapes from `camenn preprocess`'s "
                "summary.json)"
            )
        if config.get("image_encoder") is not None:
            config.setdefault("num_patches", config["image_encoder"].num_patches)
            config.setdefault("patch_dim", config["image_encoder"].output_dim)
        if config.get("text_encoder") is not None:
            config.setdefault("text_dim", config["text_encoder"].hidden_dim)
        return cls(**config)


@keras.saving.register_keras_serializable(package="camenn")
class CameNNBackbone(ConfigPresets, keras_hub.models.Backbone):
    """CameNN's backbone, from model inputs to one pooled vector per task.

    Every input becomes a token of width `hidden_dim`. The tokens that depend only on the listing come
    first: one learned token per listing task (ITA, TIA), the text's `num_text_tokens` tokens (the
    cached pooled text encoding, projected, plus a position embedding; or end to end, the
    `text_encoder`'s token states pooled the same way), one token per image patch (the cached patch
    embeddings, or end to end the `image_encoder`'s, projected, plus a patch-position embedding), and
    one per listing id (item, merchant, category, coarse category) and number (price, a small MLP).
    Then the request's tokens: one per request task (CVR), the shopper id, the hour (24 values) and the
    distance. A modality embedding (task, text, image, listing or request features) is added, then
    layer normalisation and dropout.

    Then `num_shared_layers` transformer encoder layers (the shared bottom), a
    `TransformerExpertMixture` with one gate per task, and per task a `TaskTower` read out at the task's
    token, with a final layer norm.

    With `listing_only_attention` (the default), listing tokens attend only to listing tokens while the
    request's tokens attend to everything (`SideAttentionMask`), and the gates route by the listing's
    tokens: every listing token's state in every layer, the routing, and the ITA and TIA outputs depend
    on the listing alone, so serving computes them once per listing and model version and a request
    runs only its own few tokens (`camenn.model.camenn.listing_states`). Without it, every token attends
    to every token (the alternative the README's serving figures compare against).

    Args:
        vocabulary_sizes: dict from each of `features.ID_FEATURES` to its vocabulary size (OOV buckets
            included), as Transform made it.
        num_patches: int. Image patches per listing (the `image_encoder`'s when there is one).
        patch_dim: int. Width of each cached patch embedding (the `image_encoder`'s when there is one).
        hidden_dim: int. Width of every token.
        num_heads: int. Attention heads of every transformer layer.
        intermediate_dim: int. Feed-forward width of every transformer layer.
        num_shared_layers: int. Transformer layers of the shared bottom.
        num_experts: int. Experts in the mixture; 0 drops the mixture (an ablation: each task's tower
            reads the shared bottom directly).
        top_k: int. Experts each task keeps per example.
        num_text_tokens: int. Pooled tokens per listing text.
        text_dim: int. Width of each cached text token (the `text_encoder`'s when there is one).
        text_encoder: None (default: the model takes `features.TEXT_EMBEDDINGS`, cached by `camenn
            preprocess`), or the end-to-end mode: a `keras_hub.models.BertBackbone` (see
            `load_text_encoder`); the model then takes `features.TEXT_TOKEN_IDS` and fine-tunes it unless
            `freeze_text_encoder`.
        freeze_text_encoder: bool. Keep an end-to-end text encoder's weights fixed.
        max_text_length: int. Token ids per listing text (end-to-end text only).
        image_encoder: None (default: the model takes cached `features.PATCH_EMBEDDINGS`), or the
            end-to-end mode: a `camenn.model.patch_embedding.PatchEmbedding`, and the model takes
            `features.IMAGE` (uint8 pixels [batch, H, W, 3]) and trains the encoder with the rest.
        freeze_image_encoder: bool. Keep the image encoder's weights fixed (inference mode).
        listing_only_attention: bool. See above.
        capacity_factor: float. Training capacity of each expert (see `TransformerExpertMixture`).
        load_balance_loss_weight: float. Weight of the mixture's load-balancing loss.
        router_z_loss_weight: float. Weight of the mixture's router z-loss.
        dropout: float. Dropout on the embeddings and in every transformer layer (attention
            probabilities and residual branches).
        task_names: sequence of str. The tasks, each with a gate, a token, a tower and an output;
            `features.LISTING_TASKS` are listing tasks, the others request tasks. A backbone with no
            request task takes no request input.
        modalities: sequence of "text" and/or "image". The listing modalities the model reads (an
            ablation drops one: its input is then not taken).
        layer_norm_epsilon: float.
        dtype: str or `keras.DTypePolicy`, e.g. "mixed_bfloat16".
        **kwargs: base `keras_hub.models.Backbone` arguments (`name`, `trainable`).

    Example:
    ```python
    import numpy as np
    from camenn.model import features
    from camenn.model.camenn import CameNNBackbone

    backbone = CameNNBackbone.from_preset(
        "camenn_tiny",
        vocabulary_sizes={name: 50 for name in features.ID_FEATURES},
        num_text_tokens=4,
        text_dim=16,
        num_patches=4,
        patch_dim=16,
    )
    batch = {name: np.zeros((2,), "int64") for name in features.ID_FEATURES}
    batch[features.HOUR] = np.array([8, 20])
    batch.update({name: np.zeros((2,), "float32") for name in features.NUMERIC_FEATURES})
    batch[features.TEXT_EMBEDDINGS] = np.random.normal(size=(2, 4 * 16)).astype("float32")
    batch[features.PATCH_EMBEDDINGS] = np.random.normal(size=(2, 4 * 16)).astype("float32")
    pooled = backbone(batch)
    assert {task: vector.shape for task, vector in pooled.items()} == {"cvr": (2, 32), "ita": (2, 32), "tia": (2, 32)}
    ```
    """

    preset_configs = backbone_presets

    def __init__(
        self,
        vocabulary_sizes,
        num_patches,
        patch_dim,
        hidden_dim,
        num_heads,
        intermediate_dim,
        num_shared_layers,
        num_experts,
        top_k,
        num_text_tokens,
        text_dim,
        text_encoder=None,
        freeze_text_encoder=False,
        max_text_length=64,
        image_encoder=None,
        freeze_image_encoder=False,
        listing_only_attention=True,
        capacity_factor=1.25,
        load_balance_loss_weight=1e-2,
        router_z_loss_weight=1e-3,
        dropout=0.1,
        task_names=features.TASKS,
        modalities=MODALITIES,
        layer_norm_epsilon=1e-6,
        dtype=None,
        **kwargs,
    ):
        missing = sorted(set(features.ID_FEATURES) - set(vocabulary_sizes))
        if missing:
            raise ValueError(f"vocabulary_sizes lacks {missing}: give a size for each of {features.ID_FEATURES}")
        task_names = tuple(task_names)
        modalities = tuple(modalities)
        if not modalities or set(modalities) - set(MODALITIES):
            raise ValueError(f"modalities must be a non-empty subset of {MODALITIES}, got {modalities}")
        use_text, use_image = "text" in modalities, "image" in modalities
        if text_encoder is not None:
            if max_text_length > text_encoder.max_sequence_length:
                raise ValueError(
                    f"max_text_length={max_text_length} exceeds the text encoder's "
                    f"{text_encoder.max_sequence_length} positions"
                )
            if text_dim != text_encoder.hidden_dim:
                raise ValueError(f"text_dim={text_dim} disagrees with the text encoder's {text_encoder.hidden_dim}")
        if image_encoder is not None and (num_patches, patch_dim) != (
            image_encoder.num_patches,
            image_encoder.output_dim,
        ):
            raise ValueError(
                f"num_patches={num_patches}, patch_dim={patch_dim} disagree with the image encoder's "
                f"{image_encoder.num_patches} patches of {image_encoder.output_dim}"
            )
        listing_tasks = tuple(t for t in task_names if t in features.LISTING_TASKS)
        request_tasks = tuple(t for t in task_names if t not in features.LISTING_TASKS)
        transformer_args = dict(
            intermediate_dim=intermediate_dim,
            num_heads=num_heads,
            dropout=dropout,
            activation="gelu",
            layer_norm_epsilon=layer_norm_epsilon,
            dtype=dtype,
        )

        # === Layers ===
        self.text_encoder = text_encoder
        if text_encoder is not None:
            self.text_encoder.trainable = use_text and not freeze_text_encoder
            # CameNN reads BERT's token states, not its pooled [CLS] output.
            self.text_encoder.get_layer("pooled_dense").trainable = False
            self.unique_texts = UniqueRows(name="unique_texts")
        self.image_encoder = image_encoder
        if image_encoder is not None:
            self.image_encoder.trainable = not freeze_image_encoder
        self.text_projection = keras.layers.Dense(hidden_dim, dtype=dtype, name="text_projection")
        self.text_position_embedding = keras_hub.layers.PositionEmbedding(
            sequence_length=num_text_tokens, dtype=dtype, name="text_position_embedding"
        )
        self.patch_projection = keras.layers.Dense(hidden_dim, dtype=dtype, name="patch_projection")
        self.patch_position_embedding = keras_hub.layers.PositionEmbedding(
            sequence_length=num_patches, dtype=dtype, name="patch_position_embedding"
        )
        id_features = LISTING_ID_FEATURES + (REQUEST_ID_FEATURES if request_tasks else ())
        self.id_embeddings = {
            name: keras.layers.Embedding(int(vocabulary_sizes[name]), hidden_dim, dtype=dtype, name=f"{name}_embedding")
            for name in id_features
        }
        self.listing_numeric_embedding = NumericFeatureEmbedding(
            hidden_dim, dtype=dtype, name="listing_numeric_embedding"
        )
        self.task_tokens = TaskTokens(len(task_names), hidden_dim, dtype=dtype, name="task_tokens")
        listing_segments = [
            len(listing_tasks),
            num_text_tokens * use_text,
            num_patches * use_image,
            len(LISTING_ID_FEATURES) + len(LISTING_NUMERIC_FEATURES),
        ]
        self.listing_modality_embedding = ModalityEmbedding(
            listing_segments, dtype=dtype, name="listing_modality_embedding"
        )
        request_segments = []
        if request_tasks:  # an alignment-only model takes no request input
            self.integer_embeddings = {
                name: keras.layers.Embedding(
                    features.INTEGER_FEATURES[name], hidden_dim, dtype=dtype, name=f"{name}_embedding"
                )
                for name in REQUEST_INTEGER_FEATURES
            }
            self.request_numeric_embedding = NumericFeatureEmbedding(
                hidden_dim, dtype=dtype, name="request_numeric_embedding"
            )
            request_segments = [
                len(request_tasks),
                len(REQUEST_ID_FEATURES) + len(REQUEST_INTEGER_FEATURES) + len(REQUEST_NUMERIC_FEATURES),
            ]
            self.request_modality_embedding = ModalityEmbedding(
                request_segments, dtype=dtype, name="request_modality_embedding"
            )
        self.embeddings_layer_norm = keras.layers.LayerNormalization(
            epsilon=layer_norm_epsilon, dtype=dtype, name="embeddings_layer_norm"
        )
        self.embeddings_dropout = keras.layers.Dropout(dropout, dtype=dtype, name="embeddings_dropout")
        self.listing_length = sum(listing_segments)
        self.request_length = sum(request_segments)
        self.attention_masks = SideAttentionMask(
            self.listing_length, self.request_length, listing_only_attention, dtype=dtype, name="attention_masks"
        )
        self.shared_layers = [
            keras_hub.layers.TransformerEncoder(**transformer_args, normalize_first=True, name=f"shared_layer_{i}")
            for i in range(num_shared_layers)
        ]
        self.expert_mixture = (
            None
            if num_experts == 0
            else TransformerExpertMixture(
                num_experts=num_experts,
                top_k=top_k,
                task_names=task_names,
                capacity_factor=capacity_factor,
                load_balance_loss_weight=load_balance_loss_weight,
                router_z_loss_weight=router_z_loss_weight,
                normalize_first=True,
                **transformer_args,
                name="expert_mixture",
            )
        )
        # Each task's token: listing tasks first in the listing segment, request tasks first in the request's.
        self.task_token_index = {
            task: listing_tasks.index(task)
            if task in listing_tasks
            else self.listing_length + request_tasks.index(task)
            for task in task_names
        }
        self.task_towers = [
            TaskTower(self.task_token_index[task], **transformer_args, name=f"{task}_tower") for task in task_names
        ]
        self.tower_layer_norms = [
            keras.layers.LayerNormalization(epsilon=layer_norm_epsilon, dtype=dtype, name=f"{task}_tower_layer_norm")
            for task in task_names
        ]

        # === Config === (before the graph: the token builders below read it)
        self.vocabulary_sizes = {name: int(vocabulary_sizes[name]) for name in features.ID_FEATURES}
        self.num_patches = num_patches
        self.patch_dim = patch_dim
        self.hidden_dim = hidden_dim
        self.num_heads = num_heads
        self.intermediate_dim = intermediate_dim
        self.num_shared_layers = num_shared_layers
        self.num_experts = num_experts
        self.top_k = top_k
        self.num_text_tokens = num_text_tokens
        self.text_dim = text_dim
        self.freeze_text_encoder = freeze_text_encoder
        self.max_text_length = max_text_length
        self.freeze_image_encoder = freeze_image_encoder
        self.listing_only_attention = listing_only_attention
        self.capacity_factor = capacity_factor
        self.load_balance_loss_weight = load_balance_loss_weight
        self.router_z_loss_weight = router_z_loss_weight
        self.dropout = dropout
        self.task_names = task_names
        self.listing_tasks = listing_tasks
        self.request_tasks = request_tasks
        self.modalities = modalities
        self.layer_norm_epsilon = layer_norm_epsilon

        # === Functional Model ===
        inputs = {name: keras.Input(shape=(), dtype="int64", name=name) for name in LISTING_ID_FEATURES}
        inputs.update({name: keras.Input(shape=(), dtype="float32", name=name) for name in LISTING_NUMERIC_FEATURES})
        if use_text and text_encoder is None:
            inputs[features.TEXT_EMBEDDINGS] = keras.Input(
                shape=(num_text_tokens * text_dim,), dtype="float32", name=features.TEXT_EMBEDDINGS
            )
        elif use_text:
            inputs[features.TEXT_TOKEN_IDS] = keras.Input(
                shape=(max_text_length,), dtype="int64", name=features.TEXT_TOKEN_IDS
            )
        if use_image and image_encoder is None:
            inputs[features.PATCH_EMBEDDINGS] = keras.Input(
                shape=(num_patches * patch_dim,), dtype="float32", name=features.PATCH_EMBEDDINGS
            )
        elif use_image:
            inputs[features.IMAGE] = keras.Input(shape=(None, None, 3), dtype="uint8", name=features.IMAGE)
        if request_tasks:
            inputs.update(
                {
                    name: keras.Input(shape=(), dtype="int64", name=name)
                    for name in (*REQUEST_ID_FEATURES, *REQUEST_INTEGER_FEATURES)
                }
            )
            inputs.update(
                {name: keras.Input(shape=(), dtype="float32", name=name) for name in REQUEST_NUMERIC_FEATURES}
            )

        tokens = self.listing_tokens(inputs)
        if request_tasks:
            tokens = ops.concatenate([tokens, self.request_tokens(inputs)], axis=1)
        attention_mask, listing_mask = self.attention_masks(tokens)
        x = tokens
        for layer in self.shared_layers:
            x = layer(x, attention_mask=attention_mask)
        if self.expert_mixture is None:
            mixed = [x] * len(task_names)
        else:
            mixed = self.expert_mixture(
                x, attention_mask=attention_mask, router_mask=listing_mask if listing_only_attention else None
            )
        outputs = {
            task: self.tower_layer_norms[t](self.task_towers[t](mixed[t], attention_mask=attention_mask))
            for t, task in enumerate(task_names)
        }
        super().__init__(inputs=inputs, outputs=outputs, dtype=dtype, **kwargs)

    def _embedded(self, tokens, training=None):
        return self.embeddings_dropout(self.embeddings_layer_norm(tokens), training=training)

    def listing_tokens(self, inputs, training=None):
        """The listing's tokens [batch, listing_length, hidden_dim] from the listing inputs alone."""
        parts = []
        if self.listing_tasks:
            reference = inputs[LISTING_ID_FEATURES[0]]
            all_tasks = self.task_tokens(reference)
            parts.append(ops.take(all_tasks, [self.task_names.index(t) for t in self.listing_tasks], axis=1))
        if "text" in self.modalities:
            if self.text_encoder is None:
                text = ops.reshape(inputs[features.TEXT_EMBEDDINGS], (-1, self.num_text_tokens, self.text_dim))
            else:
                token_ids = ops.cast(inputs[features.TEXT_TOKEN_IDS], "int32")
                # BERT runs once per distinct text (a training batch holds each text three times).
                unique_ids, text_rows = self.unique_texts(token_ids)
                padding_mask = ops.not_equal(unique_ids, 0)
                states = self.text_encoder(
                    {
                        "token_ids": unique_ids,
                        "segment_ids": ops.zeros_like(unique_ids),
                        "padding_mask": ops.cast(padding_mask, "int32"),
                    },
                    training=False if self.freeze_text_encoder else training,
                )["sequence_output"]
                pooled = segment_mean_pool(states, padding_mask, self.num_text_tokens)
                text = ops.take(pooled, text_rows, axis=0)
            text_tokens = self.text_projection(text)
            parts.append(text_tokens + self.text_position_embedding(text_tokens))
        if "image" in self.modalities:
            if self.image_encoder is None:
                patches = ops.reshape(inputs[features.PATCH_EMBEDDINGS], (-1, self.num_patches, self.patch_dim))
            else:
                patches = self.image_encoder(
                    inputs[features.IMAGE], training=False if self.freeze_image_encoder else training
                )
            patch_tokens = self.patch_projection(patches)
            parts.append(patch_tokens + self.patch_position_embedding(patch_tokens))
        ids = [self.id_embeddings[name](inputs[name]) for name in LISTING_ID_FEATURES]
        numeric = ops.stack([inputs[name] for name in LISTING_NUMERIC_FEATURES], axis=-1)
        parts.append(ops.concatenate([ops.stack(ids, axis=1), self.listing_numeric_embedding(numeric)], axis=1))
        return self._embedded(self.listing_modality_embedding(ops.concatenate(parts, axis=1)), training)

    def request_tokens(self, inputs, training=None):
        """The request's tokens [batch, request_length, hidden_dim] from the request inputs alone."""
        reference = inputs[REQUEST_ID_FEATURES[0]]
        all_tasks = self.task_tokens(reference)
        task_tokens = ops.take(all_tasks, [self.task_names.index(t) for t in self.request_tasks], axis=1)
        ids = [self.id_embeddings[name](inputs[name]) for name in REQUEST_ID_FEATURES]
        ids += [self.integer_embeddings[name](inputs[name]) for name in REQUEST_INTEGER_FEATURES]
        numeric = ops.stack([inputs[name] for name in REQUEST_NUMERIC_FEATURES], axis=-1)
        tokens = ops.concatenate([task_tokens, ops.stack(ids, axis=1), self.request_numeric_embedding(numeric)], axis=1)
        return self._embedded(self.request_modality_embedding(tokens), training)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "vocabulary_sizes": self.vocabulary_sizes,
                "num_patches": self.num_patches,
                "patch_dim": self.patch_dim,
                "hidden_dim": self.hidden_dim,
                "num_heads": self.num_heads,
                "intermediate_dim": self.intermediate_dim,
                "num_shared_layers": self.num_shared_layers,
                "num_experts": self.num_experts,
                "top_k": self.top_k,
                "num_text_tokens": self.num_text_tokens,
                "text_dim": self.text_dim,
                "text_encoder": None if self.text_encoder is None else keras.layers.serialize(self.text_encoder),
                "freeze_text_encoder": self.freeze_text_encoder,
                "max_text_length": self.max_text_length,
                "image_encoder": None if self.image_encoder is None else keras.layers.serialize(self.image_encoder),
                "freeze_image_encoder": self.freeze_image_encoder,
                "listing_only_attention": self.listing_only_attention,
                "capacity_factor": self.capacity_factor,
                "load_balance_loss_weight": self.load_balance_loss_weight,
                "router_z_loss_weight": self.router_z_loss_weight,
                "dropout": self.dropout,
                "task_names": list(self.task_names),
                "modalities": list(self.modalities),
                "layer_norm_epsilon": self.layer_norm_epsilon,
            }
        )
        return config
