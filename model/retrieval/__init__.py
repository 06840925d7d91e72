"""Candidate retrieval: a two-tower model trained with TensorFlow Recommenders, beside the Keras 3 ranker.

TensorFlow Recommenders is built on Keras 2 (`tf.keras` with `TF_USE_LEGACY_KERAS=1`, i.e. the `tf_keras`
package), so the retrieval model is a Keras 2 model and never a layer of the Keras 3 ranker: the two meet
only in serving, through their SavedModels, which hold core TensorFlow ops alone. This package selects
Keras 2 for `tf.keras` before TensorFlow Recommenders is imported, as tf.Transform does when it is imported
(BUILD.md, "Two Keras versions").
"""

import os

# tf.keras resolves to Keras 2 or 3 on its first use; tf.Transform sets the same variable, so the
# pipeline's processes already agree. `import keras` (the ranker) is Keras 3 either way.
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

from camenn.model.retrieval.retrieval_model import TwoTowerRetrieval, check_keras_2  # noqa: E402
from camenn.model.retrieval.retrieval_presets import retrieval_presets  # noqa: E402
from camenn.model.retrieval.retrieval_towers import CandidateTower, QueryTower  # noqa: E402
