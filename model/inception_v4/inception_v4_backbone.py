"""InceptionV4 (Szegedy et al. 2016, "Inception-v4, Inception-ResNet and the Impact of Residual
Connections on Learning", arXiv 1602.07261) as a keras-hub Backbone.

The architecture is written once, as a table (`BLOCKS`): each block type lists its branches, each branch
its pools and convolutions with their paper shapes and the names the two public checkpoints give them
(timm's `inception_v4` and TF-slim's `InceptionV4`). The backbone builds itself from the table and the
converters (`convert_inception_v4.py`) read their name maps from it, so the two cannot drift apart.
"""

from typing import NamedTuple

import keras
import keras_hub

from camenn.model import preset_store
from camenn.model.inception_v4 import inception_v4_presets


class Conv(NamedTuple):
    """One convolution + batch normalisation + ReLU unit of a branch."""

    name: str  # Keras layer names: f"{block}_{branch}_{name}_conv" / "_bn"
    filters: int  # the paper's width; scaled by `width_multiplier`
    kernel: tuple
    strides: int
    padding: str  # "same" or "valid" (TF-slim's padding, which timm reproduces)
    timm: str  # sub-module path inside the timm block, e.g. "branch1.0"
    slim: str  # variable scope inside the TF-slim block, e.g. "Branch_1/Conv2d_0a_1x1"


def _c(name, filters, kernel, timm, slim, strides=1, padding="same"):
    kernel = (kernel, kernel) if isinstance(kernel, int) else kernel
    return Conv(name, filters, kernel, strides, padding, timm, slim)


MAX_POOL = "max_pool"  # 3x3, stride 2, valid
AVG_POOL = "avg_pool"  # 3x3, stride 1, same, padding excluded from the mean

