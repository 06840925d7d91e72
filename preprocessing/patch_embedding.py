"""Beam: photo patches -> patch embeddings with a frozen image encoder, batched across photos.

Built on Beam's RunInference, which loads the model once per worker process (in its DoFn's setup, shared
by the worker's threads), batches elements with `BatchElements` and reports inference metrics
(`EmbedPatches` namespace: inference counts, batch sizes, latencies, model load time).
"""

from typing import Iterable, Optional, Sequence, Tuple

import apache_beam as beam
import numpy as np
from apache_beam.ml.inference.base import ModelHandler, RunInference

KeyedPatches = Tuple[str, np.ndarray]


class PatchEncoderHandler(ModelHandler[KeyedPatches, KeyedPatches, object]):
    """RunInference model handler over `camenn.model.patch_encoders.load_patch_encoder(encoder, preset)`.

    Elements are (key, uint8 [P, h, w, 3]); a batch holds about `batch_size` patches (elements are
    weighed by their number of patches) from photos of any sizes, embedded in one forward pass.
    """

    def __init__(self, encoder: str, preset: str, batch_size: int = 32):
        super().__init__()
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        self.encoder, self.preset, self.batch_size = encoder, preset, batch_size

    def load_model(self):
        from camenn.model.patch_encoders import load_patch_encoder

        return load_patch_encoder(self.encoder, self.preset, batch_size=self.batch_size)

    def run_inference(
        self, batch: Sequence[KeyedPatches], model, inference_args: Optional[dict] = None
    ) -> Iterable[KeyedPatches]:
        keys = [key for key, _ in batch]
        return list(zip(keys, model.embed_groups([patches for _, patches in batch])))

    def get_num_bytes(self, batch: Sequence[KeyedPatches]) -> int:
        return sum(np.asarray(patches).nbytes for _, patches in batch)  # the default pickles the batch

    def get_metrics_namespace(self) -> str:
        return "EmbedPatches"

    def batch_elements_kwargs(self):
        return {
            "min_batch_size": self.batch_size,
            "max_batch_size": self.batch_size,
            "element_size_fn": lambda element: len(element[1]),
        }


class EmbedPatches(beam.PTransform):
    """PCollection[(key, uint8 [P, h, w, 3])] -> PCollection[(key, float32 [P, D])].

    Every photo's patches (from `camenn.preprocessing.images.split_into_patches`) go through the frozen
    image encoder `encoder` with preset `preset` (see `camenn.model.patch_encoders`): resized to the
    backbone's input, normalised, embedded, average-pooled. The encoder loads once per worker; patches of
    many photos share a forward pass of about `batch_size` patches. A malformed element (not uint8
    RGB [P, h, w, 3]) fails the pipeline with a message naming the problem: decode and quarantine
    photos before this step.

    Example:
    ```python
    import apache_beam as beam
    import numpy as np
    from apache_beam.testing.util import assert_that, equal_to

    patches = np.zeros((4, 96, 96, 3), "uint8")  # one photo's 2 x 2 patches (`split_into_patches`)
    with beam.Pipeline() as p:
        embeddings = (p | beam.Create([("item-1", patches)])
                        | EmbedPatches("inception_v4", "inception_v4_tiny", batch_size=32))
        shapes = embeddings | beam.MapTuple(lambda key, embedding: (key, embedding.shape, str(embedding.dtype)))
        assert_that(shapes, equal_to([("item-1", (4, 192), "float32")]))
    ```
    """

    def __init__(self, encoder: str, preset: str, batch_size: int = 32):
        super().__init__()
        self.handler = PatchEncoderHandler(encoder, preset, batch_size)

    def expand(self, pcoll):
        return pcoll | "RunPatchEncoder" >> RunInference(self.handler)
