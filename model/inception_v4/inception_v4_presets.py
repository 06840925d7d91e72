"""InceptionV4 preset configurations.

No pre-trained InceptionV4 weights can be fetched offline, so both presets are randomly initialised (seeded,
so every machine builds the same ones); `camenn presets convert-inception-v4` turns timm's or TF-slim's
ImageNet checkpoint into a preset folder that loads the same way.
"""

from camenn.model.preset_store import Recipe

backbone_presets = {
    "inception_v4_tiny": {
        "metadata": {
            "description": (
                "InceptionV4 layout with one block of each Inception type and an eighth of the filters "
                "(192-dimensional pooled output), 75x75 inputs, random weights: for tests."
            ),
            "params": 215004,
            "path": "inception_v4",
        },
        "config": {"stackwise_num_blocks": [1, 1, 1], "width_multiplier": 0.125},
        "image_size": [75, 75],
        "seed": 4,
    },
    "inception_v4": {
        "metadata": {
            "description": (
                "InceptionV4 of Szegedy et al. 2016 at full size (1536-dimensional pooled output), 299x299 "
                "inputs, random weights (convert an ImageNet checkpoint for pre-trained ones)."
            ),
            "params": 41205984,
            "path": "inception_v4",
        },
        "config": {"stackwise_num_blocks": [4, 7, 3], "width_multiplier": 1.0},
        "image_size": [299, 299],
        "seed": 4,
    },
}


def recipes() -> dict:
    return {
        name: Recipe(
            "camenn.model.inception_v4.convert_inception_v4:build_random_preset",
            {key: preset[key] for key in ("config", "image_size", "seed")},
        )
        for name, preset in backbone_presets.items()
    }
