"""Verb `camenn sample`; the builder is imported inside the function it runs."""

import json
import sys
from pathlib import Path


def register(subparsers) -> None:
    from camenn import paths
    from camenn.simulator import defaults

    sample = subparsers.add_parser(
        "sample",
        help="build the embedded sample dataset from the Grocery Store Dataset",
        description=(
            "Builds a dataset folder from the Grocery Store Dataset's real photos and product texts, with "
            "simulated merchants, prices and stores, and a seeded shopper simulator's clicks and orders. "
            "Writes OUTPUT/items.csv, events.csv, images/*.jpg, truth.csv (which listings have an "
            "inaccurate text or a vague photo; never read by training), LICENSE and README.md. The same "
            "seed gives byte-identical files."
        ),
    )
    sample.add_argument(
        "--source",
        type=Path,
        required=True,
        help="the Grocery Store Dataset's dataset/ folder (github.com/marcusklasson/"
        "GroceryStoreDataset), e.g. ../shared/data/grocery_store",
    )
    sample.add_argument("--output", type=Path, required=True, help=f"folder to write, e.g. {paths.SAMPLE_DATASET}")
    sample.add_argument("--seed", type=int, default=defaults.SEED, help=f"random seed (default {defaults.SEED})")
    sample.add_argument(
        "--listings",
        type=int,
        default=defaults.NUM_LISTINGS,
        help=f"number of listings (default {defaults.NUM_LISTINGS})",
    )
    sample.add_argument(
        "--merchants",
        type=int,
        default=defaults.NUM_MERCHANTS,
        help=f"number of merchants (default {defaults.NUM_MERCHANTS}); merchant_size follows listings per merchant "
        "(<10 small, <30 medium), so scale it with --listings to keep the size mix",
    )
    sample.add_argument(
        "--shoppers",
        type=int,
        default=defaults.NUM_SHOPPERS,
        help=f"number of shoppers (default {defaults.NUM_SHOPPERS})",
    )
    sample.add_argument(
        "--events",
        type=int,
        default=defaults.NUM_EVENTS,
        help=f"number of simulated clicks (default {defaults.NUM_EVENTS})",
    )
    sample.add_argument(
        "--no-bad-rows",
        dest="bad_rows",
        action="store_false",
        help="leave out the deliberately bad rows that show preprocessing's quarantine",
    )
    sample.set_defaults(func=_sample)


def _sample(args) -> int:
    from camenn.simulator.sample import build_sample

    try:
        stats = build_sample(
            args.source,
            args.output,
            seed=args.seed,
            num_listings=args.listings,
            num_merchants=args.merchants,
            num_shoppers=args.shoppers,
            num_events=args.events,
            include_bad_rows=args.bad_rows,
        )
    except ValueError as error:
        print(f"camenn sample: {error}", file=sys.stderr)
        return 2
    print(f"wrote {args.output}:")
    print(json.dumps(stats, indent=2))
    return 0
