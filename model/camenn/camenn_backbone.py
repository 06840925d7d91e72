"""CameNN's backbone: every input becomes a token, a shared transformer, a mixture of transformer
experts gated per task, and one transformer tower per task (DESIGN.md section 1).

TensorFlow backend only (the mixture's sparse dispatch; see `transformer_expert_mixture`).
"""
import keras
import keras_hub
from keras import ops

from camenn.model import features
from camenn.model.camenn.camenn_layers import ModalityEmbedding, NumericFeatureEmbedding, TaskTokens, UniqueRows
from camenn.model.camenn.camenn_presets import backbone_presets
from camenn.model.camenn.transformer_expert_mixture import TransformerExpertMixture

# Settings a preset cannot know: the data decides them.
DATA_ARGUMENTS = ("vocabulary_sizes", "num_patches", "patch_dim")
# The listing's modalities a backbone may read (the ablations drop one).
MODALITIES = ("text", "image")


def load_text_encoder(preset, load_weights=True, dtype=None):
    """A `keras_hub.models.BertBackbone` from a `camenn.model.bert` preset name or a preset folder."""
    from camenn.model import bert

    folder = bert.preset_dir(preset) if preset in bert.PRESETS else preset
    return keras_hub.models.BertBackbone.from_preset(folder, load_weights=load_weights, dtype=dtype)


class NamedPresets:
    """`from_preset` for backbone families whose presets are named configurations (`preset_configs`:
    name -> {"text_encoder": a `camenn.model.bert` preset, "config": the other arguments}), the data's
    arguments (`DATA_ARGUMENTS`) given at build time; its `from_config` rebuilds the encoders a config
    holds. Put it before `keras_hub.models.Backbone` in the bases.
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

        For a preset name, `kwargs` override the preset's configuration and must include what
        the data decides: `vocabulary_sizes`, `num_patches` and `patch_dim`. `load_weights` loads the
        text encoder's pre-trained weights; everything else starts random. A `text_encoder` argument
        replaces the preset's. Anything else (a folder written by `save_to_preset`) goes to
        keras-hub's loader.

        Example:
        ```python
        backbone = CameNNBackbone.from_preset(
            "camenn_small", vocabulary_sizes=sizes, num_patches=4, patch_dim=1280, dropout=0.2)
        ```
        """
        if preset not in cls.preset_configs:
            return super().from_preset(preset, load_weights=load_weights, **kwargs)
        needed = DATA_ARGUMENTS if kwargs.get("image_encoder") is None else ("vocabulary_sizes",)
        missing = [name for name in needed if name not in kwargs]
        if missing:
            raise ValueError(f"{preset} needs {missing}: the data decides them (vocabulary sizes from "
                             f"Transform, num_patches and patch_dim from `camenn preprocess`'s summary.json)")
        config = {**cls.preset_configs[preset]["config"], **kwargs}
        if config.get("image_encoder") is not None:
            config.setdefault("num_patches", config["image_encoder"].num_patches)
            config.setdefault("patch_dim", config["image_encoder"].output_dim)
        if "text_encoder" not in config:
            config["text_encoder"] = load_text_encoder(cls.preset_configs[preset]["text_encoder"],
                                                       load_weights=load_weights, dtype=config.get("dtype"))
        return cls(**config)


