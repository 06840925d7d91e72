"""Installs the top-level folders `model/`, `preprocessing/`, `serving/`, `simulator/` and `tfx_pipeline/` as
subpackages of `camenn`, so the repository keeps its layout (docs/ARCHITECTURE.md) while imports stay
namespaced (`camenn.model`, never a bare `model` in site-packages)."""

from pathlib import Path

from setuptools import setup

ROOT = Path(__file__).parent
SUBPACKAGES = ("model", "preprocessing", "serving", "simulator", "tfx_pipeline")


def _packages():
    package_dir = {"camenn": "camenn"}
    packages = ["camenn"]
    for top in SUBPACKAGES:
        for init in sorted((ROOT / top).rglob("__init__.py")):
            folder = init.parent.relative_to(ROOT)
            name = "camenn." + ".".join(folder.parts)
            packages.append(name)
            package_dir[name] = folder.as_posix()
    return packages, package_dir


packages, package_dir = _packages()
setup(packages=packages, package_dir=package_dir)
