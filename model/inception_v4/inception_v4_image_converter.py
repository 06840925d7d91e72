"""Resizing and normalisation for InceptionV4 inputs."""

import keras
import keras_hub

from camenn.model import preset_store
from camenn.model.inception_v4.inception_v4_backbone import InceptionV4Backbone


@keras.saving.register_keras_serializable(package="camenn")
class InceptionV4ImageConverter(preset_store.StoredPresets, keras_hub.layers.ImageConverter):
    """keras-hub `ImageConverter` for InceptionV4: resize to the preset's input size and map RGB
    [0, 255] to [-1, 1] (`scale=1/127.5, offset=-1`, TF-slim's and timm's mean = std = 0.5).

    Example:
    ```python
    import numpy as np

    converter = InceptionV4ImageConverter.from_preset("inception_v4_tiny")
    black_and_white = np.stack([np.zeros((120, 90, 3), "uint8"), np.full((120, 90, 3), 255, "uint8")])
    images = np.asarray(converter(black_and_white))
    assert images.shape == (2, 75, 75, 3)  # the preset's input size
    assert np.allclose(images[0], -1.0) and np.allclose(images[1], 1.0)
    ```
    """

    backbone_cls = InceptionV4Backbone

    def __init__(
        self,
        image_size=(299, 299),
        scale=1.0 / 127.5,
        offset=-1.0,
        crop_to_aspect_ratio=False,
        antialias=True,
        **kwargs,
    ):
        super().__init__(
            image_size=image_size,
            scale=scale,
            offset=offset,
            crop_to_aspect_ratio=crop_to_aspect_ratio,
            antialias=antialias,
            **kwargs,
        )
