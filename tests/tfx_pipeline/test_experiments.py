"""`camenn experiments`: the oracle the simulator records, the practitioner's baselines, the claims'
verdicts, and the whole command on the tiny pipeline run's data (tests/conftest.py `pipeline_run`)."""

import csv
import json
import os
import shutil

import numpy as np
import pytest

from camenn.model import features as F

# --- The oracle: each click's true probability, recorded by the simulator.


def _events_with_truth(folder):
    with open(folder / "events.csv", newline="") as f:
        events = {(r["request_id"], r["item_id"]): r for r in csv.DictReader(f)}
    from camenn.tfx_pipeline.experiments import oracle

    probabilities = oracle.read_event_probabilities(oracle.truth_path(folder))
    return events, {(r.decode(), i.decode()): p for (r, i), p in probabilities.items()}


def test_every_simulated_click_has_its_true_probability(tiny_dataset):
    events, truth = _events_with_truth(tiny_dataset)
    simulated = {key for key in events if not key[0].startswith(("rb", "rx"))}  # not the deliberately bad rows
    assert set(truth) == simulated and len(truth) == 1500
    assert all(0.0 < p < 1.0 for p in truth.values())


def _calibration_deviations(labels, probabilities, bins=5):
    """Per probability quintile: (observed rate - mean probability) / its binomial standard error."""
    edges = np.quantile(probabilities, np.linspace(0, 1, bins + 1))
    index = np.clip(np.searchsorted(edges, probabilities, side="right") - 1, 0, bins - 1)
    out = []
    for b in range(bins):
        chosen = index == b
        p, y = probabilities[chosen], labels[chosen]
        out.append((y.mean() - p.mean()) / np.sqrt(max(np.sum(p * (1 - p)), 1e-9)) * chosen.sum())
    return np.array(out)


def test_labels_are_drawn_from_the_recorded_probabilities(grocery_store_dir, tmp_path):
    """20,000 clicks: in every probability quintile the conversion rate matches the recorded probabilities
    (within 4 standard errors), and ranking by them gives an AUC well above chance; the same check on
    shuffled probabilities fails, so the check can fail."""
    from sklearn.metrics import roc_auc_score

    from camenn.simulator.sample import build_sample

    build_sample(
        grocery_store_dir,
        tmp_path,
        seed=3,
        num_listings=60,
        num_merchants=8,
        num_shoppers=60,
        num_events=20000,
        include_bad_rows=False,
    )
    events, truth = _events_with_truth(tmp_path)
    keys = sorted(truth)
    labels = np.array([int(events[k]["converted"]) for k in keys])
    probabilities = np.array([truth[k] for k in keys])
    assert np.abs(_calibration_deviations(labels, probabilities)).max() < 4.0
    assert roc_auc_score(labels, probabilities) > 0.62
    shuffled = np.random.default_rng(0).permutation(probabilities)
    assert np.abs(_calibration_deviations(labels, shuffled)).max() > 4.0


def _rows(labels, oracle, shoppers=None, rate=0.25):
    from camenn.tfx_pipeline.experiments.data import EvalRows

    n = len(labels)
    ones = np.ones(n)
    return EvalRows(
        columns={},
        tables={},
        labels={F.CVR: np.asarray(labels, float), F.ITA: ones, F.TIA: ones},
        weights={F.CVR: ones, F.ITA: ones, F.TIA: ones},
        request_id=np.array([f"r{i}".encode() for i in range(n)], dtype=object),
        item_id=np.array([b"i"] * n, dtype=object),
        shopper_id=np.array(shoppers if shoppers is not None else [b"s"] * n, dtype=object),
        listing_quality=np.array([b"ok"] * n, dtype=object),
        negative_kind=np.array([(b"hard",)] * n, dtype=object),
        train_rate=np.full(n, rate),
        oracle=np.asarray(oracle, float),
    )


