"""Test data for preprocessing: awkward photos, and the rows `add_awkward_rows` adds to a tiny sample.

`AWKWARD_*` list what it adds and what preprocessing must make of it, so the tests can check the
quarantine arithmetic exactly. (A module with its own name: `conftest` is ambiguous across test folders.)
"""

import csv
import io
import os
import struct
import threading
import time
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

from camenn.preprocessing.photo_files import MAX_PHOTO_BYTES
from camenn.simulator import sample

TINY = dict(seed=0, num_listings=24, num_merchants=4, num_shoppers=8, num_events=120)
# Awkward photos that preprocessing converts and keeps (their item_ids); "linked" is a symlink to another
# photo inside the folder, which is fine.
KEPT_PHOTOS = ("gray", "rgba", "cmyk", "png16", "huge", "linked")
# Added items.csv rows that must be quarantined, by reason: besides bad rows, photos a dataset folder from
# someone untrusted may hold (symlinks out of the folder, a FIFO, an endless file).
AWKWARD_ITEM_REASONS = {
    "image_too_large": 2,
    "duplicate_item_id": 1,
    "bad_image_path": 4,
    "malformed_row": 1,
    "missing_field": 1,
    "missing_image": 1,
}
# How long a FIFO photo may block preprocessing before the test data unblocks it (so that a regression
# fails the test with a wrong reason instead of hanging it).
FIFO_WATCHDOG_SECONDS = 300
CLICKS_PER_KEPT_PHOTO = 1
CLICKS_ON_BOMB = 2
AWKWARD_EVENT_REASONS = {"item_quarantined": CLICKS_ON_BOMB, "bad_timestamp": 1, "malformed_row": 1}


def jpeg(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=85)
    return buffer.getvalue()


