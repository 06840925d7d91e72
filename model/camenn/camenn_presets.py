"""CameNN preset configurations: whole architectures, named by the machine they suit.

Each preset names its text encoder (a `camenn.model.bert` preset, whose weights load when
`load_weights=True`) and the rest of the architecture; the other weights start random. What the data
decides is not in a preset and must be passed when building one: `vocabulary_sizes` (from Transform),
`num_patches` and `patch_dim` (from `camenn preprocess`'s summary.json), and `max_text_length` if it is
not 64.
"""

backbone_presets = {
    "camenn_tiny": {
        "metadata": {
            "description": "Tests only: bert_tiny text encoder (hidden 32), width 32, 1 shared layer, "
                           "4 experts (top-2).",
            "path": "camenn",
        },
        "text_encoder": "bert_tiny",
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
            "description": "CPU experiments (`camenn experiments`): frozen all-MiniLM-L6-v2 text encoder, "
                           "width 64, 1 shared layer, 4 experts (top-2).",
            "path": "camenn",
        },
        "text_encoder": "all_minilm_l6_v2",
        "config": {
            "hidden_dim": 64,
            "num_heads": 2,
            "intermediate_dim": 128,
            "num_shared_layers": 1,
            "num_experts": 4,
            "top_k": 2,
            "dropout": 0.1,
            "freeze_text_encoder": True,
        },
    },
    "camenn_small": {
        "metadata": {
            "description": "CPU: all-MiniLM-L6-v2 text encoder (6 layers, hidden 384), width 128, "
                           "2 shared layers, 8 experts (top-2).",
            "path": "camenn",
        },
        "text_encoder": "all_minilm_l6_v2",
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
            "description": "GPU: all-MiniLM-L6-v2 text encoder, width 384, 4 shared layers, "
                           "16 experts (top-2).",
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
        },
    },
}
