"""`camenn sample`: builds the embedded sample dataset from the Grocery Store Dataset and the shopper simulator.

Listings are real store photos (downscaled to IMAGE_SIDE px, JPEG) with the real product title (the
`Title:` line of `*_Information.txt`, else the class name) and description (`*_Description.txt`) of their
class. All randomness comes from one numpy Generator seeded by `seed`, so the same seed and source give
byte-identical files.

Catalog rules
- Merchants: 10% planned large, 20% medium, 70% small; listing counts are apportioned by weights 12 / 4 /
  1.5 (times LogNormal(0, 0.25)), at least one each. `merchant_size` is then what preprocessing derives
  from those counts (`dataset.merchant_size_label`: <10 small, 10-29 medium, >=30 large).
- A merchant lists distinct classes: large ones across the catalogue, the others mostly (weight 4 against
  0.5) from one speciality group (fruit, vegetables or packages). Each listing gets its own photo of its
  class. Stores lie around the city centre (Stockholm, the dataset's city), ~3-4 km per axis.
- Price: a base price per class (group median 28 / 22 / 24 times LogNormal(0, 0.35)) times a merchant
  factor (large 0.92, medium 1.0, small 1.1) times LogNormal(0, 0.12), two decimals.
- Quality: round(20%) of listings are degraded, drawn with weights small 6, medium 2, large 1: half get an
  inaccurate text (title and description of a class of another coarse category), half a vague photo
  (Gaussian blur of radius 3.5-6 px, a tight crop keeping 22-32% of the side, or darkening to 12-22%
  brightness). truth.csv says which (training never reads it).
- Deliberately bad rows (BAD_ITEMS, BAD_EVENTS; `include_bad_rows`): a handful of listings and events that
  preprocessing must quarantine, each with its expected reason in truth.csv; three clicks are copied onto
  each bad listing so the quarantine of their events shows too.

The clicks and their labels come from `camenn.simulator.shoppers` (its docstring has the rules).
"""

import csv
import dataclasses
import io
import json
import logging
import math
import shutil
from pathlib import Path
from typing import Dict, List, Tuple

import numpy as np
from PIL import Image, ImageEnhance, ImageFilter

from camenn.model import features
from camenn.preprocessing import dataset
from camenn.simulator import defaults
from camenn.simulator import shoppers as shopper_simulator

log = logging.getLogger(__name__)

IMAGE_SIDE = 192
JPEG_QUALITY = 85
CITY_CENTRE = (59.3326, 18.0649)  # Stockholm (lat, lon)
DEGRADED_FRACTION = 0.2
SIZE_PLAN = (("large", 0.1, 12.0, 0.92), ("medium", 0.2, 4.0, 1.0), ("small", 0.7, 1.5, 1.1))
PRICE_FACTOR = {name: factor for name, _, _, factor in SIZE_PLAN}
DEGRADE_WEIGHT = {"small": 6.0, "medium": 2.0, "large": 1.0}
GROUP_PRICE = {"Fruit": 28.0, "Vegetables": 22.0, "Packages": 24.0}
VAGUE_KINDS = ("blur", "crop", "dark")
# (what is wrong, the quarantine reason preprocessing must give)
BAD_ITEMS = (
    ("image file not in images/", "missing_image"),
    ("image bytes are not an image", "corrupt_image"),
    ("JPEG cut in half", "truncated_image"),
    ("10x10 photo", "image_too_small"),
    ("price -4.50", "bad_price"),
    ("empty title", "empty_text"),
    ("Latin-1 title bytes", "not_utf8"),
)
BAD_CLICKS_PER_ITEM = 3
BAD_EVENTS = (
    ("item_id not in items.csv", "unknown_item"),
    ("item_id not in items.csv", "unknown_item"),
    ("converted empty", "missing_label"),
    ("converted empty", "missing_label"),
    ("converted 'yes'", "bad_label"),
    ("hour 24", "bad_hour"),
    ("distance_km -1.5", "bad_distance"),
)
ITEM_HEADER = [c.name for c in dataset.ITEM_COLUMNS]
EVENT_HEADER = [c.name for c in dataset.EVENT_COLUMNS]


