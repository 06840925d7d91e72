"""The code examples of the docstrings and of README.md run, so that the examples users copy cannot rot.

What runs (found with `ast` and plain text parsing; nothing is imported to find them):
- every fenced ```python block of a docstring (module, class, function or method) of every .py file under
  model/, preprocessing/, serving/, tfx_pipeline/ and camenn/: one test each, with an id such as
  `model/camenn/camenn_layers.py::TaskTower` (`::<module>` for a module docstring, `[2]` for a second
  block of one docstring);
- the `>>>` examples of every such docstring, with the stdlib doctest module (their printed output is
  compared): one test per docstring, id `...::name[doctest]`;
- every fenced ```python block of README.md: id `README.md::L<line of the fence>`.

How a block runs: `exec` in a fresh namespace seeded with what the defining module defines itself (its
classes, functions and constants), so that a class docstring may use the class by name as keras-hub's
do. What the module merely imports is left out on purpose (a stricter reading of "the module's
globals"): an example imports numpy, tensorflow, keras_hub, ... itself, so that a user's copy of it runs.
Doctests get the same namespace. The working directory is a fresh temporary folder holding one symlink,
`data` -> the repository's data/, so that `data/sample` reads the embedded sample while whatever an
example writes (`outputs/...`) lands in the temporary folder, never in the repository. An example that
raises, or whose `assert` fails, fails its test; no block is skipped, and the code is compiled with its
file and line, so a traceback points into the docstring.

Conventions for whoever writes an example:
- ```python: runs as above. State a result with `assert` rather than a comment (a comment can lie).
- ```python-needs-server: a serving example that needs a served model. It runs in a working folder that
  also holds `outputs/serving_model/camenn/1` (the tiny CameNN export of the serving tests: the
  `model_v1` fixture of tests/serving/conftest.py, whose catalog is `item_000` .. `item_035` with shoppers
  `shopper_0` .. `shopper_9`), and `outputs/preprocessed/{items,examples/eval}/*.tfrecord.gz` (what
  `camenn preprocess` writes, for that catalog), while an in-process `camenn serve` of that model runs
  (the `served` fixture). The one substitution made in its text: `port=8500` (TF Serving's and
  `camenn serve`'s default) becomes `port=<the fixture server's port>`.
- ```text (or a fence with any other language, or none): shown, never run; for fragments, shell commands
  and layouts.
- `>>>` lines in a docstring: doctest. `# doctest: +SKIP` is honoured; keep it for what truly cannot run
  on tiny inputs.
- An `Example:` section of a docstring (also `Examples:`, `Example (what it needs):`) must start with a
  ```python or ```python-needs-server fence or `>>>` lines: an example in plain indented text is never
  run, so it rots (`test_every_example_section_is_run`).

README.md follows the same fences, so it stays skip-free: its ```python blocks run (as above, in a fresh
folder with `data` -> data/), ```python-needs-server blocks run against the served model described
above (its item ids are `item_000` .., not the sample's), and a block that shows a fragment (names it
does not define, placeholders such as `<n>`) or a shell command must be ```text or ``` (not run).
`-k "not README"` runs the docstrings alone.

Run time: the examples use tiny presets (`camenn_tiny`, `inception_v4_tiny`, `bert_tiny`, ...), except the
few whose point is a real encoder that loads offline in seconds (EfficientNet-Lite0, all-MiniLM-L6-v2).
About 2.5 minutes for the docstrings on 2 busy cores, a third of it CameNNMultiTask's example (tracing
its train step) and a sixth the served model's export.
"""

import ast
import builtins
import dataclasses
import doctest
import importlib
import importlib.util
import inspect
import io
import re
import shutil
import sys
import textwrap
from pathlib import Path
from typing import List, Optional

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SOURCE_FOLDERS = ("model", "preprocessing", "serving", "tfx_pipeline", "camenn")
README = REPO_ROOT / "README.md"
RUN = "python"
NEEDS_SERVER = "python-needs-server"
SERVER_PORT = re.compile(r"\bport=8500\b")
EXAMPLE_SECTION = re.compile(r"^\s*Examples?( \(.*\))?:\s*$")  # "Example:", "Example (what it needs):"


