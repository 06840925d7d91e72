"""Runs the CameNN pipeline on this machine: TFX LocalDagRunner, Beam DirectRunner with several worker
processes, ML Metadata in a local SQLite file (all under `outputs/` by default).

    python -m camenn.tfx_pipeline.local_runner [--preset small]   (or: camenn pipeline run)
"""
import os

from camenn.tfx_pipeline import configs


def run(config: configs.PipelineConfig, **pipeline_kwargs) -> None:
    from tfx import v1 as tfx

    from camenn.tfx_pipeline.pipeline import create_pipeline

    os.makedirs(os.path.dirname(config.metadata_path), exist_ok=True)
    pipeline = create_pipeline(
        config,
        metadata_connection_config=tfx.orchestration.metadata.sqlite_metadata_connection_config(config.metadata_path),
        **pipeline_kwargs)
    tfx.orchestration.LocalDagRunner().run(pipeline)


if __name__ == "__main__":
    from camenn.tfx_pipeline.cli import main
    main(["run"])
