"""InceptionV4 (Szegedy et al. 2016) in keras-hub form: backbone, image converter, presets and converters
from the timm and TF-slim checkpoints.

    from camenn.model.inception_v4 import InceptionV4Backbone, InceptionV4ImageConverter

The classes load on first access (importing this package stays free of TensorFlow), all at once, so
keras-hub finds the family's converter for a preset of its backbone.
"""

import importlib

_EXPORTS = {
    "InceptionV4Backbone": "inception_v4_backbone",
    "InceptionV4ImageConverter": "inception_v4_image_converter",
}


def __getattr__(name):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    modules = {module: importlib.import_module(f"{__name__}.{module}") for module in set(_EXPORTS.values())}
    return getattr(modules[_EXPORTS[name]], name)