@dataclasses.dataclass(frozen=True)
class Example:
    id: str
    path: Path  # the file it is in
    line: int  # the line of its first code line in that file
    code: str
    kind: str  # "python", "python-needs-server" or "doctest"
    module: Optional[str]  # the dotted module whose names it may use; None for README.md
    name: str = ""  # the docstring's owner, for doctest's messages


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO_ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts) if parts[0] == "camenn" else "camenn." + ".".join(parts)


def fenced_blocks(lines: List[str]):
    """(language, index of the first code line, code) for each fenced block; a fence's indentation is
    removed from its lines."""
    blocks, i = [], 0
    while i < len(lines):
        opening = lines[i].strip()
        if opening.startswith("```"):
            language = opening[3:].strip()
            end = i + 1
            while end < len(lines) and lines[end].strip() != "```":
                end += 1
            if end == len(lines):
                raise ValueError(f"unclosed ``` fence at line {i + 1}")
            blocks.append((language, i + 1, textwrap.dedent("\n".join(lines[i + 1 : end])) + "\n"))
            i = end + 1
        else:
            i += 1
    return blocks


def docstrings(tree: ast.Module):
    """(qualified name, line of the docstring's first line, docstring as written) for the module and
    every class and function, methods included."""
    found = []

    def visit(node, prefix):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                name = prefix + child.name
                doc = ast.get_docstring(child, clean=False)
                if doc:
                    found.append((name, child.body[0].lineno, doc))
                visit(child, name + ".")

    doc = ast.get_docstring(tree, clean=False)
    if doc:
        found.append(("<module>", tree.body[0].lineno, doc))
    visit(tree, "")
    return found


def source_files():
    for folder in SOURCE_FOLDERS:
        yield from sorted((REPO_ROOT / folder).rglob("*.py"))


def collect_examples() -> List[Example]:
    examples = []
    for path in source_files():
        relative = path.relative_to(REPO_ROOT).as_posix()
        for name, first_line, doc in docstrings(ast.parse(path.read_text(), str(path))):
            lines = doc.splitlines()
            runnable = [
                (language, index, code)
                for language, index, code in fenced_blocks(lines)
                if language in (RUN, NEEDS_SERVER)
            ]
            for k, (language, index, code) in enumerate(runnable):
                suffix = f"[{k + 1}]" if k else ""
                examples.append(
                    Example(
                        f"{relative}::{name}{suffix}", path, first_line + index, code, language, module_name(path), name
                    )
                )
            if any(line.lstrip().startswith(">>>") for line in lines):
                examples.append(
                    Example(f"{relative}::{name}[doctest]", path, first_line, doc, "doctest", module_name(path), name)
                )
    for language, index, code in fenced_blocks(README.read_text().splitlines()):
        if language in (RUN, NEEDS_SERVER):
            examples.append(Example(f"README.md::L{index}", README, index + 1, code, language, None))
    return examples


EXAMPLES = collect_examples()


def module_namespace(dotted: Optional[str]) -> dict:
    """A fresh namespace with what module `dotted` defines itself (not what it imports)."""
    namespace = {"__name__": "__doc_example__", "__builtins__": builtins}
    if dotted is None:
        return namespace
    module = importlib.import_module(dotted)
    imported = set()
    pending = list(ast.parse(Path(module.__file__).read_text()).body)
    while pending:  # the module's own statements (an import inside a function binds no global)
        node = pending.pop()
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            imported.update((alias.asname or alias.name).split(".")[0] for alias in node.names)
        elif not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            pending.extend(child for child in ast.iter_child_nodes(node) if isinstance(child, ast.stmt))
    namespace.update(
        {
            name: value
            for name, value in vars(module).items()
            if not name.startswith("__") and name not in imported and not inspect.ismodule(value)
        }
    )
    return namespace


