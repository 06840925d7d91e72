"""The retrieval SavedModel (TFRS towers exported on core TF ops, its index filled from the catalog) and
`camenn recommend` over a server that serves it beside the ranker."""

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from retrieval_helpers import SHOPPERS, export_retrieval
from serving_helpers import CATEGORIES, WITHOUT_KERAS, catalog_columns

from camenn.model import features as F

LOAD_AND_RETRIEVE = """
import json, sys
import numpy as np
import tensorflow as tf

model = tf.saved_model.load(sys.argv[1])
out = model.signatures["serving_default"](shopper_id=tf.constant([b"shopper_1", b"nobody"]),
                                          hour=tf.constant([18, 18], tf.int64))
try:
    model.signatures["serving_default"](shopper_id=tf.constant([b"shopper_1"]), hour=tf.constant([24], tf.int64))
    refused = False
except tf.errors.InvalidArgumentError as error:
    refused = "hour" in str(error)
loaded = sorted(m for m in sys.modules if m.partition(".")[0] in
                ("keras", "keras_hub", "tf_keras", "tensorflow_text", "tensorflow_recommenders"))
print(json.dumps({"item_id": [[i.decode() for i in row] for row in out["item_id"].numpy()],
                  "score": out["score"].numpy().tolist(), "known": out["known_shopper"].numpy().tolist(),
                  "popularity": out["popularity"].numpy().tolist(), "refused": refused, "loaded": loaded}))
"""


@pytest.fixture(scope="module")
def retrieval_export(tmp_path_factory, catalog):
    items, _ = catalog
    directory, model, losses = export_retrieval(tmp_path_factory.mktemp("retrieval_export") / "1", items)
    return directory, model, losses


