"""Fingerprints of the CameNN code each pipeline step runs, part of that step's cache key.

TFX caches a step by its inputs and parameters, not by the source of the Python it runs, so a step that
runs our code takes a `code_version` parameter. Each step's version covers exactly the modules it can
import (its module and every `camenn` module reachable from it by static imports, function-local ones
included): a fix in serving/bundle.py reruns ServingBundle and nothing upstream, a model change reruns
the Trainer. The hash is of the code, not the text: comments, docstrings and formatting do not count.
"""

import ast
import functools
import hashlib
from pathlib import Path
from typing import FrozenSet, Optional

REPO = Path(__file__).resolve().parents[1]
_PACKAGE = "camenn"
# camenn.<top> lives in the repository's top-level folder <top> (setup.py), except camenn itself.
_TOP_LEVEL = ("model", "preprocessing", "serving", "simulator", "tfx_pipeline")


def module_path(module: str, repo: Path = REPO) -> Optional[Path]:
    """The source file of a `camenn` module (a package's `__init__.py`), or None if there is none."""
    parts = module.split(".")
    if parts[0] != _PACKAGE:
        return None
    if len(parts) == 1:
        base = repo / _PACKAGE
    elif parts[1] in _TOP_LEVEL:
        base = repo.joinpath(*parts[1:])
    else:
        base = repo.joinpath(_PACKAGE, *parts[1:])
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


def _imported_modules(tree: ast.AST):
    """Every `camenn` module an import statement can load, including the packages it runs on the way."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # `from camenn.model import features` loads camenn.model.features if it is a module.
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        else:
            continue
        for name in names:
            parts = name.split(".")
            for end in range(1, len(parts) + 1):
                yield ".".join(parts[:end])


@functools.lru_cache(maxsize=None)
def module_closure(module: str, repo: Path = REPO) -> FrozenSet[Path]:
    """The source files of `module` and every `camenn` module it imports, directly or not."""
    seen, pending = set(), [module]
    while pending:
        path = module_path(pending.pop(), repo)
        if path is None or path in seen:
            continue
        seen.add(path)
        pending.extend(_imported_modules(ast.parse(path.read_bytes(), filename=str(path))))
    return frozenset(seen)


def _without_docstrings(tree: ast.AST) -> ast.AST:
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if (
                body
                and isinstance(body[0], ast.Expr)
                and isinstance(body[0].value, ast.Constant)
                and isinstance(body[0].value.value, str)
            ):
                node.body = body[1:] or [ast.Pass()]
    return tree


def code_fingerprint(path: Path) -> str:
    """A hash of what a source file does: its syntax tree without docstrings (comments never reach it)."""
    tree = _without_docstrings(ast.parse(path.read_bytes(), filename=str(path)))
    return hashlib.sha256(ast.dump(tree).encode()).hexdigest()


@functools.lru_cache(maxsize=None)  # the code this process loaded, as it first found it
def code_version(*modules: str, repo: Path = REPO) -> str:
    """The cache-key fingerprint of the code that `modules` (dotted `camenn` names) run.

    Args:
        modules: the step's entry modules, e.g. its component's module and its `run_fn`'s.
        repo: the checkout to read (tests point it at a copy).

    Example:
    >>> from camenn.tfx_pipeline.code_version import code_version
    >>> len(code_version("camenn.tfx_pipeline.components.serving_bundle"))
    16
    """
    files = set()
    for module in modules:
        if module_path(module, repo) is None:
            raise ValueError(f"{module!r} is not a camenn module in {repo}")
        files |= module_closure(module, repo)
    digest = hashlib.sha256()
    for path in sorted(files):
        digest.update(str(path.relative_to(repo)).encode())
        digest.update(code_fingerprint(path).encode())
    return digest.hexdigest()[:16]