@keras.saving.register_keras_serializable(package="camenn")
class CameNNBackbone(NamedPresets, keras_hub.models.Backbone):
    """CameNN's backbone, from model inputs (contract 5) to one pooled vector per task.

    Tokens, all of width `hidden_dim`, in this order: one learned token per task; the listing text's
    BERT token embeddings (the `text_encoder`'s sequence output, projected; each distinct text of the
    batch is encoded once); one token per image patch
    (the cached patch embeddings, or in the end-to-end mode the `image_encoder`'s embeddings of the
    photo's patches, projected, plus a patch-position embedding); one token per id
    feature (`features.ID_FEATURES`, embedded with `vocabulary_sizes`), per integer feature
    (`features.INTEGER_FEATURES`: the hour, 24 values) and per numeric feature
    (`features.NUMERIC_FEATURES`, a small per-feature MLP). A modality embedding (task, text, image,
    other) is added, then layer normalisation and dropout. Padding text tokens (id 0) are masked.

    Then `num_shared_layers` transformer encoder layers (the shared bottom), a
    `TransformerExpertMixture` with one gate per task, and per task one transformer encoder layer (its
    tower) over that task's mixed sequence, pooled at the task's token after a final layer norm.

    Args:
        text_encoder: a `keras_hub.models.BertBackbone` (see `load_text_encoder`), fine-tuned with the
            rest unless `freeze_text_encoder`.
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
        capacity_factor: float. Training capacity of each expert (see `TransformerExpertMixture`).
        load_balance_loss_weight: float. Weight of the mixture's load-balancing loss.
        router_z_loss_weight: float. Weight of the mixture's router z-loss.
        dropout: float. Dropout on the embeddings and in every transformer layer (attention
            probabilities and residual branches).
        max_text_length: int. Token ids per listing text.
        freeze_text_encoder: bool. Keep the text encoder's weights fixed (and run it in inference mode).
        image_encoder: None (default: the model takes cached `features.PATCH_EMBEDDINGS`), or the
            end-to-end mode: a `camenn.model.patch_embedding.PatchEmbedding`, and the model takes
            `features.IMAGE` (uint8 pixels [batch, H, W, 3]) and trains the encoder with the rest.
        freeze_image_encoder: bool. Keep the image encoder's weights fixed (inference mode).
        task_names: sequence of str. The tasks, each with a gate, a token, a tower and an output.
        modalities: sequence of "text" and/or "image". The listing modalities the model reads (an
            ablation drops one: its input is then not taken, and a dropped text encoder is frozen).
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
        num_patches=4,
        patch_dim=16,
    )
    batch = {name: np.zeros((2,), "int64") for name in features.ID_FEATURES}
    batch[features.HOUR] = np.array([8, 20])
    batch.update({name: np.zeros((2,), "float32") for name in features.NUMERIC_FEATURES})
    batch[features.TEXT_TOKEN_IDS] = np.full((2, 64), 101)
    batch[features.PATCH_EMBEDDINGS] = np.random.normal(size=(2, 4 * 16)).astype("float32")
    pooled = backbone(batch)  # {"cvr": (2, 32), "ita": (2, 32), "tia": (2, 32)}
    ```
    """

    preset_configs = backbone_presets

    def __init__(self, text_encoder, vocabulary_sizes, num_patches, patch_dim, hidden_dim, num_heads,
                 intermediate_dim, num_shared_layers, num_experts, top_k, capacity_factor=1.25,
                 load_balance_loss_weight=1e-2, router_z_loss_weight=1e-3, dropout=0.1, max_text_length=64,
                 freeze_text_encoder=False, image_encoder=None, freeze_image_encoder=False,
                 task_names=features.TASKS, modalities=MODALITIES, layer_norm_epsilon=1e-6, dtype=None, **kwargs):
        missing = sorted(set(features.ID_FEATURES) - set(vocabulary_sizes))
        if missing:
            raise ValueError(f"vocabulary_sizes lacks {missing}: give a size for each of {features.ID_FEATURES}")
        task_names = tuple(task_names)
        modalities = tuple(modalities)
        if not modalities or set(modalities) - set(MODALITIES):
            raise ValueError(f"modalities must be a non-empty subset of {MODALITIES}, got {modalities}")
        use_text, use_image = "text" in modalities, "image" in modalities
        if max_text_length > text_encoder.max_sequence_length:
            raise ValueError(f"max_text_length={max_text_length} exceeds the text encoder's "
                             f"{text_encoder.max_sequence_length} positions")
        if image_encoder is not None and (num_patches, patch_dim) != (image_encoder.num_patches,
                                                                      image_encoder.output_dim):
            raise ValueError(f"num_patches={num_patches}, patch_dim={patch_dim} disagree with the image encoder's "
                             f"{image_encoder.num_patches} patches of {image_encoder.output_dim}")
        transformer_args = dict(intermediate_dim=intermediate_dim, num_heads=num_heads, dropout=dropout,
                                activation="gelu", layer_norm_epsilon=layer_norm_epsilon, normalize_first=True,
                                dtype=dtype)

        # === Layers ===
        self.text_encoder = text_encoder
        self.text_encoder.trainable = use_text and not freeze_text_encoder
        # CameNN reads BERT's token embeddings, not its pooled [CLS] output.
        self.text_encoder.get_layer("pooled_dense").trainable = False
        self.image_encoder = image_encoder
        if image_encoder is not None:
            self.image_encoder.trainable = not freeze_image_encoder
        self.unique_texts = UniqueRows(name="unique_texts")
        self.text_projection = keras.layers.Dense(hidden_dim, dtype=dtype, name="text_projection")
        self.patch_projection = keras.layers.Dense(hidden_dim, dtype=dtype, name="patch_projection")
        self.patch_position_embedding = keras_hub.layers.PositionEmbedding(
            sequence_length=num_patches, dtype=dtype, name="patch_position_embedding")
        self.id_embeddings = [keras.layers.Embedding(int(vocabulary_sizes[name]), hidden_dim, dtype=dtype,
                                                     name=f"{name}_embedding") for name in features.ID_FEATURES]
        self.integer_embeddings = [keras.layers.Embedding(size, hidden_dim, dtype=dtype, name=f"{name}_embedding")
                                   for name, size in features.INTEGER_FEATURES.items()]
        self.numeric_embedding = NumericFeatureEmbedding(hidden_dim, dtype=dtype, name="numeric_embedding")
        self.task_tokens = TaskTokens(len(task_names), hidden_dim, dtype=dtype, name="task_tokens")
        num_other = len(features.ID_FEATURES) + len(features.INTEGER_FEATURES) + len(features.NUMERIC_FEATURES)
        segment_lengths = [len(task_names), max_text_length * use_text, num_patches * use_image, num_other]
        self.modality_embedding = ModalityEmbedding(segment_lengths, dtype=dtype, name="modality_embedding")
        self.embeddings_layer_norm = keras.layers.LayerNormalization(
            epsilon=layer_norm_epsilon, dtype=dtype, name="embeddings_layer_norm")
        self.embeddings_dropout = keras.layers.Dropout(dropout, dtype=dtype, name="embeddings_dropout")
        self.shared_layers = [keras_hub.layers.TransformerEncoder(**transformer_args, name=f"shared_layer_{i}")
                              for i in range(num_shared_layers)]
        self.expert_mixture = None if num_experts == 0 else TransformerExpertMixture(
            num_experts=num_experts, top_k=top_k, task_names=task_names, capacity_factor=capacity_factor,
            load_balance_loss_weight=load_balance_loss_weight, router_z_loss_weight=router_z_loss_weight,
            **transformer_args, name="expert_mixture")
        self.task_towers = [keras_hub.layers.TransformerEncoder(**transformer_args, name=f"{task}_tower")
                            for task in task_names]
        self.tower_layer_norms = [keras.layers.LayerNormalization(epsilon=layer_norm_epsilon, dtype=dtype,
                                                                  name=f"{task}_tower_layer_norm")
                                  for task in task_names]

        # === Functional Model ===
        inputs = {name: keras.Input(shape=(), dtype="int64", name=name) for name in features.ID_FEATURES}
        inputs.update({name: keras.Input(shape=(), dtype="int64", name=name) for name in features.INTEGER_FEATURES})
        inputs.update({name: keras.Input(shape=(), dtype="float32", name=name) for name in features.NUMERIC_FEATURES})
        if use_text:
            inputs[features.TEXT_TOKEN_IDS] = keras.Input(shape=(max_text_length,), dtype="int64",
                                                          name=features.TEXT_TOKEN_IDS)
        if use_image and image_encoder is None:
            inputs[features.PATCH_EMBEDDINGS] = keras.Input(shape=(num_patches * patch_dim,), dtype="float32",
                                                            name=features.PATCH_EMBEDDINGS)
        elif use_image:
            inputs[features.IMAGE] = keras.Input(shape=(None, None, 3), dtype="uint8", name=features.IMAGE)

        modality_tokens, modality_masks = [], []
        if use_text:
            token_ids = ops.cast(inputs[features.TEXT_TOKEN_IDS], "int32")
            # BERT runs once per distinct text (a training batch holds each text three times).
            unique_ids, text_rows = self.unique_texts(token_ids)
            unique_encoding = self.text_encoder(
                {"token_ids": unique_ids, "segment_ids": ops.zeros_like(unique_ids),
                 "padding_mask": ops.cast(ops.not_equal(unique_ids, 0), "int32")},
                training=False if freeze_text_encoder else None)["sequence_output"]
            modality_tokens.append(self.text_projection(ops.take(unique_encoding, text_rows, axis=0)))
            modality_masks.append(ops.cast(ops.not_equal(token_ids, 0), "int32"))

        if use_image:
            if image_encoder is None:
                patches = ops.reshape(inputs[features.PATCH_EMBEDDINGS], (-1, num_patches, patch_dim))
            else:
                patches = self.image_encoder(inputs[features.IMAGE],
                                             training=False if freeze_image_encoder else None)
            patch_tokens = self.patch_projection(patches)
            modality_tokens.append(patch_tokens + self.patch_position_embedding(patch_tokens))
            modality_masks.append(ops.ones_like(patch_tokens[:, :, 0], dtype="int32"))

        id_tokens = [embed(inputs[name]) for embed, name in zip(self.id_embeddings, features.ID_FEATURES)]
        id_tokens += [embed(inputs[name]) for embed, name in zip(self.integer_embeddings,
                                                                 features.INTEGER_FEATURES)]
        numeric = ops.stack([inputs[name] for name in features.NUMERIC_FEATURES], axis=-1)
        other_tokens = ops.concatenate([ops.stack(id_tokens, axis=1), self.numeric_embedding(numeric)], axis=1)

        task_tokens = self.task_tokens(other_tokens)
        tokens = ops.concatenate([task_tokens, *modality_tokens, other_tokens], axis=1)
        tokens = self.modality_embedding(tokens)
        x = self.embeddings_dropout(self.embeddings_layer_norm(tokens))
        padding_mask = ops.concatenate([ops.ones_like(task_tokens[:, :, 0], dtype="int32"), *modality_masks,
                                        ops.ones_like(other_tokens[:, :, 0], dtype="int32")], axis=1)

        for layer in self.shared_layers:
            x = layer(x, padding_mask=padding_mask)
        if self.expert_mixture is None:
            mixed = [x] * len(task_names)
        else:
            mixed = self.expert_mixture(x, padding_mask=padding_mask)
        outputs = {}
        for t, task in enumerate(task_names):
            tower = self.task_towers[t](mixed[t], padding_mask=padding_mask)
            outputs[task] = self.tower_layer_norms[t](tower[:, t, :])

        super().__init__(inputs=inputs, outputs=outputs, dtype=dtype, **kwargs)

        # === Config ===
        self.vocabulary_sizes = {name: int(vocabulary_sizes[name]) for name in features.ID_FEATURES}
        self.num_patches = num_patches
        self.patch_dim = patch_dim
        self.hidden_dim = hidden_dim
        self.num_heads = num_heads
        self.intermediate_dim = intermediate_dim
        self.num_shared_layers = num_shared_layers
        self.num_experts = num_experts
        self.top_k = top_k
        self.capacity_factor = capacity_factor
        self.load_balance_loss_weight = load_balance_loss_weight
        self.router_z_loss_weight = router_z_loss_weight
        self.dropout = dropout
        self.max_text_length = max_text_length
        self.freeze_text_encoder = freeze_text_encoder
        self.freeze_image_encoder = freeze_image_encoder
        self.task_names = task_names
        self.modalities = modalities
        self.layer_norm_epsilon = layer_norm_epsilon

    def get_config(self):
        config = super().get_config()
        config.update({
            "text_encoder": keras.layers.serialize(self.text_encoder),
            "vocabulary_sizes": self.vocabulary_sizes,
            "num_patches": self.num_patches,
            "patch_dim": self.patch_dim,
            "hidden_dim": self.hidden_dim,
            "num_heads": self.num_heads,
            "intermediate_dim": self.intermediate_dim,
            "num_shared_layers": self.num_shared_layers,
            "num_experts": self.num_experts,
            "top_k": self.top_k,
            "capacity_factor": self.capacity_factor,
            "load_balance_loss_weight": self.load_balance_loss_weight,
            "router_z_loss_weight": self.router_z_loss_weight,
            "dropout": self.dropout,
            "max_text_length": self.max_text_length,
            "freeze_text_encoder": self.freeze_text_encoder,
            "image_encoder": None if self.image_encoder is None else keras.layers.serialize(self.image_encoder),
            "freeze_image_encoder": self.freeze_image_encoder,
            "task_names": list(self.task_names),
            "modalities": list(self.modalities),
            "layer_norm_epsilon": self.layer_norm_epsilon,
        })
        return config