# block type -> branches; a branch is a sequence of MAX_POOL, AVG_POOL, a Conv, or a pair of Convs applied
# to the same input and concatenated (the split ends of Inception-C's branches 1 and 2). The block's
# output concatenates its branches in order.
BLOCKS = {
    # Figure 3, the stem (its three mixed parts; the three plain convolutions are STEM_CONVS).
    "stem_mixed_3a": (
        (MAX_POOL,),
        (_c("conv_1", 96, 3, "conv", "Branch_1/Conv2d_0a_3x3", strides=2, padding="valid"),),
    ),
    "stem_mixed_4a": (
        (
            _c("conv_1", 64, 1, "branch0.0", "Branch_0/Conv2d_0a_1x1"),
            _c("conv_2", 96, 3, "branch0.1", "Branch_0/Conv2d_1a_3x3", padding="valid"),
        ),
        (
            _c("conv_1", 64, 1, "branch1.0", "Branch_1/Conv2d_0a_1x1"),
            _c("conv_2", 64, (1, 7), "branch1.1", "Branch_1/Conv2d_0b_1x7"),
            _c("conv_3", 64, (7, 1), "branch1.2", "Branch_1/Conv2d_0c_7x1"),
            _c("conv_4", 96, 3, "branch1.3", "Branch_1/Conv2d_1a_3x3", padding="valid"),
        ),
    ),
    "stem_mixed_5a": (
        (_c("conv_1", 192, 3, "conv", "Branch_0/Conv2d_1a_3x3", strides=2, padding="valid"),),
        (MAX_POOL,),
    ),
    # Figure 4, 35x35 grid.
    "inception_a": (
        (_c("conv_1", 96, 1, "branch0", "Branch_0/Conv2d_0a_1x1"),),
        (
            _c("conv_1", 64, 1, "branch1.0", "Branch_1/Conv2d_0a_1x1"),
            _c("conv_2", 96, 3, "branch1.1", "Branch_1/Conv2d_0b_3x3"),
        ),
        (
            _c("conv_1", 64, 1, "branch2.0", "Branch_2/Conv2d_0a_1x1"),
            _c("conv_2", 96, 3, "branch2.1", "Branch_2/Conv2d_0b_3x3"),
            _c("conv_3", 96, 3, "branch2.2", "Branch_2/Conv2d_0c_3x3"),
        ),
        (AVG_POOL, _c("conv_1", 96, 1, "branch3.1", "Branch_3/Conv2d_0b_1x1")),
    ),
    # Figure 7, 35x35 -> 17x17 with (k, l, m, n) = (192, 224, 256, 384).
    "reduction_a": (
        (_c("conv_1", 384, 3, "branch0", "Branch_0/Conv2d_1a_3x3", strides=2, padding="valid"),),
        (
            _c("conv_1", 192, 1, "branch1.0", "Branch_1/Conv2d_0a_1x1"),
            _c("conv_2", 224, 3, "branch1.1", "Branch_1/Conv2d_0b_3x3"),
            _c("conv_3", 256, 3, "branch1.2", "Branch_1/Conv2d_1a_3x3", strides=2, padding="valid"),
        ),
        (MAX_POOL,),
    ),
    # Figure 5, 17x17 grid.
    "inception_b": (
        (_c("conv_1", 384, 1, "branch0", "Branch_0/Conv2d_0a_1x1"),),
        (
            _c("conv_1", 192, 1, "branch1.0", "Branch_1/Conv2d_0a_1x1"),
            _c("conv_2", 224, (1, 7), "branch1.1", "Branch_1/Conv2d_0b_1x7"),
            _c("conv_3", 256, (7, 1), "branch1.2", "Branch_1/Conv2d_0c_7x1"),
        ),
        (
            _c("conv_1", 192, 1, "branch2.0", "Branch_2/Conv2d_0a_1x1"),
            _c("conv_2", 192, (7, 1), "branch2.1", "Branch_2/Conv2d_0b_7x1"),
            _c("conv_3", 224, (1, 7), "branch2.2", "Branch_2/Conv2d_0c_1x7"),
            _c("conv_4", 224, (7, 1), "branch2.3", "Branch_2/Conv2d_0d_7x1"),
            _c("conv_5", 256, (1, 7), "branch2.4", "Branch_2/Conv2d_0e_1x7"),
        ),
        (AVG_POOL, _c("conv_1", 128, 1, "branch3.1", "Branch_3/Conv2d_0b_1x1")),
    ),
    # Figure 8, 17x17 -> 8x8.
    "reduction_b": (
        (
            _c("conv_1", 192, 1, "branch0.0", "Branch_0/Conv2d_0a_1x1"),
            _c("conv_2", 192, 3, "branch0.1", "Branch_0/Conv2d_1a_3x3", strides=2, padding="valid"),
        ),
        (
            _c("conv_1", 256, 1, "branch1.0", "Branch_1/Conv2d_0a_1x1"),
            _c("conv_2", 256, (1, 7), "branch1.1", "Branch_1/Conv2d_0b_1x7"),
            _c("conv_3", 320, (7, 1), "branch1.2", "Branch_1/Conv2d_0c_7x1"),
            _c("conv_4", 320, 3, "branch1.3", "Branch_1/Conv2d_1a_3x3", strides=2, padding="valid"),
        ),
        (MAX_POOL,),
    ),
    # Figure 6, 8x8 grid.
    "inception_c": (
        (_c("conv_1", 256, 1, "branch0", "Branch_0/Conv2d_0a_1x1"),),
        (
            _c("conv_1", 384, 1, "branch1_0", "Branch_1/Conv2d_0a_1x1"),
            (
                _c("conv_2a", 256, (1, 3), "branch1_1a", "Branch_1/Conv2d_0b_1x3"),
                _c("conv_2b", 256, (3, 1), "branch1_1b", "Branch_1/Conv2d_0c_3x1"),
            ),
        ),
        (
            _c("conv_1", 384, 1, "branch2_0", "Branch_2/Conv2d_0a_1x1"),
            _c("conv_2", 448, (3, 1), "branch2_1", "Branch_2/Conv2d_0b_3x1"),
            _c("conv_3", 512, (1, 3), "branch2_2", "Branch_2/Conv2d_0c_1x3"),
            (
                _c("conv_4a", 256, (1, 3), "branch2_3a", "Branch_2/Conv2d_0d_1x3"),
                _c("conv_4b", 256, (3, 1), "branch2_3b", "Branch_2/Conv2d_0e_3x1"),
            ),
        ),
        (AVG_POOL, _c("conv_1", 256, 1, "branch3.1", "Branch_3/Conv2d_0b_1x1")),
    ),
}

