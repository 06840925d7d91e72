"""Verb `camenn preprocess`; heavy imports happen inside the function it runs."""

import argparse
import sys
from pathlib import Path


def register(subparsers) -> None:
    from camenn.preprocessing import defaults

    preprocess = subparsers.add_parser(
        "preprocess",
        help="Beam: dataset folder -> tf.Examples for TFX (cached text and patch encodings), quarantine",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=(
            "Runs the Apache Beam preprocessing over a dataset folder (README: 'Dataset format'): tokenises\n"
            "each listing's title and description and encodes them with a frozen BERT into a few pooled\n"
            "tokens, decodes its photo, splits it into a grid of patches and embeds them with a frozen image\n"
            "encoder (both cached by content: a second run over an unchanged catalog skips that work), joins\n"
            "the clicks to their listings and splits them by time.\n\n"
            "Writes OUTPUT/examples/{train,eval}/*.tfrecord.gz  one tf.Example per click (TFX ImportExampleGen)\n"
            "       OUTPUT/items/*.tfrecord.gz               one tf.Example per listing (the serving cache)\n"
            "       OUTPUT/quarantine/{items,events}.csv     every bad row with its reason\n"
            "       OUTPUT/summary.json                      counts and the feature summary (also printed)\n\n"
            "Beam pipeline options go after `--`, e.g.\n"
            "  camenn preprocess --dataset D --output O -- --direct_num_workers=2 "
            "--direct_running_mode=multi_processing"
        ),
    )
    preprocess.add_argument(
        "--dataset", type=Path, required=True, help="dataset folder (items.csv, events.csv, images/)"
    )
    preprocess.add_argument("--output", type=Path, required=True, help="output folder")
    preprocess.add_argument(
        "--image-encoder", default=defaults.IMAGE_ENCODER, help=f"patch encoder (default {defaults.IMAGE_ENCODER})"
    )
    preprocess.add_argument(
        "--image-preset", default=defaults.IMAGE_PRESET, help=f"the encoder's preset (default {defaults.IMAGE_PRESET})"
    )
    preprocess.add_argument("--grid", default="2x2", help="patch grid ROWSxCOLS (default 2x2)")
    preprocess.add_argument(
        "--max-text-length",
        type=int,
        default=defaults.MAX_TEXT_LENGTH,
        help=f"token ids per listing, special tokens included (default {defaults.MAX_TEXT_LENGTH})",
    )
    preprocess.add_argument(
        "--text-encoder",
        default=defaults.TEXT_ENCODER,
        help=f"frozen BERT preset or preset folder (default {defaults.TEXT_ENCODER})",
    )
    preprocess.add_argument(
        "--text-tokens",
        type=int,
        default=defaults.NUM_TEXT_TOKENS,
        help=f"pooled text tokens per listing (default {defaults.NUM_TEXT_TOKENS})",
    )
    preprocess.add_argument(
        "--cache-dir",
        type=Path,
        default=None,
        help="text and patch encoding cache (default: $CAMENN_CACHE_DIR or <venv>/share/camenn, then embeddings/)",
    )
    preprocess.add_argument(
        "beam_args",
        nargs=argparse.REMAINDER,
        metavar="-- BEAM_OPTION",
        help="Apache Beam pipeline options (runner, workers, ...), after `--`",
    )
    preprocess.set_defaults(func=_preprocess)


def _preprocess(args) -> int:
    from camenn.preprocessing.dataset import DatasetFormatError
    from camenn.preprocessing.images import parse_grid
    from camenn.preprocessing.pipeline import format_summary, preprocess

    try:
        grid = parse_grid(args.grid)
        summary = preprocess(
            args.dataset,
            args.output,
            image_encoder=args.image_encoder,
            image_preset=args.image_preset,
            grid=grid,
            max_text_length=args.max_text_length,
            beam_args=[a for a in args.beam_args if a != "--"],
            cache_dir=args.cache_dir,
            text_encoder=args.text_encoder,
            num_text_tokens=args.text_tokens,
        )
    except (DatasetFormatError, ValueError) as error:
        print(f"camenn preprocess: {error}", file=sys.stderr)
        return 2
    print(format_summary(summary))
    return 0
