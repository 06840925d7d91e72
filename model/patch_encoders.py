"""Frozen image encoders for photo patches: uint8 patches -> one pooled embedding per patch.

An encoder is a keras-hub preset folder holding an image backbone and its `ImageConverter` (resize to the
backbone's input, then the backbone's own normalisation); the embedding is the global average of the
backbone's last feature map. `load_patch_encoder` serves `camenn preprocess` (through the Beam transform
`camenn.preprocessing.patch_embedding.EmbedPatches`) and `camenn.model.patch_embedding.PatchEmbedding`
(the same computation inside the model, for end-to-end training).

| encoder | presets | input | output_dim |
| --- | --- | --- | --- |
| `inception_v4` | `inception_v4_tiny` (tests), `inception_v4` (random), a converted folder | 75 / 299 | 192 / 1536 |
| `efficientnet_lite0` | `efficientnet_lite0_imagenet` (ImageNet weights) | 224 | 1280 |
"""

import numpy as np

ENCODER_PRESETS = {
    "inception_v4": ("inception_v4_tiny", "inception_v4"),
    "efficientnet_lite0": ("efficientnet_lite0_imagenet",),
}


def _backbone_class(encoder):
    # Importing the families registers all their classes, so keras-hub can deserialise any of their presets.
    from camenn.model.efficientnet_lite import EfficientNetLiteBackbone
    from camenn.model.inception_v4 import InceptionV4Backbone

    return {"inception_v4": InceptionV4Backbone, "efficientnet_lite0": EfficientNetLiteBackbone}[encoder]


def load_parts(encoder: str, preset: str):
    """(image converter, backbone) of `encoder` from `preset`: a name of ENCODER_PRESETS[encoder] or a
    keras-hub preset folder holding that encoder's backbone (e.g. one `camenn presets convert-inception-v4`
    wrote)."""
    import keras_hub

    from camenn.model import preset_store

    if encoder not in ENCODER_PRESETS:
        raise ValueError(f"unknown image encoder {encoder!r}; choose one of {', '.join(ENCODER_PRESETS)}")
    if preset in preset_store.names() and preset not in ENCODER_PRESETS[encoder]:
        raise ValueError(
            f"preset {preset!r} is not a preset of encoder {encoder!r} "
            f"(its presets: {', '.join(ENCODER_PRESETS[encoder])})"
        )
    backbone_class = _backbone_class(encoder)
    folder = preset_store.resolve(preset)
    backbone = keras_hub.models.Backbone.from_preset(folder)
    if not isinstance(backbone, backbone_class):
        raise ValueError(f"preset {preset!r} holds a {type(backbone).__name__}, not an {encoder} backbone")
    converter = keras_hub.layers.ImageConverter.from_preset(folder)
    return converter, backbone


class PatchEncoder:
    """A frozen image encoder: `encoder(patches)` maps uint8 [N, h, w, 3] to float32 [N, output_dim].

    Each patch is resized to `image_size` and normalised by the preset's image converter, then embedded
    by the backbone in batches of `batch_size`; the embedding is the global average of the last feature
    map. `embed_groups` does the same for several arrays of different patch sizes at once, batching
    across them (what the Beam transform does with the patches of many photos).

    Args:
        image_converter: keras-hub ImageConverter (resize + normalisation).
        backbone: keras-hub image Backbone whose output is a feature map [N, h', w', C].
        batch_size: patches per forward pass.

    Example:
    ```python
    import numpy as np

    encoder = load_patch_encoder("inception_v4", "inception_v4_tiny")
    assert encoder(np.zeros((4, 120, 90, 3), "uint8")).shape == (4, 192)
    ```
    """

    def __init__(self, image_converter, backbone, batch_size=32):
        import keras
        import tensorflow as tf

        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        self.image_converter = image_converter
        self.backbone = backbone
        self.batch_size = batch_size
        self.image_size = tuple(image_converter.image_size)
        self.output_dim = int(backbone.output_shape[-1])
        pooling = keras.layers.GlobalAveragePooling2D(dtype="float32")
        # One trace each, whatever the patch sizes and batch sizes. The cast comes first because
        # keras-hub's converter rounds a uint8 image back to uint8 after resizing when run eagerly.
        self._prepare = tf.function(
            lambda x: image_converter(tf.cast(x, tf.float32)),
            input_signature=[tf.TensorSpec([None, None, None, 3], tf.uint8)],
        )
        self._embed = tf.function(
            lambda x: pooling(backbone(x, training=False)),
            input_signature=[tf.TensorSpec([None, *self.image_size, 3], tf.float32)],
        )

    def __call__(self, patches) -> np.ndarray:
        return self.embed_groups([patches])[0]

    def embed_groups(self, groups) -> list:
        """[uint8 [N_i, h_i, w_i, 3]] -> [float32 [N_i, output_dim]], one forward pass per batch_size
        patches across all groups."""
        prepared = [self.prepare(g) for g in groups]
        sizes = [len(p) for p in prepared]
        if not sum(sizes):
            return [np.zeros((0, self.output_dim), np.float32) for _ in groups]
        stacked = np.concatenate(prepared)
        embeddings = np.concatenate(
            [self._embed(stacked[i : i + self.batch_size]).numpy() for i in range(0, len(stacked), self.batch_size)]
        )
        return np.split(embeddings, np.cumsum(sizes)[:-1])

    def prepare(self, patches) -> np.ndarray:
        """uint8 [N, h, w, 3] -> float32 [N, *image_size, 3], resized and normalised."""
        patches = np.asarray(patches)
        if patches.dtype != np.uint8 or patches.ndim != 4 or patches.shape[-1] != 3:
            raise ValueError(f"patches must be uint8 [N, h, w, 3] RGB, got {patches.dtype} {patches.shape}")
        if patches.shape[0] == 0:
            return np.zeros((0, *self.image_size, 3), np.float32)
        if min(patches.shape[1:3]) < 1:
            raise ValueError(f"patches have no pixels: shape {patches.shape}")
        return self._prepare(patches).numpy()


def load_patch_encoder(encoder: str, preset: str, batch_size: int = 32) -> PatchEncoder:
    """The frozen patch encoder `encoder` with the weights of `preset` (see ENCODER_PRESETS); loads offline.

    Example:
    ```python
    import numpy as np
    from camenn.model.patch_encoders import load_patch_encoder

    encoder = load_patch_encoder("efficientnet_lite0", "efficientnet_lite0_imagenet")
    assert encoder.output_dim == 1280 and tuple(encoder.image_size) == (224, 224)
    patches = np.random.randint(0, 256, (6, 96, 96, 3), dtype="uint8")  # uint8 [N, h, w, 3], resized to 224
    embeddings = encoder(patches)
    assert embeddings.shape == (6, 1280) and embeddings.dtype == np.float32
    ```
    """
    return PatchEncoder(*load_parts(encoder, preset), batch_size=batch_size)