# Figure 3's three plain convolutions before the mixed parts of the stem.
STEM_CONVS = (
    _c("conv_1", 32, 3, "", "Conv2d_1a_3x3", strides=2, padding="valid"),
    _c("conv_2", 32, 3, "", "Conv2d_2a_3x3", padding="valid"),
    _c("conv_3", 64, 3, "", "Conv2d_2b_3x3"),
)

BATCH_NORM_EPSILON = 1e-3  # TF-slim's, kept by timm


def step_convs(step):
    """The Convs of one branch step: none for a pool, one, or the two of a split end."""
    if isinstance(step, Conv):
        return (step,)
    return () if isinstance(step, str) else step


def block_sequence(stackwise_num_blocks):
    """The blocks in data-flow order as (Keras name, block type, timm index, TF-slim scope) tuples.

    The plain stem convolutions are timm's `features.0`..`features.2`; blocks follow from `features.3`.
    TF-slim letters the blocks of one grid size Mixed_5b.., Mixed_6b.., Mixed_7b.. after their
    reduction (Mixed_6a, Mixed_7a).
    """
    num_a, num_b, num_c = stackwise_num_blocks
    sequence = [
        ("stem_mixed_3a", "stem_mixed_3a", "Mixed_3a"),
        ("stem_mixed_4a", "stem_mixed_4a", "Mixed_4a"),
        ("stem_mixed_5a", "stem_mixed_5a", "Mixed_5a"),
    ]
    sequence += [(f"inception_a_{i + 1}", "inception_a", f"Mixed_5{chr(ord('b') + i)}") for i in range(num_a)]
    sequence += [("reduction_a", "reduction_a", "Mixed_6a")]
    sequence += [(f"inception_b_{i + 1}", "inception_b", f"Mixed_6{chr(ord('b') + i)}") for i in range(num_b)]
    sequence += [("reduction_b", "reduction_b", "Mixed_7a")]
    sequence += [(f"inception_c_{i + 1}", "inception_c", f"Mixed_7{chr(ord('b') + i)}") for i in range(num_c)]
    first = len(STEM_CONVS)
    return [(name, kind, first + i, slim) for i, (name, kind, slim) in enumerate(sequence)]


def conv_units(stackwise_num_blocks):
    """Every convolution unit as (Keras prefix, Conv, timm prefix, TF-slim scope), in data-flow order."""
    units = [(f"stem_{c.name}", c, f"features.{i}", f"InceptionV4/{c.slim}") for i, c in enumerate(STEM_CONVS)]
    for name, kind, index, slim in block_sequence(stackwise_num_blocks):
        for b, branch in enumerate(BLOCKS[kind]):
            for step in branch:
                for conv in step_convs(step):
                    units.append(
                        (
                            f"{name}_branch_{b}_{conv.name}",
                            conv,
                            f"features.{index}.{conv.timm}",
                            f"InceptionV4/{slim}/{conv.slim}",
                        )
                    )
    return units


