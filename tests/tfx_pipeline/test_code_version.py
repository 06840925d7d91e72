"""Each pipeline step's code version covers the modules it runs, and only changes when their code does."""

import ast
import shutil

import pytest

from camenn.tfx_pipeline import code_version as cv

BUNDLE = "camenn.tfx_pipeline.components.serving_bundle"
TRAINER = "camenn.tfx_pipeline.trainer"
PREPROCESS = "camenn.tfx_pipeline.components.preprocess"


@pytest.fixture
def repo_copy(tmp_path):
    for folder in ("camenn", "model", "preprocessing", "serving", "simulator", "tfx_pipeline"):
        shutil.copytree(cv.REPO / folder, tmp_path / folder, ignore=shutil.ignore_patterns("__pycache__"))
    return tmp_path


def _versions(repo):
    cv.code_version.cache_clear()
    cv.module_closure.cache_clear()
    return {m: cv.code_version(m, repo=repo) for m in (BUNDLE, TRAINER, PREPROCESS)}


def _relative(module):
    return {str(path.relative_to(cv.REPO)) for path in cv.module_closure(module)}


def test_closures_follow_static_and_function_local_imports():
    bundle = _relative(BUNDLE)
    # serving/bundle.py is imported inside the component's function, serving/examples.py by bundle.py.
    assert {
        "tfx_pipeline/components/serving_bundle.py",
        "serving/bundle.py",
        "serving/examples.py",
        "serving/__init__.py",
        "camenn/__init__.py",
    } <= bundle
    assert not any(path.startswith("model/") for path in bundle)
    trainer = _relative(TRAINER)
    assert {
        "model/camenn/camenn_backbone.py",
        "model/camenn/transformer_expert_mixture.py",
        "serving/listings.py",
    } <= trainer
    assert "serving/bundle.py" not in trainer
    assert "preprocessing/pipeline.py" in _relative(PREPROCESS)


def test_a_serving_fix_changes_only_the_steps_that_run_serving_code(repo_copy):
    before = _versions(repo_copy)
    bundle_py = repo_copy / "serving" / "bundle.py"
    bundle_py.write_text(bundle_py.read_text() + "\nWARMUP_LIMIT = 100\n")
    after = _versions(repo_copy)
    assert after[BUNDLE] != before[BUNDLE]
    assert after[TRAINER] == before[TRAINER] and after[PREPROCESS] == before[PREPROCESS]


def test_comments_docstrings_and_formatting_do_not_change_a_version(repo_copy):
    before = _versions(repo_copy)
    backbone = repo_copy / "model" / "camenn" / "camenn_backbone.py"
    text = backbone.read_text()
    tree = ast.parse(text)
    docstrings = [
        ast.get_source_segment(text, node.body[0])
        for node in ast.walk(tree)
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef)) and ast.get_docstring(node)
    ]
    assert len(docstrings) > 2
    edited = text
    for docstring in docstrings:
        edited = edited.replace(docstring, '"""Reworded."""', 1)
    edited = edited.replace("\n\n", "\n\n# a new comment\n\n\n", 3) + "\n# the end\n"
    backbone.write_text(edited)
    assert _versions(repo_copy) == before
    backbone.write_text(text.replace("import keras\n", "import keras\nimport math\n", 1))
    changed = _versions(repo_copy)
    assert changed[TRAINER] != before[TRAINER] and changed[BUNDLE] == before[BUNDLE]


def test_an_unknown_module_is_refused():
    with pytest.raises(ValueError, match="not a camenn module"):
        cv.code_version("camenn.tfx_pipeline.no_such_module")


def test_every_step_that_runs_camenn_code_has_a_code_version(tmp_path):
    from camenn.tfx_pipeline import configs, pipeline

    config = configs.PipelineConfig(dataset_dir=str(cv.REPO / "data" / "sample"), outputs_dir=str(tmp_path))
    built = pipeline.create_pipeline(config)
    tfx_steps = {
        "StatisticsGen",
        "ExampleValidator",
        "Evaluator",
        "Pusher",
        "latest_blessed_model_resolver",
        "RetrievalPusher",
    }
    for component in built.components:
        if component.id in tfx_steps:
            continue
        version = component.exec_properties.get("code_version") or (
            component.id in ("Transform", "Trainer", "RetrievalTrainer")
            and _custom_config(component).get("code_version")
        )
        assert version and len(version) == 16, component.id


def _custom_config(component):
    import json

    config = component.exec_properties.get("custom_config")
    return json.loads(config) if isinstance(config, str) else (config or {})