def run_example(example: Example, code: Optional[str] = None) -> None:
    namespace = module_namespace(example.module)
    if example.kind == "doctest":
        test = doctest.DocTestParser().get_doctest(
            example.code, namespace, example.id, str(example.path), example.line - 1
        )
        report = io.StringIO()
        runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
        runner.run(test, out=report.write)
        if runner.failures:
            pytest.fail(
                f"{runner.failures} of {runner.tries} doctest examples failed:\n{report.getvalue()}", pytrace=False
            )
        return
    # Blank lines in front, so that tracebacks show the example's own line of its file.
    compiled = compile("\n" * (example.line - 1) + (code or example.code), str(example.path), "exec")
    exec(compiled, namespace)


@pytest.fixture
def example_cwd(tmp_path, monkeypatch):
    """A fresh working folder with `data` -> the repository's data/ (see the module docstring)."""
    (tmp_path / "data").symlink_to(REPO_ROOT / "data", target_is_directory=True)
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.mark.parametrize("example", [e for e in EXAMPLES if e.kind in (RUN, "doctest")], ids=lambda e: e.id)
def test_example(example, example_cwd):
    run_example(example)


# --- ```python-needs-server blocks: the serving tests' fixtures (tests/serving/conftest.py), imported
# under a name of their own (tests/serving is not a package; its conftest imports serving_helpers).
SERVING_TESTS = REPO_ROOT / "tests" / "serving"
sys.path.insert(0, str(SERVING_TESTS))
_spec = importlib.util.spec_from_file_location("camenn_serving_fixtures", SERVING_TESTS / "conftest.py")
serving_fixtures = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(serving_fixtures)
catalog, model_v1, served = serving_fixtures.catalog, serving_fixtures.model_v1, serving_fixtures.served


@pytest.fixture
def server_cwd(example_cwd, catalog, model_v1, served):
    """`example_cwd` plus a served model and its preprocessed catalog (see the module docstring);
    returns the port of the server."""
    import tensorflow as tf
    from serving_helpers import event_examples, item_example

    items, _ = catalog
    # A copy: examples may write into the version (warmup requests), never into the session's fixture.
    shutil.copytree(model_v1, example_cwd / "outputs" / "serving_model" / "camenn" / "1")
    preprocessed = example_cwd / "outputs" / "preprocessed"
    options = tf.io.TFRecordOptions(compression_type="GZIP")
    for folder, rows in (
        ("items", [item_example(item) for item in items]),
        ("examples/eval", event_examples(items, count=16)),
    ):
        (preprocessed / folder).mkdir(parents=True)
        with tf.io.TFRecordWriter(str(preprocessed / folder / "part-00000-of-00001.tfrecord.gz"), options) as writer:
            for row in rows:
                writer.write(row)
    server, _ = served
    return server.port


@pytest.mark.parametrize("example", [e for e in EXAMPLES if e.kind == NEEDS_SERVER], ids=lambda e: e.id)
def test_example_needing_server(example, server_cwd):
    # The only change to the example's text: TF Serving's default port becomes the fixture server's.
    run_example(example, SERVER_PORT.sub(f"port={server_cwd}", example.code))


def test_examples_were_found():
    kinds = {kind: sum(e.kind == kind for e in EXAMPLES) for kind in (RUN, NEEDS_SERVER, "doctest")}
    assert kinds[RUN] >= 30 and kinds[NEEDS_SERVER] >= 1 and kinds["doctest"] >= 1, kinds
    assert len({e.id for e in EXAMPLES}) == len(EXAMPLES), "two examples share an id"


def test_every_example_section_is_run():
    """An `Example:` section whose code is plain indented text is never run: it must start with a runnable
    fence or `>>>` (see the module docstring)."""
    unfenced = []
    for path in source_files():
        for name, first_line, doc in docstrings(ast.parse(path.read_text(), str(path))):
            lines = doc.splitlines()
            for i, line in enumerate(lines):
                if not EXAMPLE_SECTION.match(line):
                    continue
                following = next((other.strip() for other in lines[i + 1 :] if other.strip()), "")
                if following not in ("```" + RUN, "```" + NEEDS_SERVER) and not following.startswith(">>>"):
                    unfenced.append(f"{path.relative_to(REPO_ROOT)}:{first_line + i}: {name}")
    assert not unfenced, "Example sections that are never run:\n" + "\n".join(unfenced)