def png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def photo(seed: int = 0, size=(96, 80)) -> np.ndarray:
    """A smooth colour photo-like array (uint8 [H, W, 3])."""
    y, x = np.mgrid[0 : size[1], 0 : size[0]]
    rgb = np.stack([x * 255 // size[0], y * 255 // size[1], (x + y + 40 * seed) % 256], -1)
    return rgb.astype(np.uint8)


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height but holds 1 KiB of pixel data (a decompression bomb's shape)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
        + chunk(b"IDAT", zlib.compress(bytes(1024)))
        + chunk(b"IEND", b"")
    )


def awkward_photos() -> dict:
    """File bytes of the awkward photos preprocessing must convert and keep."""
    rgb = Image.fromarray(photo(1))
    gray16 = photo(2)[..., 0].astype(np.uint16) * 257
    rgba = np.dstack([photo(3), np.full(photo(3).shape[:2], 128, np.uint8)])
    return {
        "gray": jpeg(rgb.convert("L")),
        "rgba": png(Image.fromarray(rgba, "RGBA")),
        "cmyk": jpeg(rgb.convert("CMYK")),
        "png16": png(Image.fromarray(gray16)),
        "huge": jpeg(Image.new("RGB", (8000, 8000), (200, 120, 40))),
    }


def _read_csv(path: Path):
    return list(csv.reader(io.StringIO(path.read_bytes().decode("utf-8", "surrogateescape"), newline="")))


def _write_csv(path: Path, rows) -> None:
    text = io.StringIO()
    csv.writer(text, lineterminator="\n").writerows(rows)
    path.write_bytes(text.getvalue().encode("utf-8", "surrogateescape"))


def add_awkward_rows(folder: Path) -> None:
    """Appends KEPT_PHOTOS listings, the AWKWARD_ITEM_REASONS rows and the AWKWARD_EVENT_REASONS rows."""
    items, events = _read_csv(folder / "items.csv"), _read_csv(folder / "events.csv")
    template = dict(zip(items[0], items[1]))

    def item_row(**changes):
        return list({**template, **changes}.values())

    new_items = []
    for name, data in awkward_photos().items():
        (folder / "images" / f"{name}.img").write_bytes(data)
        new_items.append(
            item_row(item_id=name, title=f"Awkward {name}", description="", image_path=f"images/{name}.img")
        )
    (folder / "images" / "bomb.png").write_bytes(png_header_only(20000, 20000))
    new_items += [
        item_row(item_id="bomb", image_path="images/bomb.png"),
        item_row(),  # the same item_id as the first listing: duplicate_item_id
        item_row(item_id="escape", image_path="../outside.jpg"),
        ["malformed", "only-two-fields"],
        item_row(item_id="no-merchant", merchant_id=""),
        item_row(item_id="linked", title="Awkward linked", image_path="images/linked.jpg"),
        *[item_row(item_id=item_id, image_path=path) for item_id, path in add_untrusted_files(folder).items()],
    ]
    # A simulated click (the sample's bad events have request ids rb.../rx...).
    click = dict(zip(events[0], next(row for row in events[1:] if row[0][1].isdigit())))

    def event_row(**changes):
        return list({**click, **changes}.values())

    new_events = [event_row(request_id=f"q-{name}", item_id=name) for name in KEPT_PHOTOS]
    new_events += [event_row(request_id=f"q-bomb-{k}", item_id="bomb") for k in range(CLICKS_ON_BOMB)]
    new_events += [event_row(request_id="q-time", timestamp="yesterday"), ["q-malformed", "s0001"]]
    _write_csv(folder / "items.csv", items + new_items)
    _write_csv(folder / "events.csv", events + new_events)


def add_untrusted_files(folder: Path) -> dict:
    """Photo files that must not be read as photos: {item_id: image_path} (with `linked.jpg`, which may)."""
    outside = folder.parent / f"{folder.name}-outside"  # a real photo, readable, but not the dataset's
    (outside / "photos").mkdir(parents=True)
    (outside / "photos" / "secret.jpg").write_bytes(jpeg(Image.fromarray(photo(4))))
    images = folder / "images"
    (images / "linked.jpg").symlink_to("gray.img")
    (images / "outside.jpg").symlink_to(outside / "photos" / "secret.jpg")
    (folder / "photos_elsewhere").symlink_to(outside / "photos", target_is_directory=True)
    os.mkfifo(images / "pipe.jpg")
    _unblock_fifo_later(images / "pipe.jpg", FIFO_WATCHDOG_SECONDS)
    with open(images / "endless.jpg", "wb") as file:  # sparse: no disk, but over the size bound
        file.truncate(MAX_PHOTO_BYTES + 1)
    return {
        "symlink_out": "images/outside.jpg",
        "symlinked_folder": "photos_elsewhere/secret.jpg",
        "control_char": "images/a\tb.jpg",
        "fifo": "images/pipe.jpg",
        "endless": "images/endless.jpg",
    }


def _unblock_fifo_later(path: Path, seconds: float) -> None:
    def unblock():
        deadline = time.monotonic() + 3600
        time.sleep(seconds)
        while time.monotonic() < deadline:
            try:  # succeeds only while a reader has the FIFO open (blocked on it)
                os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))
            except OSError:
                pass
            time.sleep(1)

    threading.Thread(target=unblock, name="fifo-watchdog", daemon=True).start()


def expected_item_reasons() -> dict:
    reasons = {}
    for _, reason in sample.BAD_ITEMS:
        reasons[reason] = reasons.get(reason, 0) + 1
    for reason, n in AWKWARD_ITEM_REASONS.items():
        reasons[reason] = reasons.get(reason, 0) + n
    return reasons


def expected_event_reasons() -> dict:
    reasons = {"item_quarantined": len(sample.BAD_ITEMS) * sample.BAD_CLICKS_PER_ITEM}
    for _, reason in sample.BAD_EVENTS:
        reasons[reason] = reasons.get(reason, 0) + 1
    for reason, n in AWKWARD_EVENT_REASONS.items():
        reasons[reason] = reasons.get(reason, 0) + n
    return reasons
