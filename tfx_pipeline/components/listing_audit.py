"""`ListingAudit`: every listing's ITA and TIA from a model that never trained on it, for `camenn audit`.

The served model's own ITA and TIA cannot audit the listings it trained on (it learned their pairs,
flawed or not, as aligned). This step scores each listing out of fold (`camenn.tfx_pipeline.out_of_fold`):
CameNN with the alignment heads alone, the same preset as the ranker, trained once per fold on the other
folds' listings. It writes `listing_audit.csv` (item_id, merchant_id, category, title, ita, tia, fold),
which `camenn audit` reads. With a per-listing quality file (the sample's truth.csv) it also records how
well the scores find the listings the file calls flawed, as the `audit_auc` property; the file is read
only after the scores exist.
"""

import csv
import io
import logging
import os

import tensorflow as tf
from tfx import v1 as tfx

from camenn.model import features as F
from camenn.tfx_pipeline.components.artifacts import ItemFeatures, ListingAuditReport
from camenn.tfx_pipeline.configs import TrainerSettings

logger = logging.getLogger(__name__)


def transformed_listings(tft_output, raw: dict) -> dict:
    """The listing side of the model inputs for raw listing features (as OUT/items holds them)."""
    spec = tft_output.raw_feature_spec()
    tensors = {
        name: tf.constant(
            value.reshape(len(value), *spec[name].shape) if spec[name].shape else value, dtype=spec[name].dtype
        )
        for name, value in raw.items()
        if name in spec and name in F.LISTING_INPUTS
    }
    transformed = tft_output.transform_raw_features(tensors)
    return {name: value.numpy() for name, value in transformed.items() if name in F.LISTING_INPUTS}


@tfx.dsl.components.component
def ListingAudit(
    items: tfx.dsl.components.InputArtifact[ItemFeatures],
    transform_graph: tfx.dsl.components.InputArtifact[tfx.types.standard_artifacts.TransformGraph],
    audit: tfx.dsl.components.OutputArtifact[ListingAuditReport],
    settings: tfx.dsl.components.Parameter[str],
    code_version: tfx.dsl.components.Parameter[str],
    num_folds: tfx.dsl.components.Parameter[int] = 5,
    epochs: tfx.dsl.components.Parameter[int] = 30,
    listing_quality_file: tfx.dsl.components.Parameter[str] = "",
) -> None:
    """Writes the out-of-fold listing audit (module docstring).

    `settings`: the fold models' configs.TrainerSettings as JSON (the audit's model preset, the alignment
    tasks only); `code_version` is part of the cache key only.
    """
    import tensorflow_transform as tft

    from camenn.serving import audit as audit_report
    from camenn.serving.listings import read_listing_features
    from camenn.tfx_pipeline import out_of_fold, trainer

    del code_version
    tf.config.experimental.enable_op_determinism()
    tft_output = tft.TFTransformOutput(transform_graph.uri)
    raw = read_listing_features(items.uri)
    listings = transformed_listings(tft_output, raw)
    fold_settings = TrainerSettings.from_json(settings)
    item_ids = list(raw[F.ITEM_ID])
    folds = out_of_fold.assign_folds(item_ids, num_folds, fold_settings.seed)
    fit = out_of_fold.fit_alignment_model(
        listings,
        lambda: trainer.build_model(fold_settings, tft_output, "float32"),
        epochs=epochs,
        batch_size=fold_settings.batch_size,
        seed=fold_settings.seed,
        learning_rate=fold_settings.learning_rate,
    )
    scores = out_of_fold.out_of_fold_scores(len(item_ids), folds, fit)

    text = io.StringIO()
    writer = csv.writer(text)
    writer.writerow(audit_report.REPORT_COLUMNS)
    for k, item_id in enumerate(item_ids):
        writer.writerow(
            [
                item_id.decode(),
                raw[F.MERCHANT_ID][k].decode(),
                raw[F.CATEGORY][k].decode(),
                raw[F.TITLE][k].decode(),
                f"{scores[F.ITA][k]:.6f}",
                f"{scores[F.TIA][k]:.6f}",
                folds[k],
            ]
        )
    with tf.io.gfile.GFile(os.path.join(audit.uri, audit_report.REPORT_FILE), "w") as f:
        f.write(text.getvalue())
    audit.set_int_custom_property("listings", len(item_ids))
    if listing_quality_file:
        audits = audit_report.read_report(os.path.join(audit.uri, audit_report.REPORT_FILE))
        result = audit_report.evaluate_audit(audits, audit_report.read_truth(listing_quality_file))
        audit.set_json_value_custom_property("against_truth", result)
        logger.info(
            "the audit finds the listings %s calls flawed at ROC AUC %.3f",
            listing_quality_file,
            result.get("auc", float("nan")),
        )