def test_the_saved_model_loads_and_answers_without_tf_keras_or_tfrs(retrieval_export):
    directory, _, _ = retrieval_export
    result = subprocess.run(
        [sys.executable, str(WITHOUT_KERAS), "-c", LOAD_AND_RETRIEVE, str(directory)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["loaded"] == [] and out["refused"]
    assert [len(row) for row in out["item_id"]] == [10, 10]  # top_k=10 of 36 listings
    assert out["known"] == [True, False]
    # The unknown shopper gets the most clicked listings, most first (ties by item id).
    popularity = out["popularity"][1]
    assert popularity == sorted(popularity, reverse=True) and popularity[0] > 0
    assert out["score"][1] == pytest.approx(np.log1p(popularity).tolist())


def test_training_lowers_the_loss_and_learns_a_shoppers_taste(retrieval_export, catalog):
    directory, _, losses = retrieval_export
    assert losses[-1] < losses[0]
    model = tf.saved_model.load(str(directory))
    # shopper_i clicks only category i % 4 (retrieval_helpers.synthetic_clicks).
    out = model.signatures["serving_default"](
        shopper_id=tf.constant([s.encode() for s in SHOPPERS]), hour=tf.constant([12] * len(SHOPPERS), tf.int64)
    )
    for s, categories in enumerate(out[F.CATEGORY].numpy()):
        top = [c.decode() for c in categories[:5]]
        assert top.count(CATEGORIES[s % len(CATEGORIES)]) >= 4, (s, top)


def test_the_index_returns_what_tfrs_brute_force_returns(retrieval_export):
    import tensorflow_recommenders as tfrs

    from camenn.serving.retrieval_index import read_index

    directory, _, _ = retrieval_export
    loaded = tf.saved_model.load(str(directory))
    shoppers = tf.constant([b"shopper_0", b"shopper_3", b"shopper_6"])
    hours = tf.constant([7, 12, 21], tf.int64)
    queries = loaded.signatures["query"](shopper_id=shoppers, hour=hours)["query_embedding"]
    index = read_index(loaded)
    brute_force = tfrs.layers.factorized_top_k.BruteForce(k=10)
    brute_force.index(tf.constant(index["embeddings"]), tf.constant(index["item_ids"]))
    scores, ids = brute_force(queries)
    served = loaded.signatures["serving_default"](shopper_id=shoppers, hour=hours)
    np.testing.assert_array_equal(served[F.ITEM_ID].numpy(), ids.numpy())
    np.testing.assert_allclose(served["score"].numpy(), scores.numpy(), rtol=1e-5, atol=1e-6)


def test_a_new_listing_is_indexed_from_its_content_without_clicks(retrieval_export, catalog, tmp_path):
    from camenn.serving.retrieval_index import read_index, write_index

    directory, _, _ = retrieval_export
    items, _ = catalog
    source = items[0]  # an apple listing; the new one has its content but an id no click ever named
    new = {**source, F.ITEM_ID: "item_new", F.MERCHANT_ID: "m_new", F.TITLE: "A new apple"}
    counts = write_index(str(directory), catalog_columns(items + [new]), str(tmp_path / "2"))
    assert counts["listings"] == len(items) + 1
    index = read_index(tf.saved_model.load(str(tmp_path / "2")))
    row = list(index["item_ids"]).index(b"item_new")
    assert index["popularity"][row] == 0 and np.all(np.isfinite(index["embeddings"][row]))
    # Its vector sits among its category's: the nearest other listings are apples.
    vectors = index["embeddings"]
    similarity = vectors @ vectors[row]
    similarity[row] = -np.inf
    nearest = np.argsort(-similarity)[:3]
    categories = {item[F.ITEM_ID].encode(): item[F.CATEGORY] for item in items}
    assert [categories[index["item_ids"][i]] for i in nearest] == ["apple"] * 3


# --- camenn recommend: retrieval and ranking through one server.


@pytest.fixture(scope="module")
def served_both(tmp_path_factory, model_v1, retrieval_export, catalog):
    """`camenn serve` with both models, from the models.config the serving bundle writes."""
    from camenn.serving import bundle
    from camenn.serving.servables import read_model_config_file
    from camenn.serving.server import ModelServer

    items, truth = catalog
    base = tmp_path_factory.mktemp("serving_base")
    shutil.copytree(model_v1, base / "camenn" / "1")
    # The retrieval index with an audit: every listing whose text is another category's is flagged.
    from camenn.serving.retrieval_index import write_index

    directory, _, _ = retrieval_export
    alignment = {item_id: (0.1 if quality != "ok" else 0.9) for item_id, quality in truth.items()}
    write_index(str(directory), catalog_columns(items), str(base / "camenn_retrieval" / "1"), alignment)
    written = bundle.write_serving_bundle(base, "camenn", more_models=["camenn_retrieval"])
    server = ModelServer(read_model_config_file(str(written.local_models_config)), port=0, poll_seconds=0).start()
    yield server, truth
    server.stop(0)


def _count_predicts(client):
    calls = []
    predict = client.ranker._stub.Predict

    def counting(request, **kwargs):
        calls.append(request.model_spec.name)
        return predict(request, **kwargs)

    client.ranker._stub.Predict = counting
    return calls


def test_recommend_returns_k_ranked_listings_for_a_known_shopper(served_both):
    from camenn.serving.recommend import RecommendationClient

    server, _ = served_both
    with RecommendationClient(port=server.port) as client:
        calls = _count_predicts(client)
        found = client.recommend("shopper_1", k=5, hour=18, demote_below=None)
        retrieved = client.retrieve("shopper_1", 18)
    assert calls[:2] == ["camenn_retrieval", "camenn"]  # one call to each
    assert len(found) == 5 and found.known_shopper and found.candidates == 10
    assert {r.item_id for r in found} <= {i.decode() for i in retrieved[F.ITEM_ID]}
    cvr = [r.cvr for r in found]
    assert cvr == sorted(cvr, reverse=True)
    assert all(r.title and r.category and r.price > 0 and 0 <= r.ita <= 1 and 0 <= r.tia <= 1 for r in found)


def test_an_unknown_shopper_gets_popular_listings_and_is_told(served_both, capsys):
    from camenn.cli import main
    from camenn.serving.recommend import RecommendationClient

    server, _ = served_both
    with RecommendationClient(port=server.port) as client:
        found = client.recommend("never_seen", k=4, hour=9)
        retrieved = client.retrieve("never_seen", 9)
    assert not found.known_shopper and len(found) == 4
    assert list(retrieved["popularity"]) == sorted(retrieved["popularity"], reverse=True)
    with pytest.raises(SystemExit) as exit_:
        main(["recommend", "--user", "never_seen", "--k", "4", "--hour", "9", "--port", str(server.port)])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert "unknown to camenn_retrieval" in out and "most popular" in out
    assert len([line for line in out.splitlines() if line.strip()[:1].isdigit()]) == 4


def test_listings_the_audit_flags_are_demoted_below_the_others(served_both):
    from camenn.serving.recommend import RecommendationClient, order

    # The rule on its own: not demoted first, each group by CVR.
    assert order(np.array([0.9, 0.5, 0.7, 0.1]), np.array([0.2, 0.8, np.nan, 0.9]), 0.5) == [2, 1, 3, 0]
    assert order(np.array([0.9, 0.5]), np.array([0.2, 0.8]), None) == [0, 1]
    server, truth = served_both
    with RecommendationClient(port=server.port) as client:
        plain = client.recommend("shopper_3", k=10, hour=12, demote_below=None)
        demoted = client.recommend("shopper_3", k=10, hour=12)
    flagged = {item_id for item_id, quality in truth.items() if quality != "ok"}
    assert flagged & {r.item_id for r in plain}, "the test needs a flagged listing among the candidates"
    marks = [r.item_id in flagged for r in demoted]
    assert marks == sorted(marks) and any(marks)  # every flagged listing after every other
    assert all(r.demoted == (r.item_id in flagged) for r in demoted)
    assert sorted(r.item_id for r in demoted) == sorted(r.item_id for r in plain)
