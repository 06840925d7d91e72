"""Builds the BERT preset folders: all-MiniLM-L6-v2 from its Hugging Face safetensors, bert_tiny at random.

The name map from Hugging Face BERT tensors to `keras_hub.models.BertBackbone` variables is keras-hub's
own (`keras_hub.src.utils.transformers.convert_bert`); keras-hub's loader cannot read this checkpoint
directly (its keys lack the `bert.` prefix and use LayerNorm weight/bias where the converter expects
gamma/beta, and its Transformers loader imports sentencepiece), so `_HuggingFaceBertTensors` bridges
the names and checks that every tensor is used.
"""

import json

import numpy as np

from camenn.model.bert.bert_presets import MINILM
from camenn.model.preset_store import package_file

UNUSED_TENSORS = ("embeddings.position_ids",)  # a buffer of 0..511, not a weight


def tokenizer_for(vocabulary):
    """keras-hub BertTokenizer with all-MiniLM-L6-v2's normalisation: lowercase, accents stripped."""
    import keras_hub

    return keras_hub.models.BertTokenizer(vocabulary=str(vocabulary), lowercase=True, strip_accents=True)


class _HuggingFaceBertTensors:
    """The `port_weight` interface keras-hub's BERT converter expects, over a Hugging Face BertModel
    state dict saved without the `bert.` prefix."""

    def __init__(self, tensors):
        self.tensors = tensors
        self.used = set()

    def port_weight(self, keras_variable, hf_weight_key, hook_fn=None):
        key = hf_weight_key.removeprefix("bert.")
        key = key.replace("LayerNorm.gamma", "LayerNorm.weight").replace("LayerNorm.beta", "LayerNorm.bias")
        if key not in self.tensors:
            raise KeyError(f"checkpoint lacks {key} (keras-hub asks for {hf_weight_key})")
        value = self.tensors[key]
        if hook_fn:
            value = hook_fn(value, list(keras_variable.shape))
        if tuple(value.shape) != tuple(keras_variable.shape):
            raise ValueError(f"{key}: shape {value.shape} does not fit {keras_variable.path} {keras_variable.shape}")
        keras_variable.assign(value)
        self.used.add(key)

    def check_all_used(self):
        unused = sorted(set(self.tensors) - self.used - set(UNUSED_TENSORS))
        if unused:
            raise ValueError(f"{len(unused)} checkpoint tensors were not converted, e.g. {unused[:3]}")


def convert_huggingface_bert(model_dir):
    """A keras-hub BertBackbone with the weights of a Hugging Face BERT folder (config.json +
    model.safetensors)."""
    import keras_hub
    from keras_hub.src.utils.transformers import convert_bert
    from safetensors.numpy import load_file

    hf_config = json.loads((model_dir / "config.json").read_text())
    if hf_config.get("model_type") != "bert" or hf_config.get("hidden_act") != "gelu":
        raise ValueError(f"{model_dir} is not a GELU BERT (model_type {hf_config.get('model_type')})")
    backbone = keras_hub.models.BertBackbone(
        **convert_bert.convert_backbone_config(hf_config),
        max_sequence_length=hf_config["max_position_embeddings"],
        num_segments=hf_config["type_vocab_size"],
    )
    tensors = _HuggingFaceBertTensors(load_file(str(model_dir / "model.safetensors")))
    convert_bert.convert_weights(backbone, tensors, hf_config)
    tensors.check_all_used()
    return backbone


def build_minilm_preset(name, folder) -> None:
    """Preset-store builder for all_minilm_l6_v2."""
    model_dir = package_file(MINILM, "model/config.json").parent
    tokenizer_config = json.loads((model_dir / "tokenizer_config.json").read_text())
    if not tokenizer_config.get("do_lower_case") or tokenizer_config.get("strip_accents") is False:
        raise ValueError(f"{model_dir} is expected to hold an uncased, accent-stripping tokenizer")
    convert_huggingface_bert(model_dir).save_to_preset(str(folder))
    tokenizer_for(model_dir / "vocab.txt").save_to_preset(str(folder))


def build_random_preset(name, folder, config, seed) -> None:
    """Preset-store builder for a randomly initialised BERT with MiniLM's vocabulary."""
    import keras
    import keras_hub

    keras.utils.set_random_seed(seed)
    vocabulary = package_file(MINILM, "model/vocab.txt")
    if sum(1 for _ in open(vocabulary, encoding="utf-8")) != config["vocabulary_size"]:
        raise ValueError(f"{vocabulary} does not hold {config['vocabulary_size']} tokens")
    keras_hub.models.BertBackbone(**config).save_to_preset(str(folder))
    tokenizer_for(vocabulary).save_to_preset(str(folder))


def sentence_embeddings(backbone, token_ids):
    """all-MiniLM-L6-v2's sentence embedding: mean of the token outputs over non-pad tokens, L2-normalised.

    `token_ids`: int [B, L], right-padded with 0. Returns float32 numpy [B, hidden]."""
    token_ids = np.asarray(token_ids)
    mask = token_ids != 0
    outputs = backbone(
        {"token_ids": token_ids, "segment_ids": np.zeros_like(token_ids), "padding_mask": mask}, training=False
    )["sequence_output"]
    outputs = np.asarray(outputs)
    summed = (outputs * mask[..., None]).sum(axis=1)
    mean = summed / np.maximum(mask.sum(axis=1, keepdims=True), 1)
    return mean / np.maximum(np.linalg.norm(mean, axis=1, keepdims=True), 1e-12)
