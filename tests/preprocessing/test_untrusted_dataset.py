"""A dataset folder from someone untrusted: headers that are almost right, CSV the parser cannot read,
files that change while they are read, and memory that stays bounded whatever the files hold.

(Symlinks out of the folder, FIFOs and oversized photos go through the whole pipeline in
test_preprocess_pipeline.py, on the awkward dataset.)
"""

import io
import os
import tracemalloc

import apache_beam as beam
import pytest
from awkward_data import jpeg, photo
from PIL import Image

from camenn.preprocessing import dataset, embedding_cache, photo_files, transforms
from camenn.preprocessing.dataset import DatasetFormatError, RowError

EVENT_HEADER = "request_id,shopper_id,item_id,timestamp,hour,distance_km,converted"
EVENT_ROW = "r{n},s{n},i{n},17095{n:05d},9,1.25,{label}"


def header_error(header: str, columns=dataset.EVENT_COLUMNS) -> str:
    with pytest.raises(DatasetFormatError) as error:
        dataset.read_header(io.BytesIO(header.encode() + b"\n"), columns, "events.csv")
    return str(error.value)


@pytest.mark.parametrize("wrong", ["itemid", "Item ID", "item-id", "ItemId", " item_id", "item_idd"])
def test_a_misspelt_required_column_gets_the_right_name_suggested(wrong):
    message = header_error(EVENT_HEADER.replace("item_id", wrong))
    assert "lacks required column(s) item_id" in message and f"Did you mean item_id for {wrong!r}" in message


def test_a_column_named_twice_is_refused_naming_both_positions():
    message = header_error(EVENT_HEADER + ",hour")
    assert "hour is columns 5 and 8" in message


def test_a_misspelt_optional_column_is_refused_not_silently_ignored():
    header = "item_id,merchant_id,title,description,category,Coarse Category,price,image_path"
    message = header_error(header, dataset.ITEM_COLUMNS)
    assert "'Coarse Category'" in message and "coarse_category" in message
    # An extra column that only resembles an optional one is the user's own, and stays allowed.
    dataset.read_header(
        io.BytesIO(
            b"item_id,merchant_id,title,description,category,price,image_path,store_latitude,coarse_category_id\n"
        ),
        dataset.ITEM_COLUMNS,
        "items.csv",
    )


def read(data: bytes, size=None):
    return list(dataset.read_rows(io.BytesIO(data), dataset.EVENT_COLUMNS, "events.csv", size))


def test_records_the_csv_parser_refuses_are_quarantined_and_reading_goes_on():
    rows = [EVENT_ROW.format(n=n, label=0) for n in range(4)]
    rows[1] = rows[1].replace("s1", "s\x001")  # a NUL byte: Python's csv module raises on it
    rows[2] = rows[2].replace("i2", '"' + "x" * 200_000 + '"')  # a field over csv's 128 KiB limit
    read_back = read(("\n".join([EVENT_HEADER] + rows) + "\n").encode())
    assert [row for row, _ in read_back] == [1, 2, 3, 4]
    assert [getattr(r, "reason", None) for _, r in read_back] == [None, "malformed_row", "malformed_row", None]
    assert read_back[3][1]["request_id"] == "r3"
    with pytest.raises(DatasetFormatError, match="header row is not CSV"):
        read(b"request_id,shopper\x00_id\n")


def test_a_runaway_line_is_one_malformed_row_and_never_held_whole():
    runaway = b"r9," + b"," * (16 << 20)  # 16 MiB without a newline: 16 M fields if parsed
    data = (
        b"\n".join(
            [
                EVENT_HEADER.encode(),
                EVENT_ROW.format(n=1, label=1).encode(),
                runaway,
                EVENT_ROW.format(n=2, label=0).encode(),
            ]
        )
        + b"\n"
    )
    tracemalloc.start()
    try:
        read_back = read(data)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert [getattr(r, "reason", None) for _, r in read_back] == [None, "malformed_row", None]
    assert "over 1048576 characters" in read_back[1][1].detail
    assert peak < 4 * dataset.MAX_LINE_CHARS, peak  # the line is 16 MiB


def write_events(path, rows: int) -> int:
    with open(path, "w") as file:
        file.write(EVENT_HEADER + "\n")
        for n in range(rows):
            file.write(EVENT_ROW.format(n=n, label=n % 2) + "\n")
    return os.path.getsize(path)


def test_events_stream_in_bounded_memory(tmp_path):
    """ReadCsv and the row checks over an 8 MB events.csv allocate a small fraction of the file.

    (bench/events_stream.py measures the real thing: a 2 GB file through Beam, peak RSS.)
    """
    path = tmp_path / "events.csv"
    size = write_events(path, 180_000)
    read_csv = transforms.ReadCsv(dataset.EVENT_COLUMNS, dataset.EVENTS_FILE)
    tracemalloc.start()
    try:
        good = sum(1 for element in read_csv.process(str(path)) for _ in transforms._parse_events(element))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert good == 180_000
    assert peak < size / 16, f"peak {peak} bytes while reading a {size}-byte file: it was not streamed"