def test_a_model_given_the_true_probabilities_scores_the_oracle():
    from sklearn.metrics import roc_auc_score

    from camenn.tfx_pipeline.experiments import oracle, scoring

    rng = np.random.default_rng(0)
    truth = rng.beta(2, 6, 4000)
    labels = (rng.random(4000) < truth).astype(float)
    shoppers = rng.integers(0, 40, 4000).astype(str).astype(object)
    rows = _rows(labels, truth, shoppers)
    best = scoring.oracle_cvr_metrics(rows)
    as_model = scoring.with_headroom(scoring.cvr_metrics(rows, truth), best)
    assert as_model["auc"] == best["auc"] == pytest.approx(roc_auc_score(labels, truth), abs=1e-12)
    assert as_model["auc_headroom"] == as_model["gauc_headroom"] == 1.0
    noisy = scoring.with_headroom(scoring.cvr_metrics(rows, truth + rng.normal(0, 0.2, 4000)), best)
    assert 0.0 < noisy["auc_headroom"] < 1.0 and noisy["auc"] < best["auc"]
    assert scoring.headroom_share(0.5, best["auc"]) == 0.0
    # The join by (request_id, item_id): a row the truth lacks has none, and the oracle refuses to score.
    attached = oracle.attach([b"r0", b"r9"], [b"i", b"i"], {(b"r0", b"i"): 0.3})
    assert attached[0] == 0.3 and np.isnan(attached[1])
    with pytest.raises(ValueError, match="have no true probability"):
        scoring.oracle_cvr_metrics(_rows(labels[:2], attached))


# --- The practitioner's baselines on a tiny set.


def _clicks(n, rng):
    """Clicks whose conversion depends on a shopper x coarse-category taste, the distance and the hour."""
    shopper, coarse = rng.integers(0, 30, n), rng.integers(0, 5, n)
    category = coarse * 3 + rng.integers(0, 3, n)
    taste = np.random.default_rng(7).normal(0, 1.2, (30, 5))
    distance, hour = rng.normal(0, 1, n).astype(np.float32), rng.integers(0, 24, n)
    price = rng.normal(0, 1, n).astype(np.float32)
    z = -1.0 + taste[shopper, coarse] - 0.6 * distance - 0.5 * price + 0.4 * ((hour >= 17) & (hour <= 21))
    p = 1 / (1 + np.exp(-z))
    columns = {
        F.SHOPPER_ID: shopper,
        F.COARSE_CATEGORY: coarse,
        F.CATEGORY: category,
        F.ITEM_ID: category * 10 + rng.integers(0, 4, n),
        F.MERCHANT_ID: rng.integers(0, 6, n),
        F.HOUR: hour,
        F.DISTANCE_KM: distance,
        F.PRICE: price,
    }
    return columns, (rng.random(n) < p).astype(float), p


@pytest.mark.parametrize("learner", ["logistic_regression", "gradient_boosted_trees"])
def test_practitioner_baselines_learn_a_tiny_set(learner):
    from sklearn.metrics import roc_auc_score

    from camenn.tfx_pipeline.experiments import practitioner

    rng = np.random.default_rng(0)
    train, train_labels, _ = _clicks(3000, rng)
    test, test_labels, truth = _clicks(2000, rng)
    table = practitioner.FeatureTable.fit(train, train_labels, seed=0)
    assert table.train.shape == (3000, len(practitioner.FEATURES)) and np.isfinite(table.train).all()
    predict = practitioner.LEARNERS[learner](table.train, train_labels, seed=0)
    predicted = predict(table.transform(test))
    assert predicted.shape == (2000,) and ((predicted > 0) & (predicted < 1)).all()
    oracle_auc, model_auc = roc_auc_score(test_labels, truth), roc_auc_score(test_labels, predicted)
    assert model_auc > 0.5 + 0.6 * (oracle_auc - 0.5), (model_auc, oracle_auc)
    np.testing.assert_allclose(predict(table.transform(test)), predicted)  # scoring is deterministic


def test_target_encodings_of_training_clicks_never_see_their_own_label():
    """A shopper with one click: out of fold, its encoding is the prior whatever the label, while an eval
    click of that shopper gets the smoothed rate of the whole training split."""
    from camenn.tfx_pipeline.experiments import practitioner

    rng = np.random.default_rng(1)
    columns, labels, _ = _clicks(500, rng)
    columns[F.SHOPPER_ID] = columns[F.SHOPPER_ID].copy()
    columns[F.SHOPPER_ID][0] = 999
    column = practitioner.FEATURES.index("te_shopper")
    encodings = []
    for label in (0.0, 1.0):
        labels[0] = label
        table = practitioner.FeatureTable.fit(columns, labels, seed=0)
        encodings.append(table.train[0, column])
        assert encodings[-1] == pytest.approx(np.log(table.rate))
        one = {k: v[:1] for k, v in columns.items()}
        expected = np.log((label + practitioner.SMOOTHING * table.rate) / (1 + practitioner.SMOOTHING))
        assert table.transform(one)[0, column] == pytest.approx(expected)


