"""Baseline presets, sized beside CameNN's (`camenn_presets.py`): the same cached text and image encodings
and token width, so a comparison changes the architecture, not the encoders. The data's arguments
(`vocabulary_sizes`, `num_text_tokens`, `text_dim`, `num_patches`, `patch_dim`) are given at build time, as
for CameNN."""

dnn_ranker_presets = {
    "dnn_ranker_tiny": {
        "metadata": {"description": "Tests only: width 32, MLP 64-32.", "path": "baselines"},
        "config": {"hidden_dim": 32, "mlp_dims": (64, 32), "dropout": 0.1},
    },
    "dnn_ranker_mini": {
        "metadata": {"description": "CPU experiments: width 64, MLP 256-128.", "path": "baselines"},
        "config": {"hidden_dim": 64, "mlp_dims": (256, 128), "dropout": 0.1},
    },
    "dnn_ranker_small": {
        "metadata": {"description": "CPU: width 128, MLP 512-256.", "path": "baselines"},
        "config": {"hidden_dim": 128, "mlp_dims": (512, 256), "dropout": 0.1},
    },
    "dnn_ranker_base": {
        "metadata": {"description": "GPU, beside camenn_base: width 384, MLP 1536-768.", "path": "baselines"},
        "config": {"hidden_dim": 384, "mlp_dims": (1536, 768), "dropout": 0.1},
    },
}

mmoe_presets = {
    "mmoe_tiny": {
        "metadata": {"description": "Tests only: width 32, 4 MLP experts of 32.", "path": "baselines"},
        "config": {"hidden_dim": 32, "num_experts": 4, "expert_dims": (64, 32), "tower_dim": 32, "dropout": 0.1},
    },
    "mmoe_mini": {
        "metadata": {"description": "CPU experiments: width 64, 4 MLP experts of 128.", "path": "baselines"},
        "config": {"hidden_dim": 64, "num_experts": 4, "expert_dims": (256, 128), "tower_dim": 64, "dropout": 0.1},
    },
    "mmoe_small": {
        "metadata": {"description": "CPU: width 128, 8 MLP experts of 256.", "path": "baselines"},
        "config": {"hidden_dim": 128, "num_experts": 8, "expert_dims": (512, 256), "tower_dim": 128, "dropout": 0.1},
    },
    "mmoe_base": {
        "metadata": {
            "description": "GPU, beside camenn_base: width 384, 8 MLP experts of 1024-512.",
            "path": "baselines",
        },
        "config": {"hidden_dim": 384, "num_experts": 8, "expert_dims": (1024, 512), "tower_dim": 384, "dropout": 0.1},
    },
}
