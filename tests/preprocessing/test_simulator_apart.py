"""Preprocessing reads any dataset folder: it never needs the sample's simulator (`camenn.simulator`)."""

import ast
import subprocess
import sys
from pathlib import Path

import camenn.preprocessing

PREPROCESSING = Path(camenn.preprocessing.__file__).parent


def test_importing_the_pipeline_does_not_import_the_simulator():
    script = (
        "import sys\nimport camenn.preprocessing.pipeline, camenn.preprocessing.cli\n"
        "print(sorted(m for m in sys.modules if m.split('.')[:2] == ['camenn', 'simulator']))\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def test_no_preprocessing_module_imports_the_simulator_even_lazily():
    offenders = []
    for path in sorted(PREPROCESSING.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = (
                [alias.name for alias in node.names]
                if isinstance(node, ast.Import)
                else [f"{node.module}.{alias.name}" for alias in node.names]
                if isinstance(node, ast.ImportFrom)
                else []
            )
            offenders += [f"{path.name}:{node.lineno} {name}" for name in names if name.startswith("camenn.simulator")]
    assert PREPROCESSING.joinpath("pipeline.py").is_file() and not offenders