# --- The claims' verdicts.


def test_claims_verdicts_follow_the_evidence():
    from sklearn.metrics import roc_auc_score

    from camenn.tfx_pipeline.experiments import claims

    rng = np.random.default_rng(0)
    truth = rng.beta(2, 6, 3000)
    labels = (rng.random(3000) < truth).astype(float)
    good = {s: truth + rng.normal(0, 0.05, 3000) for s in range(3)}
    poor = {s: truth + rng.normal(0, 0.5, 3000) for s in range(3)}
    same = {s: good[s] + rng.normal(0, 1e-4, 3000) for s in range(3)}
    assert claims.compare(good, poor, labels, bootstrap=100)["verdict"] == claims.SUPPORTED
    assert claims.compare(poor, good, labels, bootstrap=100)["verdict"] == claims.OPPOSITE
    assert claims.compare(good, same, labels, bootstrap=100)["verdict"] == claims.NOT_SUPPORTED
    small = {s: v[:150] for s, v in good.items()}
    noisy = {s: truth[:150] + np.random.default_rng(10 + s).normal(0, 0.08, 150) for s in range(3)}
    assert claims.compare(small, noisy, labels[:150], bootstrap=100)["verdict"] == claims.UNDECIDED
    flawed = np.r_[np.ones(40), np.zeros(200)]
    assert claims.flaw_finding(flawed, flawed + rng.normal(0, 0.5, 240))["verdict"] == claims.SUPPORTED
    assert claims.flaw_finding(flawed, rng.normal(0, 1, 240))["verdict"] in (claims.UNDECIDED, claims.NOT_SUPPORTED)
    assert claims.fast_auc(labels, truth) == pytest.approx(roc_auc_score(labels, truth))


# --- The whole command on the tiny pipeline's data.

MODELS = ["camenn", "camenn_cvr_only", "logistic_regression", "gradient_boosted_trees"]


@pytest.fixture(scope="module")
def experiments(pipeline_run, tiny_dataset, tmp_path_factory):
    from camenn.tfx_pipeline.experiments import runner

    config, _ = pipeline_run
    outputs = tmp_path_factory.mktemp("experiments")
    name = os.path.basename(str(tiny_dataset))
    # The dataset's pipeline run goes to outputs/<name>; a copy of the session run's metadata store there
    # lets the cache find preprocessing, Transform and the listing audit.
    prepared = config.replace(outputs_dir=str(outputs / name))
    os.makedirs(os.path.dirname(prepared.metadata_path))
    shutil.copy(config.metadata_path, prepared.metadata_path)
    base = config.replace(
        epochs=1,
        steps_per_epoch=2,
        validate_each_epoch=False,
        early_stopping_patience=0,
        bless_against_last=False,
        slice_features=(),
    )
    settings = {
        "datasets": [name],
        "dataset_paths": {name: str(tiny_dataset)},
        "models": MODELS,
        "seeds": [0, 1],
        "size": "tiny",
        "epochs": {name: 0.2},
        "batch_size": 32,
        "learning_rate": 0.0,
        "points": 2,
        "source": "",
    }
    results_dir = outputs / "results"
    results = runner.run_experiments(settings, base, str(outputs), str(results_dir), workers=1)
    return settings, base, outputs, results_dir, results


