"""The seeded shopper simulator that writes the embedded sample's click events and their `converted` label.

The Grocery Store Dataset has no shoppers, so clicks and orders come from these rules (all randomness from
one numpy Generator, so a seed fixes every event):

Shoppers (`make_shoppers`)
- a home within ~3 km (normal, per axis) of the city centre;
- a taste for each coarse category: log(K * p) with p ~ Dirichlet(0.5) over the K coarse categories, clipped
  to [-3, 2]: a few favourite categories, many indifferent ones;
- a price sensitivity ~ U(0.5, 1.5); an activity weight ~ LogNormal(0, 0.8) (a few heavy users);
- a daily rhythm: a peak hour of 8, 12 or 19 (probabilities 0.25, 0.25, 0.5).

Requests and clicks (`simulate_events`)
- a request is a shopper (drawn by activity) on a day of the DAYS-day window at an hour drawn from
  0.5 * (city-wide daily curve) + 0.5 * (their rhythm, a bump of +-2 h around their peak); its clicks
  (1 + Poisson(0.6), at most 4, without repetition) follow each other by 5-60 s;
- a click picks listing l with probability proportional to exp(taste[shown coarse category]
  - distance_km / 3 - 0.7 * vague_photo): shoppers click on what the title says (an inaccurate title
  attracts the shoppers of the category it names), on nearby stores, and less on vague photos.

Conversion: converted ~ Bernoulli(sigmoid(z)) with
    z = -1.3 + 0.8 * taste[true coarse category] - 1.2 * price_sensitivity * log(price / class base price)
        - 0.12 * distance_km + hour effect (+0.3 at 17-21 h, -0.4 at 22-06 h)
        - 1.6 * inaccurate_text - 1.0 * vague_photo
so an order depends on whether image and text agree (the shopper finds something else than the title
promised, or cannot see what they buy), on taste for what the product really is, on price against the
class's usual price, on distance and on the hour.

The simulated city's clock is UTC: hour = (timestamp // 3600) % 24.
"""

import dataclasses
from typing import List, Sequence

import numpy as np

START_TIMESTAMP = 1709510400  # 2024-03-04 00:00:00 UTC, a Monday
DAYS = 28
# City-wide share of requests by hour (quiet nights, lunch and evening peaks).
DAILY_CURVE = np.array(
    [1, 0.5, 0.3, 0.3, 0.3, 0.5, 1, 2, 3, 3, 3, 4, 5, 4, 3, 3, 4, 6, 7, 7, 6, 4, 3, 2], dtype=np.float64
)
PEAK_HOURS = (8, 12, 19)
PEAK_HOUR_PROBABILITIES = (0.25, 0.25, 0.5)

CLICK_DISTANCE_SCALE_KM = 3.0
CLICK_VAGUE_PHOTO = -0.7
CVR_BIAS = -1.3
CVR_TASTE = 0.8
CVR_PRICE = 1.2
CVR_DISTANCE_PER_KM = 0.12
CVR_INACCURATE_TEXT = -1.6
CVR_VAGUE_PHOTO = -1.0
CVR_EVENING = 0.3  # 17..21 h
CVR_NIGHT = -0.4  # 22..06 h


@dataclasses.dataclass
class Shoppers:
    ids: List[str]
    home: np.ndarray  # [S, 2] km east/north of the centre
    taste: np.ndarray  # [S, K] per coarse category
    price_sensitivity: np.ndarray  # [S]
    activity: np.ndarray  # [S], sums to 1
    hour_probabilities: np.ndarray  # [S, 24]


@dataclasses.dataclass
class Listings:
    """What the simulator needs to know about each listing (arrays of length L)."""

    ids: List[str]
    store: np.ndarray  # [L, 2] km east/north of the centre
    true_coarse: np.ndarray  # coarse category index of what the photo shows
    shown_coarse: np.ndarray  # coarse category index the title names
    price_ratio: np.ndarray  # price / the class's base price
    inaccurate_text: np.ndarray  # bool
    vague_photo: np.ndarray  # bool


@dataclasses.dataclass
class Events:
    request_id: List[str]
    shopper_id: List[str]
    item_id: List[str]
    timestamp: np.ndarray
    hour: np.ndarray
    distance_km: np.ndarray
    converted: np.ndarray
    probability: np.ndarray  # each click's true P(converted): the ceiling a model can reach (never trained on)


