"""EfficientNet-Lite with its ImageNet classification head, as a keras-hub ImageClassifier task."""

import keras
import keras_hub

from camenn.model import preset_store
from camenn.model.efficientnet_lite.efficientnet_lite_backbone import EfficientNetLiteBackbone
from camenn.model.efficientnet_lite.efficientnet_lite_image_converter import EfficientNetLiteImageConverter


@keras.saving.register_keras_serializable(package="camenn")
class EfficientNetLiteImageClassifierPreprocessor(keras_hub.models.ImageClassifierPreprocessor):
    backbone_cls = EfficientNetLiteBackbone
    image_converter_cls = EfficientNetLiteImageConverter


@keras.saving.register_keras_serializable(package="camenn")
class EfficientNetLiteImageClassifier(preset_store.StoredPresets, keras_hub.models.ImageClassifier):
    """keras-hub ImageClassifier over `EfficientNetLiteBackbone` (average pooling, dense logits).

    Example:
    ```python
    import keras
    import keras_hub
    import numpy as np
    from PIL import Image

    classifier = EfficientNetLiteImageClassifier.from_preset("efficientnet_lite0_imagenet")
    photo = np.asarray(Image.open("data/sample/images/i00018.jpg").convert("RGB"))  # the sample's red pepper
    logits = classifier.predict(photo[None])  # resized and normalised by the preset's preprocessor
    assert logits.shape == (1, 1000)  # ImageNet logits
    [(label, probability), *_] = keras_hub.utils.decode_imagenet_predictions(keras.ops.softmax(logits))[0]
    assert label == "bell_pepper"
    ```
    """

    backbone_cls = EfficientNetLiteBackbone
    preprocessor_cls = EfficientNetLiteImageClassifierPreprocessor
