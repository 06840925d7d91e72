"""`camenn rank` and `camenn audit` (and their Python APIs): ranking by item id against a real server,
unknown ids named while the rest is ranked, and the audit report."""

import argparse
import csv

import numpy as np
import pytest
import tensorflow as tf
from serving_helpers import MERCHANTS, dense_inputs, predict_request

from camenn.model import features as F
from camenn.serving import audit, cli
from camenn.serving.client import RankingClient, UnknownItemsError


def run_verb(*argv):
    parser = argparse.ArgumentParser()
    cli.register(parser.add_subparsers())
    args = parser.parse_args(argv)
    return args.func(args)


def test_rank_by_item_id_gives_the_full_models_scores_ranked_by_cvr(served, catalog):
    server, stubs = served
    items, _ = catalog
    candidates = [items[i][F.ITEM_ID] for i in (3, 10, 11, 20, 35)]
    distances = [0.5, 1, 2, 3, 4]
    with RankingClient(port=server.port) as client:
        ranked = client.rank("shopper_9", candidates, hour=18, distance_km=distances, with_titles=True)
        scores = client.score("shopper_9", candidates, hour=18, distance_km=distances)
    assert sorted(item.item_id for item in ranked) == sorted(candidates) and not ranked.unknown_item_ids
    cvrs = [item.cvr for item in ranked]
    assert cvrs == sorted(cvrs, reverse=True)
    # The same rows through the whole model (`dense`, every listing feature sent): the same scores.
    arrays = dense_inputs([items[i] for i in (3, 10, 11, 20, 35)], n=5, shopper="shopper_9")
    arrays[F.HOUR] = np.full(5, 18, np.int64)
    arrays[F.DISTANCE_KM] = np.array(distances, np.float32)
    full = stubs.predict.Predict(predict_request(arrays), timeout=10).outputs
    for task in F.TASKS:
        np.testing.assert_allclose(scores[task], tf.make_ndarray(full[task]), rtol=1e-5, atol=1e-6)
    titles = {item[F.ITEM_ID]: item[F.TITLE] for item in items}
    assert all(item.title == titles[item.item_id] for item in ranked)


def test_rank_verb_prints_the_ranking_with_titles(served, catalog, capsys):
    server, _ = served
    code = run_verb(
        "rank",
        "--user",
        "shopper_1",
        "--items",
        "item_000,item_005,item_010",
        "--hour",
        "9",
        "--port",
        str(server.port),
    )
    out = capsys.readouterr().out
    assert code == 0
    lines = [line.split() for line in out.strip().splitlines()[1:]]
    assert sorted(line[1] for line in lines) == ["item_000", "item_005", "item_010"]
    assert [float(line[2]) for line in lines] == sorted((float(line[2]) for line in lines), reverse=True)
    titles = {item[F.ITEM_ID]: item[F.TITLE] for item in catalog[0]}
    assert all(line[5:] == titles[line[1]].split() for line in lines)


def test_unknown_items_are_named_and_the_rest_is_ranked(served, capsys):
    server, _ = served
    code = run_verb(
        "rank", "--user", "u", "--items", "item_000,no_such_item,item_004,gone_too", "--port", str(server.port)
    )
    captured = capsys.readouterr()
    assert code == 0 and "Traceback" not in captured.err
    assert "not ranked, unknown to the served model version: no_such_item, gone_too" in captured.out
    assert {line.split()[1] for line in captured.out.strip().splitlines()[1:3]} == {"item_000", "item_004"}
    with RankingClient(port=server.port) as client:
        with pytest.raises(UnknownItemsError) as caught:
            client.score("u", ["item_000", "nope", "neither"])
        assert caught.value.item_ids == ["nope", "neither"]
        ranking = client.rank("u", ["nope", "neither"])
    assert list(ranking) == [] and ranking.unknown_item_ids == ["nope", "neither"]


def test_rank_without_a_server_says_so(capsys):
    code = run_verb("rank", "--user", "u", "--items", "item_000", "--port", "1", "--timeout", "3")
    assert code == 1 and "is `camenn serve` running?" in capsys.readouterr().err


