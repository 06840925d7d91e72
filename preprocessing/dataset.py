"""The dataset folder CameNN reads, and the row checks that send bad rows to quarantine.

A dataset is a folder a user can make from their own logs:

    DIR/items.csv    one row per listing (ITEM_COLUMNS)
    DIR/events.csv   one row per click on a listing (EVENT_COLUMNS)
    DIR/images/      the listings' photos, named by `image_path` relative to DIR

Both files are UTF-8 CSV with a header row; columns may come in any order and extra columns are ignored.
A missing required column, a column named twice, or a column spelled like one of ours but not quite
("itemid", "Item ID") is a `DatasetFormatError` that names it and suggests the right name (the file cannot
be read at all). A bad row is never an exception: `parse_item` and `parse_event` raise `RowError` with a
stable reason from ITEM_REASONS / EVENT_REASONS, and the caller quarantines the row with that reason.

The folder is untrusted input, so reading it is bounded: `read_rows` streams (one record in memory at a
time, a physical line at most MAX_LINE_CHARS), turns CSV the parser cannot read (a NUL byte, a field over
the csv module's 128 KiB limit) into `malformed_row` rows, and reads no further than `size` bytes, the
file's size when the run started, so rows appended while it runs are left for the next run.

`merchant_size` is not a column: preprocessing derives it from the number of listings it keeps for each
merchant (`merchant_size_label`), so a user's logs need nothing extra and the sample follows the same rule.
"""

import csv
import dataclasses
import difflib
import io
import math
import re
from typing import BinaryIO, Dict, Iterator, List, Optional, Tuple, Union

from camenn.model import features

ITEMS_FILE = "items.csv"
EVENTS_FILE = "events.csv"
IMAGES_DIR = "images"


@dataclasses.dataclass(frozen=True)
class Column:
    name: str
    type: str
    required: bool
    meaning: str


ITEM_COLUMNS = (
    Column(features.ITEM_ID, "string", True, "unique listing id"),
    Column(features.MERCHANT_ID, "string", True, "the merchant offering the listing"),
    Column("title", "string", True, "the merchant's title; empty -> quarantined (`empty_text`)"),
    Column("description", "string", True, "the merchant's description; may be empty"),
    Column(features.CATEGORY, "string", True, "fine product category, e.g. `Pink-Lady`"),
    Column(
        features.COARSE_CATEGORY,
        "string",
        False,
        "coarse category, e.g. `Apple` (hard ITA/TIA negatives share it); empty or absent -> category",
    ),
    Column(features.PRICE, "float", True, "listing price, > 0"),
    Column("image_path", "string", True, "the listing's photo, relative to the dataset folder"),
    Column("store_lat", "float", False, "store latitude; informational, not read by preprocessing"),
    Column("store_lon", "float", False, "store longitude; informational, not read by preprocessing"),
)
EVENT_COLUMNS = (
    Column(features.REQUEST_ID, "string", True, "the request (one list shown to a shopper) the click belongs to"),
    Column(features.SHOPPER_ID, "string", True, "the shopper who clicked"),
    Column(features.ITEM_ID, "string", True, "the listing clicked; must be a good row of items.csv"),
    Column(features.TIMESTAMP, "int", True, "unix seconds; the last 20% of the time range is the eval split"),
    Column(features.HOUR, "int", True, "local hour of the click, 0..23"),
    Column(features.DISTANCE_KM, "float", True, "shopper to store, km, >= 0"),
    Column(features.LABEL, "int", True, "1 if the click turned into an order, else 0"),
)