@dataclasses.dataclass(frozen=True)
class ProductClass:
    name: str
    coarse: str
    group: str
    title: str
    description: str
    photos: Tuple[str, ...]  # paths relative to the source folder


def read_classes(source: Path) -> List[ProductClass]:
    """The 81 classes of the Grocery Store Dataset with their real texts and all their photos."""
    photos: Dict[int, List[str]] = {}
    for split in ("train.txt", "val.txt", "test.txt"):
        for line in (source / split).read_text().splitlines():
            if line.strip():
                path, fine_id, _ = (part.strip() for part in line.split(","))
                photos.setdefault(int(fine_id), []).append(path)
    classes = []
    with open(source / "classes.csv", newline="", encoding="utf-8") as file:
        for row in csv.DictReader(file):
            name, fine_id = row["Class Name (str)"], int(row["Class ID (int)"])
            description_path = source / row["Product Description Path (str)"].lstrip("/")
            information_path = description_path.with_name(f"{name}_Information.txt")
            title = name.replace("-", " ")
            if information_path.exists():
                for line in information_path.read_text(encoding="utf-8-sig").splitlines():
                    if line.startswith("Title:"):
                        title = " ".join(line[len("Title:") :].split()) or title
            classes.append(
                ProductClass(
                    name=name,
                    coarse=row["Coarse Class Name (str)"],
                    group=row["Iconic Image Path (str)"].strip("/").split("/")[1],
                    title=title,
                    description=" ".join(description_path.read_text(encoding="utf-8-sig").split()),
                    photos=tuple(photos[fine_id]),
                )
            )
    return classes


def _apportion(total: int, weights: np.ndarray) -> np.ndarray:
    """Integer counts >= 1 summing to `total`, proportional to weights (largest remainder)."""
    share = weights / weights.sum() * (total - len(weights))
    counts = np.floor(share).astype(int)
    counts[np.argsort(-(share - counts), kind="stable")[: total - len(weights) - counts.sum()]] += 1
    return counts + 1


def _store_latlon(east_north_km: np.ndarray) -> Tuple[float, float]:
    lat = CITY_CENTRE[0] + east_north_km[1] / 111.32
    lon = CITY_CENTRE[1] + east_north_km[0] / (111.32 * math.cos(math.radians(CITY_CENTRE[0])))
    return round(lat, 5), round(lon, 5)


def _photo(source: Path, relative: str) -> Image.Image:
    image = Image.open(source / relative).convert("RGB")
    image.thumbnail((IMAGE_SIDE, IMAGE_SIDE), Image.Resampling.LANCZOS)
    return image


def _vague(image: Image.Image, kind: str, rng: np.random.Generator) -> Tuple[Image.Image, str]:
    if kind == "blur":
        radius = rng.uniform(3.5, 6.0)
        return image.filter(ImageFilter.GaussianBlur(radius)), f"blur radius {radius:.1f} px"
    if kind == "crop":
        keep = rng.uniform(0.22, 0.32)
        width, height = image.size
        w, h = max(1, round(width * keep)), max(1, round(height * keep))
        left, top = rng.integers(0, width - w + 1), rng.integers(0, height - h + 1)
        cropped = image.crop((left, top, left + w, top + h)).resize(image.size, Image.Resampling.LANCZOS)
        return cropped, f"tight crop keeping {keep:.0%} of each side"
    factor = rng.uniform(0.12, 0.22)
    return ImageEnhance.Brightness(image).enhance(factor), f"dark, brightness x{factor:.2f}"


def _jpeg(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=JPEG_QUALITY, optimize=True)
    return buffer.getvalue()


def _csv_bytes(header: List[str], rows: List[List[str]]) -> bytes:
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    # surrogateescape lets the deliberately non-UTF-8 title through as its raw bytes.
    return text.getvalue().encode("utf-8", "surrogateescape")