@pytest.fixture
def report(tmp_path, catalog):
    """A listing audit report as the pipeline's ListingAudit step writes it, scores planted: the listings
    the catalog made inaccurate score low."""
    items, truth = catalog
    path = tmp_path / "ListingAudit" / "audit" / "7" / audit.REPORT_FILE
    path.parent.mkdir(parents=True)
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(audit.REPORT_COLUMNS)
        for k, item in enumerate(items):
            ita = 0.1 + 0.01 * k if truth[item[F.ITEM_ID]] != "ok" else 0.6 + 0.01 * k
            writer.writerow([item[F.ITEM_ID], item[F.MERCHANT_ID], item[F.CATEGORY], item[F.TITLE], ita, 0.9, k % 5])
    return path


def test_audit_verb_reports_a_merchants_listings_worst_first(report, tmp_path, catalog, capsys):
    output = tmp_path / "audit.csv"
    code = run_verb(
        "audit",
        "--merchant",
        MERCHANTS[2],
        "--output",
        str(output),
        "--threshold",
        "0.5",
        "--pipeline-root",
        str(tmp_path),
    )
    out = capsys.readouterr().out
    assert code == 0 and str(output) in out and str(report) in out
    with output.open() as f:
        rows = list(csv.DictReader(f))
    assert rows and {r["merchant_id"] for r in rows} == {MERCHANTS[2]}
    assert len(rows) == sum(item[F.MERCHANT_ID] == MERCHANTS[2] for item in catalog[0])
    alignment = [float(r["alignment"]) for r in rows]
    assert alignment == sorted(alignment)
    for r in rows:
        assert float(r["alignment"]) == pytest.approx(min(float(r["ita"]), float(r["tia"])), abs=1e-4)
        assert (r["flagged"] == "1") == (float(r["alignment"]) < 0.5) == bool(r["issue"])
    flagged = [r["item_id"] for r in rows if r["flagged"] == "1"]
    assert flagged and all(item_id in out for item_id in flagged)


def test_audit_against_the_truth(report, tmp_path, catalog, capsys):
    _, truth = catalog
    audits = audit.read_report(report)
    result = audit.evaluate_audit(audits, truth, threshold=0.5)
    assert result["listings"] == len(truth) and result["inaccurate"] == sum(q != "ok" for q in truth.values())
    assert result["auc"] == 1.0 and result["precision"] == 1.0 and result["recall"] == 1.0
    truth_csv = tmp_path / "truth.csv"
    truth_csv.write_text("item_id,quality,detail\n" + "".join(f"{k},{v},\n" for k, v in truth.items()))
    assert audit.read_truth(truth_csv) == truth
    code = run_verb(
        "audit", "--all", "--truth", str(truth_csv), "--output", str(tmp_path / "all.csv"), "--report", str(report)
    )
    out = capsys.readouterr().out
    assert code == 0 and "auc 1.000" in out and f"inaccurate {int(result['inaccurate'])}" in out


def test_evaluate_audit_scores_chance_and_perfect_correctly():
    audits = [audit.ListingAudit(f"i{k}", "m", "c", ita=k / 10, tia=1.0) for k in range(10)]
    perfect = {f"i{k}": ("inaccurate_text" if k < 3 else "ok") for k in range(10)}
    inverted = {f"i{k}": ("inaccurate_text" if k >= 7 else "ok") for k in range(10)}
    assert audit.evaluate_audit(audits, perfect)["auc"] == 1.0
    assert audit.evaluate_audit(audits, inverted)["auc"] == 0.0
    result = audit.evaluate_audit(audits, perfect, threshold=0.25)
    assert result["precision"] == 1.0 and result["recall"] == pytest.approx(1.0)  # ITA 0.0, 0.1, 0.2 flagged


def test_audit_of_an_unknown_merchant_or_without_a_report_is_refused(report, tmp_path, capsys):
    code = run_verb("audit", "--merchant", "nobody", "--report", str(report))
    assert code == 2 and "merchant 'nobody' has no listings" in capsys.readouterr().err
    code = run_verb("audit", "--all", "--pipeline-root", str(tmp_path / "nothing_here"))
    assert code == 2 and "no listing audit under" in capsys.readouterr().err
