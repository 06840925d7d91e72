"""Beam: listing token ids -> pooled text tokens with a frozen BERT, batched across texts.

Built on Beam's RunInference like `camenn.preprocessing.patch_embedding`: the encoder loads once per
worker, texts of many listings share a forward pass, and inference metrics go to the `EmbedTexts`
namespace.
"""

from typing import Iterable, Optional, Sequence, Tuple

import apache_beam as beam
import numpy as np
from apache_beam.ml.inference.base import ModelHandler, RunInference

KeyedTokens = Tuple[str, np.ndarray]


class TextEncoderHandler(ModelHandler[KeyedTokens, KeyedTokens, object]):
    """RunInference model handler over `camenn.model.text_encoders.load_text_encoder(preset, num_tokens)`.

    Elements are (key, int [length] token ids); results are (key, float32 [num_tokens, dim]).
    """

    def __init__(self, preset: str, num_tokens: int, batch_size: int = 64):
        super().__init__()
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        self.preset, self.num_tokens, self.batch_size = preset, num_tokens, batch_size

    def load_model(self):
        from camenn.model.text_encoders import load_text_encoder

        return load_text_encoder(self.preset, self.num_tokens, batch_size=self.batch_size)

    def run_inference(
        self, batch: Sequence[KeyedTokens], model, inference_args: Optional[dict] = None
    ) -> Iterable[KeyedTokens]:
        embeddings = model(np.stack([np.asarray(ids) for _, ids in batch]))
        return [(key, embedding) for (key, _), embedding in zip(batch, embeddings)]

    def get_num_bytes(self, batch: Sequence[KeyedTokens]) -> int:
        return sum(np.asarray(ids).nbytes for _, ids in batch)

    def get_metrics_namespace(self) -> str:
        return "EmbedTexts"

    def batch_elements_kwargs(self):
        return {"min_batch_size": 1, "max_batch_size": self.batch_size}


class EmbedTexts(beam.PTransform):
    """PCollection[(key, int [length] token ids)] -> PCollection[(key, float32 [num_tokens, dim])].

    Example:
    ```python
    import apache_beam as beam
    import numpy as np
    from apache_beam.testing.util import assert_that, equal_to

    token_ids = np.array([101, 7592, 2088, 102] + [0] * 60)  # [CLS] hello world [SEP], padded to 64
    with beam.Pipeline() as p:
        embeddings = (p | beam.Create([("text-1", token_ids)])
                        | EmbedTexts("bert_tiny", num_tokens=4))
        shapes = embeddings | beam.MapTuple(lambda key, embedding: (key, embedding.shape, str(embedding.dtype)))
        assert_that(shapes, equal_to([("text-1", (4, 32), "float32")]))
    ```
    """

    def __init__(self, preset: str, num_tokens: int, batch_size: int = 64):
        super().__init__()
        self.handler = TextEncoderHandler(preset, num_tokens, batch_size)

    def expand(self, pcoll):
        return pcoll | "RunTextEncoder" >> RunInference(self.handler)
