"""Retrieval presets: whole architectures, named by what they suit. The data's arguments
(`vocabulary_sizes`, `num_text_tokens`, `text_dim`, `num_patches`, `patch_dim`) are given at build time."""

retrieval_presets = {
    "retrieval_tiny": {
        "metadata": {"description": "Tests only: vectors of 16, one hidden layer of 32."},
        "config": {"embedding_dim": 16, "id_dim": 8, "hidden_dims": (32,), "dropout": 0.0},
    },
    "retrieval_small": {
        "metadata": {"description": "A CPU (the demo): vectors of 64, one hidden layer of 128."},
        "config": {"embedding_dim": 64, "id_dim": 32, "hidden_dims": (128,), "dropout": 0.1},
    },
}
