"""BERT presets: they load through keras-hub offline, all-MiniLM-L6-v2 is the real model (embeddings and
token ids equal the original sentence-transformers', tests/fixtures/minilm_reference.npz), and a
preset whose files or sources change is rebuilt."""

import json
from pathlib import Path

import numpy as np
import pytest

from camenn.model import bert, preset_store
from camenn.model.bert.convert_bert import sentence_embeddings

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "minilm_reference.npz"
CLS, SEP = 101, 102


@pytest.fixture(scope="module")
def reference():
    return np.load(FIXTURE)


@pytest.fixture(scope="module")
def minilm():
    import keras_hub

    folder = bert.preset_dir("all_minilm_l6_v2")
    return keras_hub.models.BertBackbone.from_preset(folder), keras_hub.models.BertTokenizer.from_preset(folder)


def tokenize(tokenizer, sentences):
    """[CLS] sentence [SEP], right-padded with 0 to the longest."""
    rows = [[CLS] + np.asarray(tokenizer(s)).tolist() + [SEP] for s in sentences]
    ids = np.zeros((len(rows), max(map(len, rows))), np.int64)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = row
    return ids


def test_tokenizer_gives_the_reference_ids(minilm, reference):
    _, tokenizer = minilm
    np.testing.assert_array_equal(tokenize(tokenizer, [str(s) for s in reference["sentences"]]), reference["input_ids"])
    # Uncased and accents stripped: "Crème Fraîche" is "creme fraiche".
    assert np.asarray(tokenizer("Crème Fraîche")).tolist() == np.asarray(tokenizer("creme fraiche")).tolist()


def test_sentence_embeddings_equal_the_original_model(minilm, reference):
    backbone, _ = minilm
    embeddings = sentence_embeddings(backbone, reference["input_ids"])
    assert embeddings.shape == reference["embeddings"].shape == (len(reference["sentences"]), 384)
    assert np.abs(embeddings - reference["embeddings"]).max() <= 1e-3
    # The check can fail: a different sentence's embedding is far away.
    assert np.abs(embeddings[1:] - reference["embeddings"][:-1]).max() > 0.1


def test_tiny_preset_has_the_contract_configuration():
    import keras_hub

    folder = bert.preset_dir("bert_tiny")
    backbone = keras_hub.models.BertBackbone.from_preset(folder)
    assert (
        backbone.vocabulary_size,
        backbone.num_layers,
        backbone.num_heads,
        backbone.hidden_dim,
        backbone.intermediate_dim,
    ) == (30522, 2, 2, 32, 64)
    tokenizer = keras_hub.models.BertTokenizer.from_preset(folder)
    minilm_tokenizer = keras_hub.models.BertTokenizer.from_preset(bert.preset_dir("all_minilm_l6_v2"))
    assert tokenizer.get_vocabulary() == minilm_tokenizer.get_vocabulary()
    with pytest.raises(KeyError, match="unknown BERT preset"):
        bert.preset_dir("bert_base_en")


def test_changed_or_corrupted_presets_are_rebuilt(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("CAMENN_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(preset_store, "_checked", set())
    folder = Path(bert.preset_dir("bert_tiny"))
    assert "building bert_tiny (not built yet)" in capsys.readouterr().out
    manifest = json.loads((folder / preset_store.MANIFEST).read_text())
    assert set(manifest["outputs"]) >= {"config.json", "model.weights.h5", "tokenizer.json"}
    assert preset_store.problem("bert_tiny") == ""

    with open(folder / "model.weights.h5", "r+b") as f:  # corrupt one byte
        f.seek(-1, 2)
        last = f.read(1)
        f.seek(-1, 2)
        f.write(bytes([last[0] ^ 0xFF]))
    assert preset_store.problem("bert_tiny") == "its files do not match their recorded checksums"
    manifest["sources"] = {k: "0" * 64 for k in manifest["sources"]}
    (folder / preset_store.MANIFEST).write_text(json.dumps(manifest))
    assert preset_store.problem("bert_tiny") == "its source files changed"

    preset_store._checked.clear()
    bert.preset_dir("bert_tiny")
    assert "building bert_tiny (its source files changed)" in capsys.readouterr().out
    assert preset_store.problem("bert_tiny") == ""