@pytest.mark.slow
def test_every_model_and_seed_is_scored_against_the_oracle(experiments):
    settings, _, _, results_dir, results = experiments
    name = settings["datasets"][0]
    prepared = results["datasets"][name]
    assert prepared["artifacts"]["components"]["Transform"] == "CACHED"
    assert 0.5 < prepared["oracle"]["auc"] < 1 and prepared["oracle"]["clicks"] == prepared["eval_clicks"]
    # The experiments' metric code reproduces TFMA's numbers for the pipeline's own model.
    check = prepared["metric_check"]
    assert {f"{F.CVR}/auc", f"{F.CVR}/gauc", f"{F.CVR}/log_loss", f"{F.ITA}/auc"} <= set(check["tfma"])
    for name, value in check["tfma"].items():
        # TFMA's AUC is summed over 10,000 threshold buckets; every other metric is computed exactly by both.
        assert check["experiments"][name] == pytest.approx(value, abs=2e-2 if name.endswith("/auc") else 1e-5), name
    assert [(r["model"], r["seed"]) for r in results["runs"]] == [(m, s) for s in (0, 1) for m in MODELS]
    for run in results["runs"]:
        assert run["cvr"]["clicks"] == prepared["eval_clicks"]
        assert run["cvr"]["auc_headroom"] == pytest.approx(
            (run["cvr"]["auc"] - 0.5) / (prepared["oracle"]["auc"] - 0.5)
        )
        assert run["curve"][-1]["auc"] == pytest.approx(run["cvr"]["auc"], abs=1e-9 if run["kind"] == "neural" else 0)
        seen = [point["clicks_seen"] for point in run["curve"]]
        assert seen == sorted(set(seen))
        if run["kind"] == "neural":
            assert len(seen) == settings["points"]
        else:  # the neural models' curve points within the training split, then the whole split
            assert seen[-1] == prepared["train_clicks"] and len(seen) >= 2
    camenn = [r for r in results["runs"] if r["model"] == "camenn"]
    assert f"{F.ITA}/auc/hard" in camenn[0]["alignment"] and "any_flaw" in camenn[0]["flaws_in_sample"]
    assert camenn[0]["routing"] and camenn[0]["cvr"]["auc"] != camenn[1]["cvr"]["auc"]  # seeds differ
    assert "any_flaw" in prepared["audit"] and "ita_finds_inaccurate_text" in prepared["audit_claims"]
    statements = {(c["claim"], c["b"]) for c in results["claims"]}
    assert {("a", "camenn_cvr_only"), ("-", "logistic_regression"), ("d", "chance")} <= statements
    report = (results_dir / "RESULTS.md").read_text()
    oracle_row = next(line for line in report.splitlines() if line.startswith("| **oracle**"))
    assert f"{prepared['oracle']['auc']:.3f}" in oracle_row
    for plot in ("learning_curves.png", "audit_scores.png", "calibration.png", "expert_load.png"):
        assert (results_dir / plot).stat().st_size > 1000
    assert json.loads((results_dir / "results.json").read_text())["runs"] == json.loads(json.dumps(results["runs"]))


@pytest.mark.slow
def test_a_rerun_with_the_same_settings_trains_nothing(experiments):
    from camenn.tfx_pipeline.experiments import runner

    settings, base, outputs, results_dir, results = experiments
    again = runner.run_experiments(settings, base, str(outputs), str(results_dir), workers=1)
    assert again["runs"] == json.loads(json.dumps(results["runs"]))


@pytest.mark.slow
def test_a_later_seed_reusing_the_traced_model_trains_as_a_fresh_one(pipeline_run):
    """`training.restart`: seed 1 trained in seed 0's compiled model equals seed 1 trained from scratch."""
    import glob

    import tensorflow_transform as tft

    from camenn.tfx_pipeline import configs
    from camenn.tfx_pipeline.experiments import data, training

    config, summary = pipeline_run
    root = config.pipeline_root
    tft_output = tft.TFTransformOutput(sorted(glob.glob(os.path.join(root, "Transform", "transform_graph", "*")))[-1])
    clicks = data.read_train_clicks(
        sorted(glob.glob(os.path.join(root, "Transform", "transformed_examples", "*")))[-1], tft_output
    )
    settings = configs.TrainerSettings.of(
        config.replace(
            model_preset="camenn_tiny", model_options="{}", learning_rate=0.0, hard_negatives=True, batch_size=32
        )
    )

    def evaluate(model):
        return {"sum": float(np.sum(training.predict(model, _probe_dataset(clicks, model))[F.CVR]))}

    first = training.train_neural(settings, tft_output, clicks, evaluate, total_steps=6, points=2, seed=0)
    reused = training.train_neural(
        settings, tft_output, clicks, evaluate, total_steps=6, points=2, seed=1, reuse=first.model
    )
    fresh = training.train_neural(settings, tft_output, clicks, evaluate, total_steps=6, points=2, seed=1)
    assert [p["sum"] for p in reused.curve] == pytest.approx([p["sum"] for p in fresh.curve], rel=1e-5)
    assert [p["sum"] for p in reused.curve] != pytest.approx([p["sum"] for p in first.curve], rel=1e-5)


def _probe_dataset(clicks, model):
    dataset = clicks.dataset(64)
    names = list(model.input)
    return dataset.take(2).map(lambda batch: {k: batch[k] for k in names})
