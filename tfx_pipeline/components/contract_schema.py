"""`ContractSchemaGen`: the curated schema of the raw tf.Examples, from the data contract, not the data.

SchemaGen infers a schema from the statistics of the very data it should judge, so a column whose type
changed would simply get a new type. This component writes the schema the data must follow instead:
every feature's type, presence and exact length (names from camenn.model.features) and value ranges,
with the lengths that depend on configuration (text length, text tokens and their width, number of
patches and their width) read from the preprocessing report of this run. ExampleValidator checks
the statistics against it, and the pipeline stops before Transform on any anomaly.
"""

import os

from tensorflow_metadata.proto.v0 import schema_pb2
from tfx import v1 as tfx
from tfx.utils import io_utils

from camenn.model import features as F
from camenn.tfx_pipeline.components.artifacts import PreprocessingReport

BYTES, INT, FLOAT = schema_pb2.BYTES, schema_pb2.INT, schema_pb2.FLOAT

# Raw tf.Example features: (type, length; None = configured, see build_schema).
RAW_FEATURES = {
    F.ITEM_ID: (BYTES, 1),
    F.MERCHANT_ID: (BYTES, 1),
    F.CATEGORY: (BYTES, 1),
    F.COARSE_CATEGORY: (BYTES, 1),
    F.MERCHANT_SIZE: (BYTES, 1),
    F.REQUEST_ID: (BYTES, 1),
    F.SHOPPER_ID: (BYTES, 1),
    F.PRICE: (FLOAT, 1),
    F.DISTANCE_KM: (FLOAT, 1),
    F.TIMESTAMP: (INT, 1),
    F.HOUR: (INT, 1),
    F.LABEL: (INT, 1),
    F.TEXT_TOKEN_IDS: (INT, None),
    F.TEXT_EMBEDDINGS: (FLOAT, None),
    F.PATCH_EMBEDDINGS: (FLOAT, None),
}
INT_RANGES = {F.HOUR: (0, 23), F.LABEL: (0, 1), F.TIMESTAMP: (0, None), F.TEXT_TOKEN_IDS: (0, None)}
FLOAT_RANGES = {F.PRICE: (0.0, None), F.DISTANCE_KM: (0.0, None)}


def build_schema(
    max_text_length: int, text_floats: int, num_patches: int, patch_dim: int, min_examples: int = 1
) -> schema_pb2.Schema:
    """`text_floats`: num_text_tokens x text_dim."""
    schema = schema_pb2.Schema()
    lengths = {
        F.TEXT_TOKEN_IDS: max_text_length,
        F.TEXT_EMBEDDINGS: text_floats,
        F.PATCH_EMBEDDINGS: num_patches * patch_dim,
    }
    for name, (dtype, length) in RAW_FEATURES.items():
        feature = schema.feature.add(name=name, type=dtype)
        feature.presence.min_fraction = 1.0
        feature.presence.min_count = 1
        feature.shape.dim.add(size=length or lengths[name])
        if name in INT_RANGES:
            low, high = INT_RANGES[name]
            feature.int_domain.min = low
            if high is not None:
                feature.int_domain.max = high
        if name in FLOAT_RANGES:
            low, high = FLOAT_RANGES[name]
            feature.float_domain.min = low
            if high is not None:
                feature.float_domain.max = high
    schema.dataset_constraints.min_examples_count = min_examples
    return schema


@tfx.dsl.components.component
def ContractSchemaGen(
    report: tfx.dsl.components.InputArtifact[PreprocessingReport],
    schema: tfx.dsl.components.OutputArtifact[tfx.types.standard_artifacts.Schema],
    min_examples: tfx.dsl.components.Parameter[int] = 1,
    code_version: tfx.dsl.components.Parameter[str] = "",
) -> None:
    """Writes `schema.pbtxt` for the raw examples this run's preprocessing produced (module docstring)."""
    del code_version  # part of the cache key only (code_version.py)
    summary = report.get_json_value_custom_property("summary")
    # No listing kept (every photo refused) leaves no encoding widths, and no example to check against them:
    # ExampleValidator then finds the splits empty and AnomaliesGate stops the run, saying so.
    built = build_schema(
        int(summary["max_text_length"]),
        int(summary["num_text_tokens"]) * int(summary["text_dim"] or 0),
        int(summary["num_patches"]),
        int(summary["patch_dim"] or 0),
        min_examples,
    )
    io_utils.write_pbtxt_file(os.path.join(schema.uri, "schema.pbtxt"), built)