# Quarantine reasons, with what each means (README and the summary use these names).
COMMON_REASONS = {
    "malformed_row": "the CSV record has a different number of fields than the header, or is not CSV the "
    "parser reads (a NUL byte, a field over 128 KiB, a line over 1 MiB)",
    "not_utf8": "a field is not valid UTF-8",
    "missing_field": "a required field is empty",
}
ITEM_REASONS = {
    **COMMON_REASONS,
    "empty_text": "the title is empty",
    "bad_price": "price is not a finite number > 0",
    "bad_image_path": "image_path is absolute, leaves the dataset folder (also through a symlink) or holds a "
    "control character",
    "duplicate_item_id": "an earlier row has the same item_id (the first good row wins)",
    "missing_image": "the image file does not exist, cannot be read or is not a regular file (a folder, a FIFO)",
    "image_changed": "the photo changed while preprocessing read it (it grew, shrank or was replaced)",
    "corrupt_image": "the image bytes are not an image Pillow can decode",
    "truncated_image": "the image file ends before its data does",
    "image_too_small": "a patch would be under 16 px on a side (upscaling would invent detail)",
    "image_too_large": "more than 8192 x 8192 pixels (a decompression bomb guard), or a file over 256 MiB",
    "embedding_missing": "the image encoder returned no embedding for the photo",
}
EVENT_REASONS = {
    **COMMON_REASONS,
    "bad_timestamp": "timestamp is not an integer >= 0",
    "bad_hour": "hour is not an integer in 0..23",
    "bad_distance": "distance_km is not a finite number >= 0",
    "missing_label": "converted is empty",
    "bad_label": "converted is not 0 or 1",
    "unknown_item": "item_id is not in items.csv",
    "item_quarantined": "the listing's row was quarantined (detail: the listing's reason)",
}

# merchant_size from the number of the merchant's listings that preprocessing keeps.
MEDIUM_MERCHANT_LISTINGS = 10
LARGE_MERCHANT_LISTINGS = 30


def merchant_size_label(num_listings: int) -> str:
    if num_listings >= LARGE_MERCHANT_LISTINGS:
        return "large"
    if num_listings >= MEDIUM_MERCHANT_LISTINGS:
        return "medium"
    return "small"


class DatasetFormatError(ValueError):
    """The dataset cannot be read at all (a missing file or a missing required column)."""


