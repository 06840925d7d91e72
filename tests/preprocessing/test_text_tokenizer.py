"""WordPiece packing: [CLS] title [SEP] description [SEP], uncased, accents stripped, truncated and flagged."""

import numpy as np
import pytest

from camenn.preprocessing.text import TextTokenizer, vocabulary_path


@pytest.fixture(scope="module")
def vocabulary():
    return {token: index for index, token in enumerate(vocabulary_path().read_text(encoding="utf-8").splitlines())}


@pytest.fixture(scope="module")
def tokenizer():
    return TextTokenizer(max_length=12)


def test_packing_and_padding(tokenizer, vocabulary):
    ids, truncated = tokenizer([("Pink Lady", "Crisp apple")])
    v = vocabulary
    expected = [v["[CLS]"], v["pink"], v["lady"], v["[SEP]"], v["crisp"], v["apple"], v["[SEP]"]]
    assert ids.dtype == np.int64 and ids.shape == (1, 12)
    assert ids[0].tolist() == expected + [v["[PAD]"]] * 5 and v["[PAD]"] == 0
    assert truncated.tolist() == [False]


def test_uncased_and_accents_stripped(tokenizer, vocabulary):
    ids, _ = tokenizer([("ÄPPLE Café", "crème")])
    plain, _ = tokenizer([("apple cafe", "creme")])
    np.testing.assert_array_equal(ids, plain)
    assert vocabulary["apple"] in ids[0] and vocabulary["[UNK]"] not in ids[0]


def test_truncation_keeps_the_title_and_is_counted(tokenizer, vocabulary):
    long_description = " ".join(["fresh"] * 40)
    ids, truncated = tokenizer([("Blood orange juice", long_description), ("Lime", "Green")])
    assert truncated.tolist() == [True, False]
    row = ids[0].tolist()
    assert row[:5] == [
        vocabulary["[CLS]"],
        vocabulary["blood"],
        vocabulary["orange"],
        vocabulary["juice"],
        vocabulary["[SEP]"],
    ]
    assert row[-1] == vocabulary["[SEP]"] and row.count(vocabulary["fresh"]) == 12 - 6
    # Exactly full is not truncated: 3 special tokens + 9 words.
    _, truncated = tokenizer([("a b c", "d e f g h i")])
    assert truncated.tolist() == [False]


def test_empty_description(tokenizer, vocabulary):
    ids, _ = tokenizer([("Lime", "")])
    assert ids[0, :4].tolist() == [vocabulary["[CLS]"], vocabulary["lime"], vocabulary["[SEP]"], vocabulary["[SEP]"]]


def test_too_short_a_length_is_refused():
    with pytest.raises(ValueError, match="at least"):
        TextTokenizer(max_length=3)
