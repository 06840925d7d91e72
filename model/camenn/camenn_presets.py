"""CameNN preset configurations: whole architectures, named by the machine they suit.

The CPU presets read the listing text as the cached pooled tokens `camenn preprocess` wrote (a frozen
all-MiniLM-L6-v2, or `bert_tiny` for the tiny preset's tests); the GPU preset names a text encoder
(`text_encoder`, a `camenn.model.bert` preset whose weights load with `load_weights=True`) and
fine-tunes it end to end on token ids. Every other weight starts random. What the data decides is not
in a preset and must be passed when building one: `vocabulary_sizes` (from Transform), and unless an
end-to-end encoder takes the modality, `num_text_tokens` and `text_dim`, `num_patches` and `patch_dim`
(from `camenn preprocess`'s summary.json).
"""

backbone_presets = {
    "camenn_tiny": {
        "metadata": {
            "description": "Tests only: cached text tokens, width 32, 1 shared layer, 4 experts (top-2).",
            "path": "camenn",
        },
        "config": {
            "hidden_dim": 32,
            "num_heads": 2,
            "intermediate_dim": 64,
            "num_shared_layers": 1,
            "num_experts": 4,
            "top_k": 2,
            "dropout": 0.1,
        },
    },
    "camenn_mini": {
        "metadata": {
            "description": "CPU experiments (`camenn experiments`): cached text tokens, width 64, "
            "1 shared layer, 4 experts (top-2).",
            "path": "camenn",
        },
        "config": {
            "hidden_dim": 64,
            "num_heads": 2,
            "intermediate_dim": 128,
            "num_shared_layers": 1,
            "num_experts": 4,
            "top_k": 2,
            "dropout": 0.1,
        },
    },
    "camenn_small": {
        "metadata": {
            "description": "CPU: cached text tokens, width 128, 2 shared layers, 8 experts (top-2).",
            "path": "camenn",
        },
        "config": {
            "hidden_dim": 128,
            "num_heads": 4,
            "intermediate_dim": 256,
            "num_shared_layers": 2,
            "num_experts": 8,
            "top_k": 2,
            "dropout": 0.1,
        },
    },
    "camenn_base": {
        "metadata": {
            "description": "GPU: all-MiniLM-L6-v2 fine-tuned end to end on token ids, width 384, "
            "4 shared layers, 16 experts (top-2).",
            "path": "camenn",
        },
        "text_encoder": "all_minilm_l6_v2",
        "config": {
            "hidden_dim": 384,
            "num_heads": 6,
            "intermediate_dim": 1536,
            "num_shared_layers": 4,
            "num_experts": 16,
            "top_k": 2,
            "dropout": 0.1,
            "num_text_tokens": 4,
        },
    },
}
