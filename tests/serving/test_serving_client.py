"""`camenn rank` and `camenn audit` (and their Python APIs) against a real server."""
import argparse
import csv

import numpy as np
import pytest

from camenn.model import features as F
from camenn.serving import audit, cli
from camenn.serving.client import ItemFeatureStore, RankingClient, UnknownItemsError

from serving_helpers import MERCHANTS


def run_verb(*argv):
    parser = argparse.ArgumentParser()
    cli.register(parser.add_subparsers())
    args = parser.parse_args(argv)
    return args.func(args)


def client_flags(served, item_features_dir):
    server, _ = served
    return ["--port", str(server.port), "--item-features", str(item_features_dir.parent)]


def test_item_store_reads_every_shard(item_features_dir, catalog):
    items, _ = catalog
    store = ItemFeatureStore.load(item_features_dir)
    assert len(store) == len(items)
    rows = store.rows(["item_004", "item_001"])
    assert [i.decode() for i in rows[F.ITEM_ID]] == ["item_004", "item_001"]
    np.testing.assert_array_equal(rows[F.TEXT_TOKEN_IDS][0], items[4][F.TEXT_TOKEN_IDS])
    np.testing.assert_allclose(rows[F.PATCH_EMBEDDINGS][1], items[1][F.PATCH_EMBEDDINGS])


def test_rank_api_orders_by_cvr_with_alignment_scores(served, item_features_dir):
    server, _ = served
    candidates = ["item_003", "item_010", "item_011", "item_020", "item_035"]
    with RankingClient(item_features_dir, port=server.port) as client:
        ranked = client.rank("shopper_9", candidates, hour=18, distance_km=[0.5, 1, 2, 3, 4])
        scores = client.score("shopper_9", candidates, hour=18, distance_km=[0.5, 1, 2, 3, 4])
    assert sorted(item.item_id for item in ranked) == sorted(candidates)
    cvrs = [item.cvr for item in ranked]
    assert cvrs == sorted(cvrs, reverse=True)
    by_id = {item.item_id: item for item in ranked}
    for i, item_id in enumerate(candidates):
        assert by_id[item_id].ita == pytest.approx(float(scores[F.ITA][i]))
        assert 0 <= by_id[item_id].tia <= 1


def test_rank_verb_prints_the_ranking(served, item_features_dir, capsys):
    code = run_verb("rank", "--user", "shopper_1", "--items", "item_000,item_005,item_010", "--hour", "9",
                    *client_flags(served, item_features_dir))
    out = capsys.readouterr().out
    assert code == 0
    lines = [line.split() for line in out.strip().splitlines()[1:]]
    assert sorted(line[1] for line in lines) == ["item_000", "item_005", "item_010"]
    assert [float(line[2]) for line in lines] == sorted((float(line[2]) for line in lines), reverse=True)


def test_unknown_items_are_named_not_a_stack_trace(served, item_features_dir, capsys):
    code = run_verb("rank", "--user", "u", "--items", "item_000,no_such_item,gone_too",
                    *client_flags(served, item_features_dir))
    err = capsys.readouterr().err
    assert code == 2
    assert "unknown item id(s): no_such_item, gone_too" in err and "Traceback" not in err
    with pytest.raises(UnknownItemsError) as caught:
        ItemFeatureStore.load(item_features_dir).rows(["item_000", "nope"])
    assert caught.value.item_ids == ["nope"]


def test_rank_without_a_server_says_so(item_features_dir, capsys):
    code = run_verb("rank", "--user", "u", "--items", "item_000", "--port", "1", "--timeout", "3",
                    "--item-features", str(item_features_dir))
    assert code == 1 and "is `camenn serve` running?" in capsys.readouterr().err


def test_audit_verb_reports_a_merchants_listings_worst_first(served_toy, item_features_dir, tmp_path, capsys):
    output = tmp_path / "audit.csv"
    code = run_verb("audit", "--merchant", MERCHANTS[2], "--output", str(output), "--threshold", "0.8",
                    *client_flags(served_toy, item_features_dir))
    out = capsys.readouterr().out
    assert code == 0 and str(output) in out
    with output.open() as f:
        rows = list(csv.DictReader(f))
    assert rows and {r["merchant_id"] for r in rows} == {MERCHANTS[2]}
    assert len(rows) == len(ItemFeatureStore.load(item_features_dir).item_ids_of(MERCHANTS[2]))
    alignment = [float(r["alignment"]) for r in rows]
    assert alignment == sorted(alignment)
    for r in rows:
        assert float(r["alignment"]) == pytest.approx(min(float(r["ita"]), float(r["tia"])), abs=1e-4)
        assert (r["flagged"] == "1") == (float(r["alignment"]) < 0.8) == bool(r["issue"])
    flagged = [r["item_id"] for r in rows if r["flagged"] == "1"]
    assert all(item_id in out for item_id in flagged)


def test_audit_finds_the_planted_inaccurate_listings(served_toy, item_features_dir, catalog, tmp_path, capsys):
    _, truth = catalog
    server, _ = served_toy
    with RankingClient(item_features_dir, port=server.port) as client:
        audits = audit.audit_listings(client, batch_size=10)  # several requests
    assert len(audits) == len(truth)
    result = audit.evaluate_audit(audits, truth, threshold=0.8)
    assert result["listings"] == len(truth) and result["inaccurate"] == sum(q != "ok" for q in truth.values())
    assert result["auc"] > 0.9 and result["auc_inaccurate_text"] == result["auc"]

    truth_csv = tmp_path / "truth.csv"
    truth_csv.write_text("item_id,quality,detail\n" + "".join(f"{k},{v},\n" for k, v in truth.items()))
    assert audit.read_truth(truth_csv) == truth
    code = run_verb("audit", "--all", "--truth", str(truth_csv), "--output", str(tmp_path / "all.csv"),
                    *client_flags(served_toy, item_features_dir))
    out = capsys.readouterr().out
    assert code == 0 and f"auc {result['auc']:.3f}" in out and f"inaccurate {int(result['inaccurate'])}" in out


def test_evaluate_audit_scores_chance_and_perfect_correctly():
    audits = [audit.ListingAudit(f"i{k}", "m", "c", ita=k / 10, tia=1.0) for k in range(10)]
    perfect = {f"i{k}": ("inaccurate_text" if k < 3 else "ok") for k in range(10)}
    inverted = {f"i{k}": ("inaccurate_text" if k >= 7 else "ok") for k in range(10)}
    assert audit.evaluate_audit(audits, perfect)["auc"] == 1.0
    assert audit.evaluate_audit(audits, inverted)["auc"] == 0.0
    result = audit.evaluate_audit(audits, perfect, threshold=0.25)
    assert result["precision"] == 1.0 and result["recall"] == pytest.approx(1.0)  # ITA 0.0, 0.1, 0.2 flagged


def test_audit_of_an_unknown_merchant_is_refused(served, item_features_dir, capsys):
    code = run_verb("audit", "--merchant", "nobody", *client_flags(served, item_features_dir))
    assert code == 2 and "merchant 'nobody' has no listings" in capsys.readouterr().err
