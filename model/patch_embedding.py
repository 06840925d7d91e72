"""The image encoder inside the model: photos -> one embedding per patch, for end-to-end training."""

import keras
from keras import ops

from camenn.model.patch_encoders import load_parts


@keras.saving.register_keras_serializable(package="camenn")
class PatchEmbedding(keras.layers.Layer):
    """Splits each image into a grid of equal patches and embeds every patch with an image backbone.

    Images [B, H, W, 3] (uint8 or float RGB in [0, 255]) -> embeddings [B, rows * cols, output_dim].
    The split is `camenn.preprocessing.images.split_into_patches`': patch (r, c) is
    image[r*h:(r+1)*h, c*w:(c+1)*w] with h = H // rows, w = W // cols, in reading order, the remainder
    dropped; each patch is then resized and normalised by the preset's image converter and embedded by
    its backbone (global average of the last feature map), exactly as `load_patch_encoder(encoder,
    preset)` does offline, so a model trained on cached embeddings can switch to this layer.

    Args:
        encoder: "inception_v4" or "efficientnet_lite0" (see `camenn.model.patch_encoders`).
        preset: a preset of that encoder, or a keras-hub preset folder holding one.
        grid: (rows, cols).

    Example:
    ```python
    import numpy as np

    layer = PatchEmbedding("inception_v4", "inception_v4_tiny", grid=(2, 2))
    assert layer(np.zeros((3, 150, 150, 3), "uint8")).shape == (3, 4, 192)  # 2 x 2 patches of 75 x 75
    ```
    """

    def __init__(self, encoder="inception_v4", preset="inception_v4_tiny", grid=(2, 2), **kwargs):
        super().__init__(**kwargs)
        rows, cols = (int(g) for g in grid)
        if rows < 1 or cols < 1:
            raise ValueError(f"grid must be (rows, cols) of positive counts, got {grid}")
        self.encoder, self.preset, self.grid = encoder, preset, (rows, cols)
        self.image_converter, self.backbone = load_parts(encoder, preset)
        self.pooling = keras.layers.GlobalAveragePooling2D(dtype=self.dtype_policy)
        self.num_patches = rows * cols
        self.output_dim = int(self.backbone.output_shape[-1])

    def call(self, images, training=None):
        rows, cols = self.grid
        shape = ops.shape(images)
        height, width = shape[1] // rows, shape[2] // cols
        # Float before the converter: run eagerly, keras-hub's converter rounds uint8 images after resizing.
        images = ops.cast(images, "float32")
        patches = ops.reshape(images[:, : rows * height, : cols * width, :], (-1, rows, height, cols, width, 3))
        patches = ops.reshape(ops.transpose(patches, (0, 1, 3, 2, 4, 5)), (-1, height, width, 3))
        embeddings = self.pooling(self.backbone(self.image_converter(patches), training=training))
        return ops.reshape(embeddings, (-1, self.num_patches, self.output_dim))

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.num_patches, self.output_dim)

    def get_config(self):
        config = super().get_config()
        config.update({"encoder": self.encoder, "preset": self.preset, "grid": list(self.grid)})
        return config
