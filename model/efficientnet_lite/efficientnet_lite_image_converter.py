"""Resizing and normalisation for EfficientNet-Lite inputs."""

import keras
import keras_hub

from camenn.model import preset_store
from camenn.model.efficientnet_lite.efficientnet_lite_backbone import EfficientNetLiteBackbone


@keras.saving.register_keras_serializable(package="camenn")
class EfficientNetLiteImageConverter(preset_store.StoredPresets, keras_hub.layers.ImageConverter):
    """keras-hub `ImageConverter` for EfficientNet-Lite: resize to the preset's input size, then
    (RGB - 127) / 128, the "inception-style" normalisation the TF Lite models were trained with.

    Example:
    ```python
    import numpy as np

    converter = EfficientNetLiteImageConverter.from_preset("efficientnet_lite0_imagenet")
    black_and_white = np.stack([np.zeros((300, 400, 3), "uint8"), np.full((300, 400, 3), 255, "uint8")])
    images = np.asarray(converter(black_and_white))
    assert images.shape == (2, 224, 224, 3)  # the preset's input size
    assert np.allclose(images[0], -127 / 128) and np.allclose(images[1], 1.0)
    ```
    """

    backbone_cls = EfficientNetLiteBackbone

    def __init__(
        self,
        image_size=(224, 224),
        scale=1.0 / 128.0,
        offset=-127.0 / 128.0,
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