# Each simulated click's true conversion probability, by (request_id, item_id): the ceiling of what any
# model can score on the data (evaluation only; training never reads it).
EVENTS_TRUTH_FILE = "events_truth.csv"


def build_sample(
    source: Path,
    output: Path,
    seed: int = defaults.SEED,
    num_listings: int = defaults.NUM_LISTINGS,
    num_merchants: int = defaults.NUM_MERCHANTS,
    num_shoppers: int = defaults.NUM_SHOPPERS,
    num_events: int = defaults.NUM_EVENTS,
    include_bad_rows: bool = True,
) -> dict:
    """Writes items.csv, events.csv, images/, truth.csv, events_truth.csv, LICENSE and README.md under `output`.

    Returns the counts written into README.md (listings by quality and merchant size, events, conversion
    rates by listing quality).
    """
    source, output = Path(source), Path(output)
    if not (source / "classes.csv").is_file():
        raise ValueError(
            f"{source} is not the Grocery Store Dataset's dataset/ folder (no classes.csv); get it "
            "from github.com/marcusklasson/GroceryStoreDataset"
        )
    requested = {"listings": num_listings, "merchants": num_merchants, "shoppers": num_shoppers, "events": num_events}
    for name, value in requested.items():
        if value < 1:
            raise ValueError(f"the number of {name} must be at least 1, got {value}")
    rng = np.random.default_rng(seed)
    classes = read_classes(source)
    coarse_names = sorted({c.coarse for c in classes})
    coarse_index = {name: i for i, name in enumerate(coarse_names)}
    num_merchants = max(1, min(num_merchants, num_listings))

    # Merchants: planned size, listing counts, store location.
    planned = []
    for name, share, _, _ in SIZE_PLAN[:-1]:
        planned += [name] * round(share * num_merchants)
    planned = (planned + ["small"] * num_merchants)[:num_merchants]
    planned = [planned[i] for i in rng.permutation(num_merchants)]
    plan_weight = {name: weight for name, _, weight, _ in SIZE_PLAN}
    weights = np.array([plan_weight[p] for p in planned]) * rng.lognormal(0.0, 0.25, num_merchants)
    counts = _apportion(num_listings, weights)
    stores = rng.normal(0.0, 1.0, (num_merchants, 2)) * np.where(np.array(planned) == "large", 4.0, 3.0)[:, None]
    merchant_ids = [f"m{n:03d}" for n in range(1, num_merchants + 1)]
    bad_item_merchants = rng.integers(num_merchants, size=len(BAD_ITEMS)) if include_bad_rows else []
    sizes = [dataset.merchant_size_label(int(n)) for n in counts]

    # Listings: (merchant, class), each with its own photo.
    groups = sorted({c.group for c in classes})
    photo_order = [list(rng.permutation(len(c.photos))) for c in classes]
    photo_next = [0] * len(classes)
    listing_merchant, listing_class, listing_photo = [], [], []
    for m in range(num_merchants):
        if planned[m] == "large":
            class_weight = np.ones(len(classes))
        else:
            speciality = groups[rng.integers(len(groups))]
            class_weight = np.array([4.0 if c.group == speciality else 0.5 for c in classes])
        chosen = rng.choice(
            len(classes), size=counts[m], replace=counts[m] > len(classes), p=class_weight / class_weight.sum()
        )
        for c in chosen:
            listing_merchant.append(m)
            listing_class.append(int(c))
            listing_photo.append(classes[c].photos[photo_order[c][photo_next[c] % len(classes[c].photos)]])
            photo_next[c] += 1
    order = rng.permutation(num_listings)
    listing_merchant = [listing_merchant[i] for i in order]
    listing_class = [listing_class[i] for i in order]
    listing_photo = [listing_photo[i] for i in order]
    item_ids = [f"i{n:05d}" for n in range(1, num_listings + 1)]

    base_price = np.array([GROUP_PRICE[c.group] for c in classes]) * rng.lognormal(0.0, 0.35, len(classes))
    merchant_factor = np.array([PRICE_FACTOR[p] for p in planned])
    prices = np.maximum(
        0.5,
        np.round(
            base_price[listing_class] * merchant_factor[listing_merchant] * rng.lognormal(0.0, 0.12, num_listings), 2
        ),
    )

    # Quality: which listings get an inaccurate text or a vague photo.
    num_degraded = round(DEGRADED_FRACTION * num_listings)
    degrade_weight = np.array([DEGRADE_WEIGHT[sizes[m]] for m in listing_merchant])
    degraded = rng.choice(num_listings, size=num_degraded, replace=False, p=degrade_weight / degrade_weight.sum())
    kinds = [features.INACCURATE_TEXT] * (num_degraded // 2) + [features.VAGUE_PHOTO] * (
        num_degraded - num_degraded // 2
    )
    quality = [features.OK_QUALITY] * num_listings
    for listing, kind in zip(degraded, rng.permutation(kinds)):
        quality[listing] = str(kind)

    if output.exists():
        shutil.rmtree(output / dataset.IMAGES_DIR, ignore_errors=True)
    (output / dataset.IMAGES_DIR).mkdir(parents=True, exist_ok=True)
    item_rows, truth_rows = [], []
    shown_class = list(listing_class)
    log.info("writing %d listings' photos to %s", num_listings, output / dataset.IMAGES_DIR)
    for i, item_id in enumerate(item_ids):
        product = classes[listing_class[i]]
        image = _photo(source, listing_photo[i])
        detail = ""
        if quality[i] == features.INACCURATE_TEXT:
            others = [j for j, c in enumerate(classes) if c.coarse != product.coarse]
            shown_class[i] = others[rng.integers(len(others))]
            detail = f"text of {classes[shown_class[i]].name}"
        elif quality[i] == features.VAGUE_PHOTO:
            image, detail = _vague(image, VAGUE_KINDS[rng.integers(len(VAGUE_KINDS))], rng)
        image_path = f"{dataset.IMAGES_DIR}/{item_id}.jpg"
        (output / image_path).write_bytes(_jpeg(image))
        shown = classes[shown_class[i]]
        lat, lon = _store_latlon(stores[listing_merchant[i]])
        item_rows.append(
            [
                item_id,
                merchant_ids[listing_merchant[i]],
                shown.title,
                shown.description,
                product.name,
                product.coarse,
                f"{prices[i]:.2f}",
                image_path,
                f"{lat:.5f}",
                f"{lon:.5f}",
            ]
        )
        truth_rows.append([item_id, quality[i], detail])

    listings = shopper_simulator.Listings(
        ids=item_ids,
        store=stores[listing_merchant],
        true_coarse=np.array([coarse_index[classes[c].coarse] for c in listing_class]),
        shown_coarse=np.array([coarse_index[classes[c].coarse] for c in shown_class]),
        price_ratio=prices / base_price[listing_class],
        inaccurate_text=np.array([q == features.INACCURATE_TEXT for q in quality]),
        vague_photo=np.array([q == features.VAGUE_PHOTO for q in quality]),
    )
    simulated_shoppers = shopper_simulator.make_shoppers(rng, num_shoppers, len(coarse_names))
    events = shopper_simulator.simulate_events(rng, simulated_shoppers, listings, num_events)
    event_rows = [
        [
            events.request_id[e],
            events.shopper_id[e],
            events.item_id[e],
            str(events.timestamp[e]),
            str(events.hour[e]),
            f"{events.distance_km[e]:.2f}",
            str(events.converted[e]),
        ]
        for e in range(len(events.item_id))
    ]
    probability_rows = [
        [events.request_id[e], events.item_id[e], f"{events.probability[e]:.6f}"] for e in range(len(events.item_id))
    ]

    if include_bad_rows:
        bad_items, bad_events = _bad_rows(
            rng, output, source, item_rows, event_rows, listing_photo, [merchant_ids[m] for m in bad_item_merchants]
        )
        item_rows += bad_items
        truth_rows += [[row[0], "bad_row", reason] for row, (_, reason) in zip(bad_items, BAD_ITEMS)]
        event_rows = sorted(event_rows + bad_events, key=lambda r: (int(r[3]), r[0], r[2]))

    (output / dataset.ITEMS_FILE).write_bytes(_csv_bytes(ITEM_HEADER, item_rows))
    (output / dataset.EVENTS_FILE).write_bytes(_csv_bytes(EVENT_HEADER, event_rows))
    (output / "truth.csv").write_bytes(_csv_bytes(["item_id", "quality", "detail"], truth_rows))
    (output / EVENTS_TRUTH_FILE).write_bytes(_csv_bytes(["request_id", "item_id", "probability"], probability_rows))
    shutil.copyfile(source / "LICENSE", output / "LICENSE")

    stats = {
        "seed": seed,
        "listings": num_listings,
        "merchants": num_merchants,
        "merchants_by_size": {s: sizes.count(s) for s in ("large", "medium", "small")},
        "listings_by_merchant_size": {
            s: sum(sizes[m] == s for m in listing_merchant) for s in ("large", "medium", "small")
        },
        "listings_by_quality": {q: quality.count(q) for q in (features.OK_QUALITY, *features.FLAWED_QUALITIES)},
        "degraded_share_by_merchant_size": {
            s: round(
                sum(quality[i] != features.OK_QUALITY for i, m in enumerate(listing_merchant) if sizes[m] == s)
                / max(1, sum(sizes[m] == s for m in listing_merchant)),
                3,
            )
            for s in ("large", "medium", "small")
        },
        "shoppers": num_shoppers,
        "events": num_events,
        "conversion_rate": round(float(events.converted.mean()), 4),
        "conversion_rate_by_quality": {
            q: round(r, 4)
            for q, r in shopper_simulator.conversion_rate_by(
                events, [quality[item_ids.index(i)] for i in events.item_id]
            ).items()
        },
        "bad_item_rows": len(BAD_ITEMS) if include_bad_rows else 0,
        "bad_event_rows": len(event_rows) - num_events,
    }
    (output / "README.md").write_text(_readme(stats), encoding="utf-8")
    return stats


