"""Artifact types CameNN's own components emit beside TFX's standard ones."""

from tfx.types import artifact


class ItemFeatures(artifact.Artifact):
    """One tf.Example per good listing (features.ITEM_FEATURES), as `*.tfrecord.gz` under the uri.

    The serving client's item cache and the Evaluator's pool of ITA/TIA negatives.
    """

    TYPE_NAME = "camenn.ItemFeatures"  # KFP wants <namespace>.<Name>


class PreprocessingReport(artifact.Artifact):
    """`summary.json` (rows in, out and quarantined by reason; the schema-like summary) and
    `quarantine/*.csv` (every bad row with its reason) of one preprocessing run."""

    TYPE_NAME = "camenn.PreprocessingReport"


class ListingAuditReport(artifact.Artifact):
    """`listing_audit.csv`: every listing's out-of-fold ITA and TIA scores (camenn.serving.audit reads it)."""

    TYPE_NAME = "camenn.ListingAuditReport"
