"""`camenn audit`: finds the listings whose photo and text disagree, so merchants can fix them.

Every listing has two alignment scores: ITA (for this image, is this the right text?) and TIA (for this
text, is this the right image?). A listing is flagged when either is below the threshold; listings are
reported worst first by their alignment, min(ITA, TIA). A low ITA points at the text (it may describe
another product), a low TIA at the photo (vague, cropped, dark, or of something else).

The scores come from the pipeline's ListingAudit step (`camenn.tfx_pipeline.components.listing_audit`),
not from the served model: that model trained on every listing's own (photo, text) pair as a positive,
flawed or not, so it learned the flawed pairs as aligned and grades its own homework. The audit scores
each listing with a model that never saw that listing (out of fold), as confident learning does for
label errors, and writes one CSV per run (`REPORT_FILE`).

`evaluate_audit` measures the audit against known truth (the embedded sample's data/sample/truth.csv,
whose `quality` column says ok, inaccurate_text or vague_photo).
"""

import csv
import dataclasses
import glob
import os
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence, Union

import numpy as np

from camenn.model import features

DEFAULT_THRESHOLD = 0.5
REPORT_FILE = "listing_audit.csv"
REPORT_COLUMNS = ("item_id", "merchant_id", "category", "title", "ita", "tia", "fold")
CSV_COLUMNS = ("rank", "merchant_id", "item_id", "category", "title", "ita", "tia", "alignment", "flagged", "issue")


@dataclasses.dataclass(frozen=True)
class ListingAudit:
    item_id: str
    merchant_id: str
    category: str
    ita: float
    tia: float
    title: str = ""

    @property
    def alignment(self) -> float:
        """How well photo and text agree: the weaker of the two alignment scores."""
        return min(self.ita, self.tia)

    def issue(self, threshold: float = DEFAULT_THRESHOLD) -> str:
        low_text, low_photo = self.ita < threshold, self.tia < threshold
        if low_text and low_photo:
            return "photo and text disagree: check both"
        if low_text:
            return "the text may not describe the photo: check title and description"
        if low_photo:
            return "the photo may not show the product described: vague, cropped, dark or another product"
        return ""


def newest_report(pipeline_root: Union[str, Path]) -> Path:
    """The newest ListingAudit report under a pipeline root (outputs/pipelines/camenn by default)."""
    reports = glob.glob(os.path.join(str(pipeline_root), "ListingAudit", "*", "*", REPORT_FILE))
    if not reports:
        raise FileNotFoundError(
            f"no listing audit under {pipeline_root}: run `camenn pipeline run` first, or pass --report"
        )
    return Path(max(reports, key=lambda p: int(Path(p).parent.name) if Path(p).parent.name.isdigit() else -1))


def read_report(path: Union[str, Path]) -> List[ListingAudit]:
    """Every listing of a ListingAudit report."""
    with Path(path).open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        missing = set(REPORT_COLUMNS) - set(reader.fieldnames or ())
        if missing:
            raise ValueError(f"{path} is not a listing audit report: it lacks {sorted(missing)}")
        return [
            ListingAudit(
                row["item_id"], row["merchant_id"], row["category"], float(row["ita"]), float(row["tia"]), row["title"]
            )
            for row in reader
        ]


def audit_listings(audits: Sequence[ListingAudit], merchant_id: Optional[str] = None) -> List[ListingAudit]:
    """The listings of `merchant_id` (all when None), worst alignment first.

    Raises KeyError when the merchant has no listing in the report.
    """
    chosen = [a for a in audits if merchant_id is None or a.merchant_id == merchant_id]
    if not chosen:
        raise KeyError(f"merchant {merchant_id!r} has no listings in the audit")
    return sorted(chosen, key=lambda a: (a.alignment, a.item_id))


def flagged(audits: Sequence[ListingAudit], threshold: float = DEFAULT_THRESHOLD) -> List[ListingAudit]:
    return [a for a in audits if a.issue(threshold)]