class RowError(ValueError):
    """One bad row: `reason` is a stable name from ITEM_REASONS / EVENT_REASONS."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


@dataclasses.dataclass(frozen=True)
class Item:
    item_id: str
    merchant_id: str
    title: str
    description: str
    category: str
    coarse_category: str
    price: float
    image_path: str


@dataclasses.dataclass(frozen=True)
class Event:
    request_id: str
    shopper_id: str
    item_id: str
    timestamp: int
    hour: int
    distance_km: float
    converted: int


@dataclasses.dataclass(frozen=True)
class Rejected:
    """A quarantined row: where it came from, why, and its fields as read (invalid UTF-8 escaped)."""

    file: str
    row: int
    reason: str
    detail: str
    fields: Dict[str, str]


# One physical line of a dataset CSV: longer ones are skipped (a row can still span lines in quotes).
MAX_LINE_CHARS = 1 << 20


def _normalized(name: str) -> str:
    """A column name without case, spaces or punctuation: "Item ID", "item-id" and "itemid" agree."""
    return re.sub(r"[^0-9a-z]", "", name.lower())


def _looks_like(expected: str, names: List[str], close: bool) -> List[str]:
    """The names in `names` that are probably `expected` misspelt (same normalized form, or close to it)."""
    same = [n for n in names if _normalized(n) == _normalized(expected)]
    if same or not close:
        return same
    by_normalized = {_normalized(n): n for n in names}
    return [by_normalized[n] for n in difflib.get_close_matches(_normalized(expected), list(by_normalized), 1, 0.8)]


def check_header(header: List[str], columns, file_name: str) -> None:
    """Raises DatasetFormatError for a header the rows cannot be read by, suggesting the right names.

    Args:
        header: the header row as read.
        columns: ITEM_COLUMNS or EVENT_COLUMNS.
        file_name: for the message.

    Example:
    >>> check_header(["itemid"], EVENT_COLUMNS[2:3], "events.csv")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    camenn.preprocessing.dataset.DatasetFormatError: ... item_id; ... Did you mean item_id for 'itemid'? ...
    """
    ours = {c.name for c in columns}
    repeated = sorted({name for name in header if name in ours and header.count(name) > 1})
    if repeated:
        where = "; ".join(
            f"{name} is columns {' and '.join(str(i + 1) for i, h in enumerate(header) if h == name)}"
            for name in repeated
        )
        raise DatasetFormatError(
            f"{file_name} names a column more than once ({where}): which one holds the data "
            "is ambiguous; keep one. See README 'Dataset format'."
        )
    unknown = [name for name in header if name not in ours]
    missing = [c.name for c in columns if c.required and c.name not in header]
    if missing:
        hints = [
            f"{name} for {', '.join(repr(n) for n in _looks_like(name, unknown, close=True))}"
            for name in missing
            if _looks_like(name, unknown, close=True)
        ]
        raise DatasetFormatError(
            f"{file_name} lacks required column(s) {', '.join(missing)}; it has: {', '.join(header) or '(none)'}. "
            + (f"Did you mean {'; '.join(hints)}? " if hints else "")
            + "See README 'Dataset format'."
        )
    # An optional column spelt another way would be ignored without a word: its data silently lost.
    misspelt = [
        (c.name, n)
        for c in columns
        if not c.required and c.name not in header
        for n in _looks_like(c.name, unknown, close=False)
    ]
    if misspelt:
        raise DatasetFormatError(
            f"{file_name} has column(s) {', '.join(repr(n) for _, n in misspelt)}, spelt like the optional "
            f"column(s) {', '.join(name for name, _ in misspelt)} but not the same, so they would be ignored: "
            "rename them. See README 'Dataset format'."
        )


def read_header(stream: BinaryIO, columns, file_name: str) -> List[str]:
    """Reads and checks the header row of a dataset CSV."""
    return _open_csv(stream, columns, file_name)[0]


class _BoundedLines:
    """The lines of a text stream for csv.reader, none longer than `limit` characters.

    The rest of an overlong line is read and dropped in pieces, never held whole (a 2 GB file without a
    newline would otherwise be one 2 GB string); `overlong` counts the lines cut, `lines` all lines.
    """

    def __init__(self, text: io.TextIOBase, limit: int = MAX_LINE_CHARS):
        self.text, self.limit, self.overlong, self.lines = text, limit, 0, 0

    def __iter__(self):
        return self

    def __next__(self) -> str:
        line = self.text.readline(self.limit + 1)
        if not line:
            raise StopIteration
        self.lines += 1
        if len(line) > self.limit and not line.endswith("\n"):
            while True:
                rest = self.text.readline(1 << 16)
                if not rest or rest.endswith("\n"):
                    break
            self.overlong += 1
            return "\n"
        return line


class _Prefix(io.RawIOBase):
    """The first `size` bytes of a binary stream: a file that grows while it is read ends where it began."""

    def __init__(self, stream: BinaryIO, size: int):
        self.stream, self.left = stream, size

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        if self.left <= 0:
            return 0
        data = self.stream.read(min(len(buffer), self.left))
        buffer[: len(data)] = data
        self.left -= len(data)
        return len(data)


def _open_csv(stream: BinaryIO, columns, file_name: str, size: Optional[int] = None):
    if size is not None:
        stream = io.BufferedReader(_Prefix(stream, size), 1 << 16)
    # Invalid UTF-8 is read with surrogate escapes so that one bad byte rejects one row, not the file.
    text = io.TextIOWrapper(stream, encoding="utf-8-sig", errors="surrogateescape", newline="")
    lines = _BoundedLines(text)
    reader = csv.reader(lines)
    try:
        header = next(reader, [])
    except csv.Error as error:
        raise DatasetFormatError(f"{file_name}: the header row is not CSV ({error})") from None
    if lines.overlong:
        raise DatasetFormatError(f"{file_name}: the header row is over {MAX_LINE_CHARS} characters")
    check_header(header, columns, file_name)
    return header, reader, lines


def read_rows(
    stream: BinaryIO, columns, file_name: str, size: Optional[int] = None
) -> Iterator[Tuple[int, Union[Dict[str, str], Rejected]]]:
    """Yields (row number, fields) per CSV record, or (row number, Rejected) for records that are not rows.

    Rows are numbered from 1 after the header; blank lines are not rows. Memory stays bounded whatever the
    file holds: one record at a time, each physical line at most MAX_LINE_CHARS.

    Args:
        stream: the file, binary.
        columns: ITEM_COLUMNS or EVENT_COLUMNS (the header is checked against them).
        file_name: for messages and Rejected.file.
        size: read at most this many bytes (the file's size when the run started); None reads to the end.

    Example:
    >>> import io
    >>> data = io.BytesIO(b"item_id\\ni1\\ni\\x002\\n")  # a header, a good row, a row with a NUL byte
    >>> [(row, getattr(fields, "reason", fields)) for row, fields in read_rows(data, EVENT_COLUMNS[2:3], "x.csv")]
    [(1, {'item_id': 'i1'}), (2, 'malformed_row')]
    """
    header, reader, lines = _open_csv(stream, columns, file_name, size)
    row = 0
    while True:
        overlong, consumed = lines.overlong, lines.lines
        try:
            record = next(reader)
        except StopIteration:
            return
        except csv.Error as error:  # the parser has consumed the bad line and goes on with the next
            row += 1
            yield row, Rejected(file_name, row, "malformed_row", f"not CSV the parser reads: {error}", {})
            if lines.lines == consumed:
                return  # nothing consumed: stop rather than loop
            continue
        if lines.overlong != overlong:
            row += 1
            yield row, Rejected(file_name, row, "malformed_row", f"a line over {MAX_LINE_CHARS} characters", {})
            continue
        if not record:
            continue
        row += 1
        fields = {name: _printable(value) for name, value in zip(header, record)}
        if len(record) != len(header):
            yield (
                row,
                Rejected(file_name, row, "malformed_row", f"{len(record)} fields, header has {len(header)}", fields),
            )
            continue
        bad = [name for name, value in zip(header, record) if _has_surrogates(value)]
        if bad:
            yield row, Rejected(file_name, row, "not_utf8", f"invalid UTF-8 in {', '.join(bad)}", fields)
            continue
        yield row, dict(zip(header, record))


def _has_surrogates(value: str) -> bool:
    return any("\udc80" <= ch <= "\udcff" for ch in value)


def _printable(value: str) -> str:
    """The field as valid UTF-8 text, invalid bytes shown as \\xNN (for the quarantine file)."""
    return value.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def _required(fields: Dict[str, str], name: str) -> str:
    value = fields.get(name, "").strip()
    if not value:
        raise RowError("missing_field", f"{name} is empty")
    return value


def _number(text: str) -> Optional[float]:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _integer(text: str) -> Optional[int]:
    try:
        return int(text.strip())
    except ValueError:
        return None


def parse_item(fields: Dict[str, str]) -> Item:
    """A checked Item from one items.csv row, or RowError."""
    item_id = _required(fields, features.ITEM_ID)
    merchant_id = _required(fields, features.MERCHANT_ID)
    title = " ".join(fields.get("title", "").split())
    if not title:
        raise RowError("empty_text", "title is empty")
    category = _required(fields, features.CATEGORY)
    price_text = _required(fields, features.PRICE)
    price = _number(price_text)
    if price is None or price <= 0:
        raise RowError("bad_price", f"price {price_text!r} is not a number > 0")
    image_path = _required(fields, "image_path")
    parts = image_path.replace("\\", "/").split("/")
    if image_path.startswith(("/", "\\")) or ":" in parts[0] or ".." in parts:
        raise RowError("bad_image_path", f"{image_path!r} must be relative to the dataset folder")
    if any(ord(ch) < 32 or ch == "\x7f" for ch in image_path):
        raise RowError("bad_image_path", f"{image_path!r} holds a control character")
    return Item(
        item_id=item_id,
        merchant_id=merchant_id,
        title=title,
        description=" ".join(fields.get("description", "").split()),
        category=category,
        coarse_category=fields.get(features.COARSE_CATEGORY, "").strip() or category,
        price=price,
        image_path="/".join(parts),
    )


def parse_event(fields: Dict[str, str]) -> Event:
    """A checked Event from one events.csv row, or RowError."""
    request_id = _required(fields, features.REQUEST_ID)
    shopper_id = _required(fields, features.SHOPPER_ID)
    item_id = _required(fields, features.ITEM_ID)
    timestamp = _integer(fields.get(features.TIMESTAMP, ""))
    if timestamp is None or timestamp < 0:
        raise RowError("bad_timestamp", f"{fields.get(features.TIMESTAMP)!r} is not an integer >= 0")
    hour = _integer(fields.get(features.HOUR, ""))
    if hour is None or not 0 <= hour <= 23:
        raise RowError("bad_hour", f"{fields.get(features.HOUR)!r} is not an integer in 0..23")
    distance = _number(fields.get(features.DISTANCE_KM, ""))
    if distance is None or distance < 0:
        raise RowError("bad_distance", f"{fields.get(features.DISTANCE_KM)!r} is not a number >= 0")
    label = fields.get(features.LABEL, "").strip()
    if not label:
        raise RowError("missing_label", f"{features.LABEL} is empty")
    if label not in ("0", "1"):
        raise RowError("bad_label", f"{features.LABEL} {label!r} is not 0 or 1")
    return Event(request_id, shopper_id, item_id, timestamp, hour, distance, int(label))
