"""CameNN's named presets: keras-hub preset folders built once on this machine, checksummed and reused.

keras-hub resolves a built-in preset name to a download handle; CameNN cannot download at run time, so
its presets are made here instead, from the weights packages that set-up installs (all-MiniLM-L6-v2,
EfficientNet-Lite0) or from a seeded random initialisation (the tiny test presets, InceptionV4). Each
lands in `camenn.paths.presets_dir()/<name>/` as an ordinary keras-hub preset folder (config.json,
model.weights.h5, tokenizer or image converter) plus `camenn_preset.json`, which records the sha256 of
every source file and every output file and a hash of the recipe. A preset is rebuilt when any of those
disagrees, so a changed weights package, a corrupted file or a changed recipe never goes unnoticed.

Set-up builds them all (`camenn presets build`); `ensure(name)` also builds one on first use. This
module imports no TensorFlow: checking that everything is up to date takes a few seconds.
"""

import contextlib
import fcntl
import hashlib
import importlib
import importlib.util
import json
import os
import shutil
import time
from pathlib import Path
from typing import Callable, NamedTuple

from camenn import paths

MANIFEST = "camenn_preset.json"


def package_file(package: str, relative: str) -> Path:
    """A file shipped inside an installed package, located without importing the package."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"package {package} is not installed: run ./scripts/setup.sh")
    path = Path(list(spec.submodule_search_locations)[0]) / relative
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: reinstall {package} with ./scripts/setup.sh")
    return path


class Recipe(NamedTuple):
    """How to make one preset. `builder` ("module:function") is called as builder(name, folder, **spec)
    and imported only when a build is needed; `sources` lists the files it reads."""

    builder: str
    spec: dict
    sources: Callable[[], list] = lambda: []


def _recipes() -> dict:
    # Each family lists its presets in a plain-data module; the builders live beside the models.
    from camenn.model.bert import bert_presets
    from camenn.model.efficientnet_lite import efficientnet_lite_presets
    from camenn.model.inception_v4 import inception_v4_presets

    recipes = {}
    for family in (bert_presets, efficientnet_lite_presets, inception_v4_presets):
        recipes.update(family.recipes())
    return recipes


def names() -> list:
    return sorted(_recipes())


def preset_path(name: str) -> Path:
    return paths.presets_dir() / name


def resolve(preset: str) -> str:
    """A CameNN preset name -> its (ensured) folder; anything else (a folder, a keras-hub handle) as is."""
    if isinstance(preset, str) and preset in _recipes():
        return str(ensure(preset))
    return preset


class StoredPresets:
    """Mixin for keras-hub classes (backbones, converters, tasks): `from_preset` also takes CameNN's
    preset names, building a preset on first use if set-up has not; anything else goes to keras-hub."""

    @classmethod
    def from_preset(cls, preset, *args, **kwargs):
        return super().from_preset(resolve(preset), *args, **kwargs)


def register(presets: dict, backbone_cls) -> None:
    """Lists CameNN presets among keras-hub's built-in ones (`backbone_cls.presets`), their handle being
    their folder here, so keras-hub's own `from_preset(name)` finds them once built."""
    from keras_hub.src.utils.preset_utils import register_presets

    register_presets(
        {
            name: {"metadata": preset["metadata"], "kaggle_handle": str(preset_path(name))}
            for name, preset in presets.items()
        },
        backbone_cls,
    )


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _recipe_hash(recipe: Recipe) -> str:
    return hashlib.sha256(json.dumps([recipe.builder, recipe.spec], sort_keys=True).encode()).hexdigest()


def _outputs(folder: Path) -> dict:
    return {
        p.relative_to(folder).as_posix(): _sha256(p)
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != MANIFEST
    }


def problem(name: str) -> str:
    """Why preset `name` must be (re)built, or "" when its folder is complete and every checksum agrees."""
    recipe = _recipes()[name]
    folder = preset_path(name)
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
    except (OSError, ValueError):
        return "not built yet"
    if manifest.get("recipe") != _recipe_hash(recipe):
        return "its recipe changed"
    sources = {str(p): _sha256(p) for p in recipe.sources()}
    if manifest.get("sources") != sources:
        return "its source files changed"
    if manifest.get("outputs") != _outputs(folder):
        return "its files do not match their recorded checksums"
    return ""


_checked = set()  # presets verified by this process: a Beam worker loads one many times


@contextlib.contextmanager
def _lock(name: str):
    paths.presets_dir().mkdir(parents=True, exist_ok=True)
    with open(paths.presets_dir() / f".{name}.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def ensure(name: str) -> Path:
    """Returns preset `name`'s folder, building it first when it is missing or fails its checksums."""
    recipes = _recipes()
    if name not in recipes:
        raise KeyError(f"unknown preset {name!r}; CameNN's presets: {', '.join(sorted(recipes))}")
    folder = preset_path(name)
    if name in _checked and (folder / MANIFEST).is_file():
        return folder
    with _lock(name):  # several processes (Beam workers, pytest-xdist) may ask at once: one builds
        reason = problem(name)
        if reason:
            _build(name, recipes[name], reason)
    _checked.add(name)
    return folder


def _build(name: str, recipe: Recipe, reason: str) -> None:
    folder = preset_path(name)
    staging = folder.with_name(f".{name}.building-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    start = time.time()
    print(f"presets: building {name} ({reason}) in {folder}", flush=True)
    module, function = recipe.builder.split(":")
    getattr(importlib.import_module(module), function)(name, staging, **recipe.spec)
    manifest = {
        "name": name,
        "recipe": _recipe_hash(recipe),
        "builder": recipe.builder,
        "spec": recipe.spec,
        "sources": {str(p): _sha256(p) for p in recipe.sources()},
        "outputs": _outputs(staging),
    }
    (staging / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    retired = folder.with_name(f".{name}.old-{os.getpid()}")
    if folder.exists():
        folder.rename(retired)
    staging.rename(folder)
    shutil.rmtree(retired, ignore_errors=True)
    print(f"presets: built {name} in {time.time() - start:.1f}s", flush=True)


def build_all(names_to_build=None) -> int:
    """Ensures the given presets (default: all); returns how many had to be built."""
    built = 0
    for name in names_to_build or names():
        if problem(name):
            ensure(name)
            built += 1
        _checked.add(name)
    return built
