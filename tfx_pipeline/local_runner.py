"""Runs the CameNN pipeline on this machine: TFX LocalDagRunner, Beam DirectRunner (configs.py says how),
ML Metadata in a local SQLite file (all under `outputs/` by default).

    python -m camenn.tfx_pipeline.local_runner [--profile small]   (or: camenn pipeline run)
"""

import logging
import os
import re

from camenn.tfx_pipeline import configs

log = logging.getLogger(__name__)
_COMPONENT_PROGRESS = re.compile(r"Component \S+ is (running|finished)")


def _show_component_progress() -> None:
    """Lets TFX's "Component X is running / finished" lines through when its other INFO lines are hidden
    (camenn.cli shows only warnings of other libraries unless --verbose)."""
    absl = logging.getLogger("absl")
    if logging.getLogger().level <= logging.INFO or any(f is _component_progress for f in absl.filters):
        return
    absl.setLevel(logging.INFO)
    absl.addFilter(_component_progress)


def _component_progress(record: logging.LogRecord) -> bool:
    return record.levelno >= logging.WARNING or bool(_COMPONENT_PROGRESS.match(record.getMessage()))


def run(config: configs.PipelineConfig, **pipeline_kwargs) -> None:
    """Runs the pipeline to its end, alone on its metadata store (`interrupted_runs`: a second run over the
    same outputs is refused; what a killed earlier run left RUNNING is cancelled and its partial outputs
    removed first)."""
    from tfx import v1 as tfx

    _show_component_progress()

    from camenn.tfx_pipeline import interrupted_runs
    from camenn.tfx_pipeline.pipeline import create_pipeline

    os.makedirs(os.path.dirname(config.metadata_path), exist_ok=True)
    pipeline = create_pipeline(
        config,
        metadata_connection_config=tfx.orchestration.metadata.sqlite_metadata_connection_config(config.metadata_path),
        **pipeline_kwargs,
    )
    with interrupted_runs.exclusive_run(config.metadata_path):
        for line in interrupted_runs.cancel_interrupted(
            config.metadata_path, config.pipeline_name, config.pipeline_root
        ):
            log.warning("an earlier run was interrupted: %s", line)
        tfx.orchestration.LocalDagRunner().run(pipeline)


if __name__ == "__main__":
    from camenn.tfx_pipeline.cli import main

    main(["run"])