def make_shoppers(rng: np.random.Generator, num_shoppers: int, num_coarse: int) -> Shoppers:
    home = rng.normal(0.0, 3.0, size=(num_shoppers, 2))
    preference = rng.dirichlet(np.full(num_coarse, 0.5), size=num_shoppers)
    taste = np.clip(np.log(num_coarse * preference + 1e-9), -3.0, 2.0)
    price_sensitivity = rng.uniform(0.5, 1.5, size=num_shoppers)
    activity = rng.lognormal(0.0, 0.8, size=num_shoppers)
    peaks = rng.choice(PEAK_HOURS, size=num_shoppers, p=PEAK_HOUR_PROBABILITIES)
    hours = np.arange(24)
    gap = np.minimum(np.abs(hours[None, :] - peaks[:, None]), 24 - np.abs(hours[None, :] - peaks[:, None]))
    rhythm = np.exp(-0.5 * (gap / 2.0) ** 2)
    hour_probabilities = 0.5 * DAILY_CURVE / DAILY_CURVE.sum() + 0.5 * rhythm / rhythm.sum(1, keepdims=True)
    return Shoppers(
        ids=[f"s{n:04d}" for n in range(1, num_shoppers + 1)],
        home=home,
        taste=taste,
        price_sensitivity=price_sensitivity,
        activity=activity / activity.sum(),
        hour_probabilities=hour_probabilities / hour_probabilities.sum(1, keepdims=True),
    )


def _hour_effect(hour: np.ndarray) -> np.ndarray:
    return np.where((hour >= 17) & (hour <= 21), CVR_EVENING, np.where((hour >= 22) | (hour <= 6), CVR_NIGHT, 0.0))


def conversion_probability(
    shoppers: Shoppers,
    listings: Listings,
    shopper: np.ndarray,
    listing: np.ndarray,
    distance_km: np.ndarray,
    hour: np.ndarray,
) -> np.ndarray:
    """P(converted) for clicks of `shopper[i]` on `listing[i]` (index arrays), by the rules above."""
    z = (
        CVR_BIAS
        + CVR_TASTE * shoppers.taste[shopper, listings.true_coarse[listing]]
        - CVR_PRICE * shoppers.price_sensitivity[shopper] * np.log(listings.price_ratio[listing])
        - CVR_DISTANCE_PER_KM * distance_km
        + _hour_effect(hour)
        + CVR_INACCURATE_TEXT * listings.inaccurate_text[listing]
        + CVR_VAGUE_PHOTO * listings.vague_photo[listing]
    )
    return 1.0 / (1.0 + np.exp(-z))


def simulate_events(rng: np.random.Generator, shoppers: Shoppers, listings: Listings, num_events: int) -> Events:
    """Exactly `num_events` clicks with their converted label, in time order."""
    distance = np.linalg.norm(shoppers.home[:, None, :] - listings.store[None, :, :], axis=-1)  # [S, L]
    click_logit = (
        shoppers.taste[:, listings.shown_coarse]
        - distance / CLICK_DISTANCE_SCALE_KM
        + CLICK_VAGUE_PHOTO * listings.vague_photo[None, :]
    )
    click_probability = np.exp(click_logit - click_logit.max(1, keepdims=True))
    click_probability /= click_probability.sum(1, keepdims=True)
    num_listings = len(listings.ids)

    request, shopper, listing, timestamp = [], [], [], []
    request_number = 0
    while len(listing) < num_events:
        request_number += 1
        s = rng.choice(len(shoppers.ids), p=shoppers.activity)
        day = rng.integers(DAYS)
        hour = rng.choice(24, p=shoppers.hour_probabilities[s])
        time = START_TIMESTAMP + day * 86400 + hour * 3600 + rng.integers(3600)
        clicks = min(1 + rng.poisson(0.6), 4, num_listings, num_events - len(listing))
        for chosen in rng.choice(num_listings, size=clicks, replace=False, p=click_probability[s]):
            request.append(request_number)
            shopper.append(s)
            listing.append(chosen)
            timestamp.append(time)
            time += rng.integers(5, 61)
    shopper, listing, timestamp = np.array(shopper), np.array(listing), np.array(timestamp, dtype=np.int64)
    distance_km = np.round(distance[shopper, listing], 2)
    hour = (timestamp // 3600) % 24
    probability = conversion_probability(shoppers, listings, shopper, listing, distance_km, hour)
    converted = rng.random(len(listing)) < probability
    order = np.lexsort((listing, np.array(request), timestamp))
    width = len(str(request_number))
    return Events(
        request_id=[f"r{request[i]:0{width}d}" for i in order],
        shopper_id=[shoppers.ids[shopper[i]] for i in order],
        item_id=[listings.ids[listing[i]] for i in order],
        timestamp=timestamp[order],
        hour=hour[order],
        distance_km=distance_km[order],
        converted=converted[order].astype(np.int64),
        probability=probability[order],
    )


def conversion_rate_by(events: Events, keys: Sequence[str]) -> dict:
    """Observed conversion rate per key value (e.g. per listing quality), for the sample's README."""
    rates = {}
    for key in sorted(set(keys)):
        mask = np.array([k == key for k in keys])
        rates[key] = float(events.converted[mask].mean()) if mask.any() else float("nan")
    return rates
