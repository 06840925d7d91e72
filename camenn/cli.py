"""The `camenn` command: one entry point whose subcommands are the product's verbs.

Each verb lives beside the code it drives, in a `cli.py` with `register(subparsers)`; those modules
import TensorFlow, Beam and keras only inside the functions a verb runs, so `camenn --help` is instant.
"""

import argparse
import importlib
import logging
import os
import sys
import warnings

# Modules that add verbs, in the order `camenn --help` lists them.
COMMAND_MODULES = (
    "camenn.simulator.cli",
    "camenn.preprocessing.cli",
    "camenn.serving.cli",
    "camenn.tfx_pipeline.cli",
    "camenn.tfx_pipeline.experiments",
    "camenn.model.presets_cli",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="camenn",
        description=(
            "CameNN ranks grocery listings for same-day local delivery and checks each listing's photo "
            "against its text (arXiv 2009.09926). Each subcommand below says what it does and writes."
        ),
    )
    parser.add_argument(
        "-v", "--verbose", action="store_true", help="also TFX, Beam and TensorFlow INFO logs, and CameNN's debug logs"
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    subparsers.required = True
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    return parser


def main(argv=None) -> None:
    args = build_parser().parse_args(argv)
    # CameNN's own progress at INFO; TFX, Beam and TensorFlow only from WARNING unless --verbose (at INFO
    # they print every execution's protos: thousands of lines per run).
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    logging.getLogger("camenn").setLevel(logging.DEBUG if args.verbose else logging.INFO)
    if not args.verbose:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        warnings.filterwarnings("ignore", category=FutureWarning, module=r"google\.")
    try:
        code = args.func(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        code = 130
    sys.exit(code or 0)
