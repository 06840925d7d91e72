"""CameNN: cross-modal alignment with a mixture of transformer experts for intra-city retail ranking."""

import os

# `tf.keras` is Keras 2 (the tf_keras package) in every CameNN process: tf.Transform, TFX's internals and
# TensorFlow Recommenders (the retrieval model) need it so, and TensorFlow fixes which Keras `tf.keras` is
# the first time anything uses it, which in a pipeline process can be before tf.Transform's own import
# would set this. The ranker is Keras 3 through `import keras`, which this does not change (BUILD.md).
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

__version__ = "0.1.0"