def write_csv(audits: Sequence[ListingAudit], path: Union[str, Path], threshold: float = DEFAULT_THRESHOLD) -> Path:
    """Every audited listing, worst first, with its scores and what to check."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(CSV_COLUMNS)
        for rank, a in enumerate(audits, 1):
            issue = a.issue(threshold)
            writer.writerow(
                [
                    rank,
                    a.merchant_id,
                    a.item_id,
                    a.category,
                    a.title,
                    f"{a.ita:.4f}",
                    f"{a.tia:.4f}",
                    f"{a.alignment:.4f}",
                    int(bool(issue)),
                    issue,
                ]
            )
    return path


def format_table(audits: Sequence[ListingAudit], threshold: float = DEFAULT_THRESHOLD) -> str:
    columns = [
        ("merchant", [a.merchant_id for a in audits]),
        ("item", [a.item_id for a in audits]),
        ("category", [a.category for a in audits]),
        ("title", [a.title[:32] for a in audits]),
    ]
    widths = [max(len(title), *(len(v) for v in values)) for title, values in columns]
    header = "  ".join(t.ljust(w) for (t, _), w in zip(columns, widths)) + f"  {'ITA':>5}  {'TIA':>5}  issue"
    lines = [header, "-" * len(header)]
    for i, a in enumerate(audits):
        cells = "  ".join(values[i].ljust(w) for (_, values), w in zip(columns, widths))
        lines.append(f"{cells}  {a.ita:5.3f}  {a.tia:5.3f}  {a.issue(threshold)}")
    return "\n".join(lines)


def read_truth(path: Union[str, Path]) -> Dict[str, str]:
    """item_id -> quality from a truth file with columns item_id and quality (ok, inaccurate_text,
    vague_photo, ...)."""
    with Path(path).open(newline="") as f:
        reader = csv.DictReader(f)
        missing = {"item_id", "quality"} - set(reader.fieldnames or ())
        if missing:
            raise ValueError(f"{path} lacks column(s) {sorted(missing)}")
        return {row["item_id"]: row["quality"] for row in reader}


def evaluate_audit(
    audits: Sequence[ListingAudit], truth: Mapping[str, str], threshold: float = DEFAULT_THRESHOLD
) -> Dict[str, float]:
    """How well the audit finds the listings the truth calls inaccurate.

    The score is misalignment, 1 - min(ITA, TIA); positives are listings whose quality is not "ok".
    Listings missing from the truth (or from the audit) are left out. Returns:
        auc: ROC AUC of misalignment against "not ok" (0.5 is chance);
        auc_<quality>: the same, that kind of defect against the ok listings;
        precision, recall: of the flag (either score under `threshold`);
        listings, inaccurate: how many were evaluated, and how many of them are not ok.
    """
    from sklearn.metrics import roc_auc_score

    scored = [(a, truth[a.item_id]) for a in audits if a.item_id in truth]
    if not scored:
        raise ValueError("no audited listing appears in the truth")
    misalignment = np.array([1.0 - a.alignment for a, _ in scored])
    quality = np.array([q for _, q in scored])
    positive = quality != features.OK_QUALITY
    is_flagged = np.array([bool(a.issue(threshold)) for a, _ in scored])
    result = {"listings": float(len(scored)), "inaccurate": float(positive.sum())}
    if 0 < positive.sum() < len(scored):
        result["auc"] = float(roc_auc_score(positive, misalignment))
        for kind in sorted(set(quality[positive])):
            subset = (quality == kind) | ~positive
            result[f"auc_{kind}"] = float(roc_auc_score(quality[subset] == kind, misalignment[subset]))
    result["precision"] = float(positive[is_flagged].mean()) if is_flagged.any() else 0.0
    result["recall"] = float(is_flagged[positive].mean()) if positive.any() else 0.0
    return result
