"""The dataset format's checks: missing columns are errors, bad rows are RowErrors with stable reasons."""

import io

import pytest

from camenn import paths
from camenn.model import features
from camenn.preprocessing import dataset
from camenn.preprocessing.dataset import DatasetFormatError, Rejected, RowError

ITEM = {
    "item_id": "i1",
    "merchant_id": "m1",
    "title": " Pink  Lady ",
    "description": "Crisp.",
    "category": "Pink-Lady",
    "coarse_category": "Apple",
    "price": "12.50",
    "image_path": "images/i1.jpg",
}
EVENT = {
    "request_id": "r1",
    "shopper_id": "s1",
    "item_id": "i1",
    "timestamp": "1709510400",
    "hour": "9",
    "distance_km": "1.25",
    "converted": "1",
}


def item_reason(**changes) -> str:
    with pytest.raises(RowError) as error:
        dataset.parse_item({**ITEM, **changes})
    return error.value.reason


def event_reason(**changes) -> str:
    with pytest.raises(RowError) as error:
        dataset.parse_event({**EVENT, **changes})
    return error.value.reason


def test_good_rows_parse_to_typed_values():
    item = dataset.parse_item(ITEM)
    assert (item.title, item.price, item.coarse_category) == ("Pink Lady", 12.5, "Apple")
    event = dataset.parse_event(EVENT)
    assert (event.timestamp, event.hour, event.distance_km, event.converted) == (1709510400, 9, 1.25, 1)


def test_coarse_category_is_optional():
    row = {k: v for k, v in ITEM.items() if k != "coarse_category"}
    assert dataset.parse_item(row).coarse_category == "Pink-Lady"
    assert dataset.parse_item({**ITEM, "coarse_category": ""}).coarse_category == "Pink-Lady"


@pytest.mark.parametrize(
    "changes,reason",
    [
        ({"item_id": " "}, "missing_field"),
        ({"merchant_id": ""}, "missing_field"),
        ({"category": ""}, "missing_field"),
        ({"title": "  "}, "empty_text"),
        ({"price": "-4.5"}, "bad_price"),
        ({"price": "0"}, "bad_price"),
        ({"price": "cheap"}, "bad_price"),
        ({"price": "nan"}, "bad_price"),
        ({"price": ""}, "missing_field"),
        ({"image_path": "/etc/passwd"}, "bad_image_path"),
        ({"image_path": "images/../../x.jpg"}, "bad_image_path"),
        ({"image_path": "C:/x.jpg"}, "bad_image_path"),
        ({"image_path": ""}, "missing_field"),
    ],
)
def test_bad_item_rows(changes, reason):
    assert item_reason(**changes) == reason
    assert reason in dataset.ITEM_REASONS


@pytest.mark.parametrize(
    "changes,reason",
    [
        ({"request_id": ""}, "missing_field"),
        ({"shopper_id": ""}, "missing_field"),
        ({"item_id": ""}, "missing_field"),
        ({"timestamp": "yesterday"}, "bad_timestamp"),
        ({"timestamp": "-5"}, "bad_timestamp"),
        ({"hour": "24"}, "bad_hour"),
        ({"hour": "9.5"}, "bad_hour"),
        ({"distance_km": "-0.1"}, "bad_distance"),
        ({"distance_km": "inf"}, "bad_distance"),
        ({"converted": ""}, "missing_label"),
        ({"converted": "2"}, "bad_label"),
        ({"converted": "yes"}, "bad_label"),
    ],
)
def test_bad_event_rows(changes, reason):
    assert event_reason(**changes) == reason
    assert reason in dataset.EVENT_REASONS


def test_missing_required_column_names_it():
    stream = io.BytesIO(b"item_id,title,price\ni1,Apple,1\n")
    with pytest.raises(DatasetFormatError, match="merchant_id, description, category, image_path"):
        dataset.read_header(stream, dataset.ITEM_COLUMNS, dataset.ITEMS_FILE)


def test_rows_with_invalid_utf8_or_wrong_field_count_are_rejected_not_raised():
    header = ",".join(EVENT).encode()
    good = ",".join(EVENT.values()).encode()
    data = b"\n".join([header, good, b"r2,s\xe5,i1,1,2,3,0", b"r3,s1", b"", good.replace(b"r1", b"r4")]) + b"\n"
    rows = list(dataset.read_rows(io.BytesIO(data), dataset.EVENT_COLUMNS, dataset.EVENTS_FILE))
    assert [row for row, _ in rows] == [1, 2, 3, 4]
    assert rows[0][1] == EVENT and rows[3][1][features.REQUEST_ID] == "r4"
    not_utf8, malformed = rows[1][1], rows[2][1]
    assert isinstance(not_utf8, Rejected) and not_utf8.reason == "not_utf8"
    assert not_utf8.fields[features.SHOPPER_ID] == "s\\xe5"  # shown escaped in the quarantine file
    assert isinstance(malformed, Rejected) and malformed.reason == "malformed_row"


def test_byte_order_mark_and_quoted_newlines():
    data = (
        "\ufeff" + ",".join(ITEM) + "\n" + ",".join(ITEM.values()).replace("Crisp.", '"Crisp,\nsweet."') + "\n"
    ).encode()
    [(row, fields)] = list(dataset.read_rows(io.BytesIO(data), dataset.ITEM_COLUMNS, dataset.ITEMS_FILE))
    assert fields["item_id"] == "i1" and dataset.parse_item(fields).description == "Crisp, sweet."


def test_merchant_size_thresholds():
    assert [dataset.merchant_size_label(n) for n in (1, 9, 10, 29, 30, 500)] == [
        "small",
        "small",
        "medium",
        "medium",
        "large",
        "large",
    ]


def test_readme_documents_every_column_and_reason():
    readme = (paths.REPO_ROOT / "README.md").read_text(encoding="utf-8")
    for column in dataset.ITEM_COLUMNS + dataset.EVENT_COLUMNS:
        assert (
            f"| `{column.name}` | {column.type} | {'yes' if column.required else 'no'} | {column.meaning} |" in readme
        )
    for reason in {**dataset.ITEM_REASONS, **dataset.EVENT_REASONS}:
        assert f"`{reason}`" in readme
