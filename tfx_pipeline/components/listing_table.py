"""`ListingTable`: fills the trained model's listing table from the catalog, once per model version.

The Trainer's SavedModel carries an empty listing table (`camenn.model.camenn.export`). This step runs
the model's own `encode_listings` signature over every good listing `camenn preprocess` wrote and writes
the SavedModel again with the table filled (`camenn.serving.listings`): each listing's states and its
ITA and TIA scores are then computed once per version, and the `rank` signature scores a request from
item ids. The Evaluator judges, and the Pusher pushes, this model. A model without a listing table (a
baseline, or the full-attention alternative) is passed on unchanged.
"""

import logging
import shutil

from tfx import v1 as tfx
from tfx.utils import path_utils

from camenn.tfx_pipeline.components.artifacts import ItemFeatures

logger = logging.getLogger(__name__)


@tfx.dsl.components.component
def ListingTable(
    model: tfx.dsl.components.InputArtifact[tfx.types.standard_artifacts.Model],
    items: tfx.dsl.components.InputArtifact[ItemFeatures],
    table_model: tfx.dsl.components.OutputArtifact[tfx.types.standard_artifacts.Model],
    code_version: tfx.dsl.components.Parameter[str] = "",
) -> None:
    """Writes `model` with its listing table filled from `items` (module docstring)."""
    del code_version  # part of the cache key only (code_version.py)
    from camenn.serving import listings

    source = path_utils.serving_model_path(model.uri)
    destination = path_utils.serving_model_dir(table_model.uri)
    if not listings.has_listing_table(source):
        shutil.copytree(source, destination)
        logger.info("the model has no listing table (no listing-only attention): passed on unchanged")
        return
    counts = listings.write_listing_table(source, listings.read_listing_features(items.uri), destination)
    table_model.set_int_custom_property("listings", counts["listings"])
    logger.info("listing table: %d listings encoded into %s", counts["listings"], destination)