def test_rows_appended_while_the_file_is_read_wait_for_the_next_run(tmp_path):
    path = tmp_path / "events.csv"
    write_events(path, 20_000)  # well past the readers' buffers
    rows = transforms.ReadCsv(dataset.EVENT_COLUMNS, dataset.EVENTS_FILE).process(str(path))
    next(rows)
    with open(path, "a") as file:
        file.write("\n".join(EVENT_ROW.format(n=n, label=0) for n in range(20_000, 20_100)) + "\n")
    assert 1 + sum(1 for _ in rows) == 20_000


def test_a_file_truncated_while_it_is_read_ends_the_read_without_a_crash(tmp_path):
    path = tmp_path / "events.csv"
    write_events(path, 20_000)
    rows = transforms.ReadCsv(dataset.EVENT_COLUMNS, dataset.EVENTS_FILE).process(str(path))
    next(rows)
    os.truncate(path, os.path.getsize(path) // 2 + 7)  # mid-record
    rest = list(rows)
    assert 5_000 < len(rest) < 12_000
    assert all(isinstance(r, tuple) or r.value.reason == "malformed_row" for r in rest)


# --- Photos that change while they are read.

SALT = "|test|v1"


@pytest.fixture
def folder(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "p.jpg").write_bytes(jpeg(Image.fromarray(photo(1))))
    return tmp_path


def listing(image_path="images/p.jpg"):
    fields = {
        "item_id": "i1",
        "merchant_id": "m1",
        "title": "Apple",
        "description": "",
        "category": "Apple",
        "price": "1",
        "image_path": image_path,
    }
    return transforms.Listing(1, fields, dataset.parse_item(fields))


def outcomes(generator):
    """A DoFn's outputs: ("main", value) or (tag, value)."""
    return [(o.tag, o.value) if isinstance(o, beam.pvalue.TaggedOutput) else ("main", o) for o in generator]


def hash_then_decode(folder, between=lambda: None):
    [(tag, (key, (path, _)))] = outcomes(embedding_cache.HashImage(str(folder), SALT).process(listing()))
    assert tag == "main"
    between()
    [(tag, value)] = outcomes(embedding_cache.DecodeAndSplit((2, 2), str(folder), SALT).process((key, path)))
    return tag, value


def test_a_photo_read_twice_unchanged_is_decoded(folder):
    tag, (_, patches) = hash_then_decode(folder)
    assert tag == "main" and patches.shape[0] == 4


def test_a_photo_replaced_between_hashing_and_decoding_is_quarantined_not_cached(folder):
    other = jpeg(Image.fromarray(photo(2)))
    tag, (_, (reason, detail)) = hash_then_decode(folder, lambda: (folder / "images" / "p.jpg").write_bytes(other))
    assert (tag, reason) == (transforms.REJECTED, "image_changed") and "replaced" in detail


def test_a_photo_that_vanished_before_decoding_is_missing(folder):
    tag, (_, (reason, _)) = hash_then_decode(folder, lambda: (folder / "images" / "p.jpg").unlink())
    assert (tag, reason) == (transforms.REJECTED, "missing_image")


@pytest.mark.parametrize(
    "change, word",
    [
        (lambda path: open(path, "ab").write(b"\xff" * 10), "grew"),
        (lambda path: os.truncate(path, 100), "shrank"),
    ],
)
def test_a_photo_that_changes_size_while_it_is_read_is_image_changed(folder, change, word):
    path = folder / "images" / "p.jpg"
    with photo_files.open_photo(str(folder), str(path)) as (stream, size):
        change(path)
        with pytest.raises(RowError) as error:
            photo_files.read_opened(stream, size, "images/p.jpg")
    assert error.value.reason == "image_changed" and word in error.value.detail


def test_a_photo_file_over_the_byte_bound_is_refused_before_it_is_read(folder):
    [(tag, rejected)] = outcomes(embedding_cache.HashImage(str(folder), SALT, max_bytes=1000).process(listing()))
    assert tag == transforms.REJECTED and rejected.reason == "image_too_large"


def test_a_symlink_inside_the_folder_is_followed(folder):
    (folder / "images" / "alias.jpg").symlink_to("p.jpg")
    [(tag, _)] = outcomes(embedding_cache.HashImage(str(folder), SALT).process(listing("images/alias.jpg")))
    assert tag == "main"


def test_the_dataset_folder_itself_may_be_reached_through_a_symlink(folder, tmp_path_factory):
    link = tmp_path_factory.mktemp("links") / "dataset"
    link.symlink_to(folder, target_is_directory=True)
    [(tag, _)] = outcomes(embedding_cache.HashImage(str(link), SALT).process(listing()))
    assert tag == "main"