def _bad_rows(rng, output: Path, source: Path, item_rows, event_rows, listing_photo, merchants):
    """BAD_ITEMS as item rows (with their files), their copied clicks, and BAD_EVENTS."""
    first_id = len(item_rows) + 1
    bad_items = []
    for k, ((_, reason), merchant) in enumerate(zip(BAD_ITEMS, merchants)):
        model = rng.integers(len(item_rows))
        row = list(item_rows[model])
        row[0], row[1] = f"i{first_id + k:05d}", merchant
        row[7] = f"{dataset.IMAGES_DIR}/{row[0]}.jpg"
        photo = _jpeg(_photo(source, listing_photo[model]))
        if reason == "corrupt_image":
            photo = b"this is not a JPEG " + rng.bytes(64)
        elif reason == "truncated_image":
            photo = photo[: len(photo) // 2]
        elif reason == "image_too_small":
            photo = _jpeg(_photo(source, listing_photo[model]).resize((10, 10)))
        elif reason == "bad_price":
            row[6] = "-4.50"
        elif reason == "empty_text":
            row[2] = ""
        elif reason == "not_utf8":
            row[2] = "Bl\udce5b\udce4r"  # the Latin-1 bytes of "Blåbär"
        if reason != "missing_image":
            (output / row[7]).write_bytes(photo)
        bad_items.append(row)

    bad_events = []
    for k, item in enumerate(bad_items):
        for j in range(BAD_CLICKS_PER_ITEM):
            row = list(event_rows[rng.integers(len(event_rows))])
            row[0], row[2] = f"rb{k}-{j}", item[0]
            bad_events.append(row)
    for k, (_, reason) in enumerate(BAD_EVENTS):
        row = list(event_rows[rng.integers(len(event_rows))])
        row[0] = f"rx{k}"
        if reason == "unknown_item":
            row[2] = "unknown-item"
        elif reason == "missing_label":
            row[6] = ""
        elif reason == "bad_label":
            row[6] = "yes"
        elif reason == "bad_hour":
            row[4] = "24"
        elif reason == "bad_distance":
            row[5] = "-1.5"
        bad_events.append(row)
    return bad_items, bad_events


def _readme(stats: dict) -> str:
    bad_items = "\n".join(f"| {what} | `{reason}` |" for what, reason in BAD_ITEMS)
    bad_events = "\n".join(f"| {what} | `{reason}` |" for what, reason in BAD_EVENTS)
    return README_TEMPLATE.format(
        stats=json.dumps(stats, indent=2),
        bad_items=bad_items,
        bad_events=bad_events,
        clicks=BAD_CLICKS_PER_ITEM,
        side=IMAGE_SIDE,
        **stats,
    )


README_TEMPLATE = """\
# The embedded sample dataset

Written by `camenn sample --seed {seed}` (see BUILD.md, "Rebuilding the sample"); do not edit by hand.
A dataset folder in the format of the README's "Dataset format": `items.csv`, `events.csv`, `images/`.

- {listings} listings by {merchants} merchants: real store photos of the Grocery Store Dataset, downscaled
  to at most {side} px, with the real product title and description of their class.
- {events} clicks by {shoppers} simulated shoppers over 28 days, each with a `converted` label.
- `truth.csv` (item_id, quality, detail): which listings have an inaccurate text or a vague photo (and
  which rows are deliberately bad). It is the hidden truth for tests and evaluation; training never reads it.
- `events_truth.csv` (request_id, item_id, probability): each simulated click's true conversion
  probability, from which its `converted` label was drawn: the ceiling any model can reach (the oracle's
  AUC), for evaluation only.
- `LICENSE`: the Grocery Store Dataset's MIT licence, which covers the photos and product texts.

## Attribution

Photos and product texts: the Grocery Store Dataset, github.com/marcusklasson/GroceryStoreDataset
(commit fc80ba9), by Marcus Klasson, Cheng Zhang and Hedvig Kjellström: "A Hierarchical Grocery Store
Image Dataset with Visual and Semantic Labels", WACV 2019 (arXiv 1901.00711). MIT licence (`LICENSE`).
Merchants, prices, stores, shoppers and clicks are simulated.

## How it is made

Merchants: 10% large, 20% medium, 70% small; large merchants list many classes across the catalogue,
the others fewer, mostly from one speciality (fruit, vegetables or packages). `merchant_size` is what
preprocessing derives from the number of listings (<10 small, 10-29 medium, >=30 large). Prices are a
base price per class times a merchant factor (large merchants are cheaper) times noise.

Listing quality: a fifth of the listings are degraded, drawn mostly from small merchants (weights small 6,
medium 2, large 1): half have an inaccurate text (the title and description of a class of another
coarse category), half a vague photo (strong blur, a tight crop, or dark).

Shoppers live around the city centre and have a taste for a few coarse categories, a price sensitivity,
an activity level and a daily rhythm. A request picks a shopper and an hour; the shopper clicks 1-4
listings, preferring what the title names in their favourite categories, nearby stores and clear photos.
A click converts with probability sigmoid(z), where z rises with the taste for what the product really is
and in the evening, and falls with the price against the class's usual price, with distance, at night,
and sharply when the listing's text and photo disagree (inaccurate text: -1.6) or its photo is vague (-1.0).
The exact rules: the docstrings of `simulator/sample.py` and `simulator/shoppers.py`.

Train/eval split: by time, done by `camenn preprocess` (the last 20% of the time range is eval).

## Deliberately bad rows

So that `camenn preprocess` on this sample shows its quarantine at work, items.csv ends with
{bad_item_rows} bad listings (listed in truth.csv with quality `bad_row` and the expected reason), each
with {clicks} clicks copied from real ones (quarantined as `item_quarantined`), and events.csv holds these
bad events besides ({bad_event_rows} bad event rows in all):

| bad listing | reason |
| --- | --- |
{bad_items}

| bad event | reason |
| --- | --- |
{bad_events}

## Figures of this build

```json
{stats}
```
"""