@keras.saving.register_keras_serializable(package="camenn")
class InceptionV4Backbone(preset_store.StoredPresets, keras_hub.models.Backbone):
    """InceptionV4 feature extractor: images in [-1, 1] -> the last 8x8 feature map (for 299x299).

    Stem, `stackwise_num_blocks` = (4, 7, 3) Inception-A/B/C blocks with Reduction-A and -B between them,
    every convolution followed by batch normalisation (epsilon 1e-3) and ReLU, exactly as TF-slim's and
    timm's InceptionV4; channels last. The output is the feature map, as for every keras-hub image
    backbone; global average pooling of it gives the 1536-dimensional image embedding (`output_dim`).
    Inputs must be at least 75x75; the model's own normalisation maps RGB [0, 255] to [-1, 1]
    (`InceptionV4ImageConverter`).

    Args:
        stackwise_num_blocks: numbers of Inception-A, Inception-B and Inception-C blocks. The paper: (4, 7, 3).
        width_multiplier: scales every convolution's number of filters (rounded, at least 1). 1.0 is the
            paper; smaller values make small test presets.
        image_shape: input shape (height, width, 3); None dimensions accept any size >= 75.
        dtype: dtype policy of the layers.

    Example:
    ```python
    import numpy as np
    from camenn.model.inception_v4 import InceptionV4Backbone

    backbone = InceptionV4Backbone.from_preset("inception_v4_tiny")
    feature_map = backbone(np.random.uniform(-1, 1, (2, 75, 75, 3)))
    assert feature_map.shape == (2, 1, 1, 192)

    # The paper's architecture, randomly initialised (image_shape=(None, None, 3) by default: any size >= 75):
    backbone = InceptionV4Backbone(image_shape=(299, 299, 3))
    assert backbone.output_shape == (None, 8, 8, 1536)
    ```
    """

    def __init__(
        self, stackwise_num_blocks=(4, 7, 3), width_multiplier=1.0, image_shape=(None, None, 3), dtype=None, **kwargs
    ):
        stackwise_num_blocks = tuple(int(n) for n in stackwise_num_blocks)
        if len(stackwise_num_blocks) != 3 or min(stackwise_num_blocks) < 1:
            raise ValueError(
                f"stackwise_num_blocks must be three positive counts (A, B, C), got {stackwise_num_blocks}"
            )
        if width_multiplier <= 0:
            raise ValueError(f"width_multiplier must be positive, got {width_multiplier}")

        def filters(n):
            return max(1, int(round(n * width_multiplier)))

        def unit(x, conv, prefix):
            x = keras.layers.Conv2D(
                filters(conv.filters),
                conv.kernel,
                strides=conv.strides,
                padding=conv.padding,
                use_bias=False,
                dtype=dtype,
                name=f"{prefix}_conv",
            )(x)
            x = keras.layers.BatchNormalization(epsilon=BATCH_NORM_EPSILON, dtype=dtype, name=f"{prefix}_bn")(x)
            return keras.layers.ReLU(dtype=dtype, name=f"{prefix}_relu")(x)

        def branch(x, steps, prefix):
            for step in steps:
                if step == MAX_POOL:
                    x = keras.layers.MaxPooling2D(
                        3, strides=2, padding="valid", dtype=dtype, name=f"{prefix}_max_pool"
                    )(x)
                elif step == AVG_POOL:
                    x = keras.layers.AveragePooling2D(
                        3, strides=1, padding="same", dtype=dtype, name=f"{prefix}_avg_pool"
                    )(x)
                elif isinstance(step, Conv):
                    x = unit(x, step, f"{prefix}_{step.name}")
                else:  # a split end: two convolutions of the same input, concatenated
                    x = keras.layers.Concatenate(dtype=dtype, name=f"{prefix}_concat")(
                        [unit(x, conv, f"{prefix}_{conv.name}") for conv in step]
                    )
            return x

        # === Functional Model ===
        image_input = keras.layers.Input(shape=image_shape, name="images")
        x = image_input
        for conv in STEM_CONVS:
            x = unit(x, conv, f"stem_{conv.name}")
        for name, kind, _, _ in block_sequence(stackwise_num_blocks):
            x = keras.layers.Concatenate(dtype=dtype, name=f"{name}_concat")(
                [branch(x, steps, f"{name}_branch_{b}") for b, steps in enumerate(BLOCKS[kind])]
            )
        super().__init__(inputs=image_input, outputs=x, dtype=dtype, **kwargs)

        # === Config ===
        self.stackwise_num_blocks = stackwise_num_blocks
        self.width_multiplier = width_multiplier
        self.image_shape = tuple(image_shape)
        self.output_dim = x.shape[-1]

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "stackwise_num_blocks": list(self.stackwise_num_blocks),
                "width_multiplier": self.width_multiplier,
                "image_shape": list(self.image_shape),
            }
        )
        return config


preset_store.register(inception_v4_presets.backbone_presets, InceptionV4Backbone)
