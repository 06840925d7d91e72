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
class EfficientNetLiteImageClassifier(preset_store.NamedPresets, keras_hub.models.ImageClassifier):
    """keras-hub ImageClassifier over `EfficientNetLiteBackbone` (average pooling, dense logits).

    Example:
    ```python
    classifier = EfficientNetLiteImageClassifier.from_preset("efficientnet_lite0_imagenet")
    logits = classifier.predict(np.asarray(photo_uint8)[None])  # (1, 1000) ImageNet logits
    keras_hub.utils.decode_imagenet_predictions(keras.ops.softmax(logits))
    ```
    """

    backbone_cls = EfficientNetLiteBackbone
    preprocessor_cls = EfficientNetLiteImageClassifierPreprocessor
