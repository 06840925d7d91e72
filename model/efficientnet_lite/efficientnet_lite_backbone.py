"""EfficientNet-Lite (Tan & Le 2019, arXiv 1905.11946; the Lite variants of tensorflow/tpu's
models/official/efficientnet/lite) as a keras-hub Backbone.

keras-hub's own `EfficientNetBackbone` builds Lite0's layout, but pads its strided depthwise
convolutions symmetrically (PyTorch style). The released Lite weights were trained in TensorFlow with
"SAME" padding, which pads one pixel less before than after; this backbone uses "same" convolutions, so
the converted weights see the windows they were trained on. Layer names follow keras-hub's EfficientNet.
"""

import math

import keras
import keras_hub

from camenn.model import preset_store
from camenn.model.efficientnet_lite import efficientnet_lite_presets


def round_filters(filters, width_coefficient, divisor=8):
    """TF EfficientNet's channel rounding: scale, round to a multiple of `divisor`, lose at most 10%."""
    scaled = filters * width_coefficient
    rounded = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
    return int(rounded + divisor if rounded < 0.9 * scaled else rounded)


@keras.saving.register_keras_serializable(package="camenn")
class EfficientNetLiteBackbone(preset_store.StoredPresets, keras_hub.models.Backbone):
    """EfficientNet-Lite feature extractor: images normalised to [-127/128, 1] -> the last feature map.

    A 3x3 stride-2 stem, seven stacks of mobile inverted bottleneck blocks (1x1 expansion, depthwise kxk,
    1x1 projection, residual when the shape allows) and a 1x1 head convolution; batch normalisation
    after every convolution and ReLU6 (Lite: no squeeze-and-excitation, stem and head not scaled).
    The defaults are EfficientNet-Lite0 (224x224 inputs, a 7x7x1280 map, 3.4M backbone parameters).
    Global average pooling of the map gives the image embedding (`output_dim` = 1280).

    Args:
        stackwise_kernel_sizes, stackwise_num_repeats, stackwise_input_filters, stackwise_output_filters,
        stackwise_expansion_ratios, stackwise_strides: one value per stack (the TF block strings
            r{repeats}_k{kernel}_s{stride}_e{expansion}_i{in}_o{out}).
        width_coefficient: scales the stacks' filters (Lite1-4: 1.0, 1.0, 1.1, 1.2, 1.4).
        depth_coefficient: scales the repeats of all but the first and last stacks.
        stem_filters, head_filters: the stem's and head's convolution widths (not scaled in Lite).
        drop_connect_rate: stochastic depth rate of the last block (linearly less before it; training only).
        batch_norm_epsilon: 1e-3 as in TensorFlow.
        image_shape: input shape; None dimensions accept any size.
        dtype: dtype policy of the layers.

    Example:
    ```python
    import numpy as np

    backbone = EfficientNetLiteBackbone.from_preset("efficientnet_lite0_imagenet")
    assert backbone(np.zeros((1, 224, 224, 3))).shape == (1, 7, 7, 1280)
    ```
    """

    def __init__(
        self,
        stackwise_kernel_sizes=(3, 3, 5, 3, 5, 5, 3),
        stackwise_num_repeats=(1, 2, 2, 3, 3, 4, 1),
        stackwise_input_filters=(32, 16, 24, 40, 80, 112, 192),
        stackwise_output_filters=(16, 24, 40, 80, 112, 192, 320),
        stackwise_expansion_ratios=(1, 6, 6, 6, 6, 6, 6),
        stackwise_strides=(1, 2, 2, 2, 1, 2, 1),
        width_coefficient=1.0,
        depth_coefficient=1.0,
        stem_filters=32,
        head_filters=1280,
        drop_connect_rate=0.2,
        batch_norm_epsilon=1e-3,
        image_shape=(None, None, 3),
        dtype=None,
        **kwargs,
    ):
        stacks = list(
            zip(
                stackwise_kernel_sizes,
                stackwise_num_repeats,
                stackwise_input_filters,
                stackwise_output_filters,
                stackwise_expansion_ratios,
                stackwise_strides,
            )
        )
        last = len(stacks) - 1
        repeats = [
            r if i in (0, last) else int(math.ceil(r * depth_coefficient)) for i, (_, r, *_) in enumerate(stacks)
        ]

        def conv_bn(x, filters, kernel, strides, conv_name, prefix, activation=True):
            x = keras.layers.Conv2D(
                filters, kernel, strides=strides, padding="same", use_bias=False, dtype=dtype, name=conv_name
            )(x)
            x = keras.layers.BatchNormalization(epsilon=batch_norm_epsilon, dtype=dtype, name=f"{prefix}_bn")(x)
            if activation:
                x = keras.layers.ReLU(6.0, dtype=dtype, name=f"{prefix}_activation")(x)
            return x

        # === Functional Model ===
        image_input = keras.layers.Input(shape=image_shape, name="images")
        x = conv_bn(image_input, stem_filters, 3, 2, "stem_conv", "stem")
        block, num_blocks = 0, sum(repeats)
        for i, (kernel, _, filters_in, filters_out, expansion, stride) in enumerate(stacks):
            filters_in = stem_filters if i == 0 else round_filters(filters_in, width_coefficient)
            filters_out = round_filters(filters_out, width_coefficient)
            for j in range(repeats[i]):
                name = f"block{i + 1}{chr(ord('a') + j)}_"
                inputs, strides = x, (stride if j == 0 else 1)
                channels_in = filters_in if j == 0 else filters_out
                if expansion != 1:
                    x = conv_bn(x, channels_in * expansion, 1, 1, f"{name}expand_conv", f"{name}expand")
                x = keras.layers.DepthwiseConv2D(
                    kernel, strides=strides, padding="same", use_bias=False, dtype=dtype, name=f"{name}dwconv"
                )(x)
                x = keras.layers.BatchNormalization(epsilon=batch_norm_epsilon, dtype=dtype, name=f"{name}dwconv_bn")(x)
                x = keras.layers.ReLU(6.0, dtype=dtype, name=f"{name}dwconv_activation")(x)
                x = conv_bn(x, filters_out, 1, 1, f"{name}project", f"{name}project", activation=False)
                if strides == 1 and channels_in == filters_out:
                    rate = drop_connect_rate * block / num_blocks
                    if rate > 0:
                        x = keras.layers.Dropout(rate, noise_shape=(None, 1, 1, 1), dtype=dtype, name=f"{name}drop")(x)
                    x = keras.layers.Add(dtype=dtype, name=f"{name}add")([x, inputs])
                block += 1
        x = conv_bn(x, head_filters, 1, 1, "top_conv", "top")
        super().__init__(inputs=image_input, outputs=x, dtype=dtype, **kwargs)

        # === Config ===
        self.stackwise_kernel_sizes = list(stackwise_kernel_sizes)
        self.stackwise_num_repeats = list(stackwise_num_repeats)
        self.stackwise_input_filters = list(stackwise_input_filters)
        self.stackwise_output_filters = list(stackwise_output_filters)
        self.stackwise_expansion_ratios = list(stackwise_expansion_ratios)
        self.stackwise_strides = list(stackwise_strides)
        self.width_coefficient = width_coefficient
        self.depth_coefficient = depth_coefficient
        self.stem_filters = stem_filters
        self.head_filters = head_filters
        self.drop_connect_rate = drop_connect_rate
        self.batch_norm_epsilon = batch_norm_epsilon
        self.image_shape = tuple(image_shape)
        self.output_dim = head_filters

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "stackwise_kernel_sizes": self.stackwise_kernel_sizes,
                "stackwise_num_repeats": self.stackwise_num_repeats,
                "stackwise_input_filters": self.stackwise_input_filters,
                "stackwise_output_filters": self.stackwise_output_filters,
                "stackwise_expansion_ratios": self.stackwise_expansion_ratios,
                "stackwise_strides": self.stackwise_strides,
                "width_coefficient": self.width_coefficient,
                "depth_coefficient": self.depth_coefficient,
                "stem_filters": self.stem_filters,
                "head_filters": self.head_filters,
                "drop_connect_rate": self.drop_connect_rate,
                "batch_norm_epsilon": self.batch_norm_epsilon,
                "image_shape": list(self.image_shape),
            }
        )
        return config


preset_store.register(efficientnet_lite_presets.backbone_presets, EfficientNetLiteBackbone)
