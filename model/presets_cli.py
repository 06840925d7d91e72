"""Verb `camenn presets`: build, list and convert the keras-hub presets of the pre-trained encoders; `list`
also shows the model presets (named architectures) and the pipeline profiles, everything a user picks by
name."""

import sys
from pathlib import Path


def register(subparsers) -> None:
    presets = subparsers.add_parser(
        "presets",
        help="build or list the encoder presets (BERT, InceptionV4, EfficientNet-Lite0); convert checkpoints",
        description=(
            "CameNN's encoders load as keras-hub presets (`from_preset`) with no network. `build` makes each "
            "preset folder once under $CAMENN_CACHE_DIR/presets (default <venv>/share/camenn/presets) from "
            "the installed weights packages or a seeded random initialisation, records the sha256 of its "
            "sources and files, and rebuilds it when one disagrees; set-up runs it. `list` shows them. "
            "`convert-inception-v4` writes a preset folder from timm's or TF-slim's ImageNet InceptionV4."
        ),
    )
    verbs = presets.add_subparsers(dest="presets_command", metavar="ACTION")
    verbs.required = True
    build = verbs.add_parser(
        "build",
        help="build missing or stale presets, check the others (idempotent)",
        description="Builds the named presets (default: all) where missing or stale; "
        "writes their folders under the presets directory.",
    )
    build.add_argument("names", nargs="*", help="preset names (default: all)")
    build.set_defaults(func=_build)
    listing = verbs.add_parser(
        "list",
        help="list encoder presets, model presets and pipeline profiles",
        description="Prints every encoder preset's name, state (ready or why it needs "
        "a build) and folder; every model preset (a named architecture: "
        "--set model_preset=NAME) with its description; every pipeline "
        "profile (camenn pipeline run --profile NAME) with its knobs. "
        "Writes nothing.",
    )
    listing.set_defaults(func=_list)
    convert = verbs.add_parser(
        "convert-inception-v4",
        help="timm safetensors or TF-slim checkpoint -> InceptionV4 preset folder",
        description=(
            "Converts ImageNet InceptionV4 weights (timm's model.safetensors, e.g. from "
            "huggingface.co/timm/inception_v4.tf_in1k, or TF-slim's inception_v4.ckpt) into a keras-hub preset "
            "folder (config.json, model.weights.h5, image_converter.json). Use it with "
            "`--image-preset FOLDER` of `camenn preprocess` or `InceptionV4Backbone.from_preset(FOLDER)`."
        ),
    )
    convert.add_argument("checkpoint", type=Path, help="model.safetensors (timm) or a TF checkpoint prefix (TF-slim)")
    convert.add_argument("--output", type=Path, required=True, help="preset folder to write")
    convert.set_defaults(func=_convert_inception_v4)


def _build(args) -> int:
    from camenn import paths
    from camenn.model import preset_store

    unknown = sorted(set(args.names) - set(preset_store.names()))
    if unknown:
        print(f"unknown presets {unknown}; known: {preset_store.names()}", file=sys.stderr)
        return 2
    built = preset_store.build_all(args.names or None)
    print(f"presets: {len(args.names or preset_store.names())} ready ({built} built) in {paths.presets_dir()}")
    return 0


def _list(args) -> int:
    from camenn.model import preset_store

    print("encoder presets (pre-trained weights; camenn preprocess --text-encoder / --image-preset):")
    for name in preset_store.names():
        state = preset_store.problem(name) or "ready"
        print(f"  {name:30s} {state:45s} {preset_store.preset_path(name)}")
    print("\nmodel presets (named architectures; --set model_preset=NAME, --set retrieval_preset=NAME):")
    for name, description in model_presets().items():
        print(f"  {name:30s} {description}")
    print("\npipeline profiles (camenn pipeline run --profile NAME; then --set KEY=VALUE):")
    for name, knobs in pipeline_profiles().items():
        print(f"  {name:30s} {', '.join(f'{k}={v}' for k, v in knobs.items())}")
    return 0


def model_presets() -> dict:
    """Model preset name -> its description, for every family a Trainer can build."""
    from camenn.model.retrieval import retrieval_presets
    from camenn.model.task_models import task_classes

    found = {}
    for presets in (*(cls.backbone_cls.preset_configs for cls in task_classes()), retrieval_presets):
        found.update({name: preset["metadata"]["description"] for name, preset in presets.items()})
    return found


def pipeline_profiles() -> dict:
    """Pipeline profile name -> the knobs it sets over tfx_pipeline/configs.py's defaults."""
    from camenn.tfx_pipeline import configs

    return dict(configs.PROFILES)


def _convert_inception_v4(args) -> int:
    from camenn.model.inception_v4.convert_inception_v4 import convert_checkpoint

    backbone = convert_checkpoint(args.checkpoint, args.output)
    print(f"wrote {args.output}: InceptionV4, {backbone.count_params():,} parameters")
    return 0
