"""Compiles the CameNN pipeline for Kubeflow Pipelines V2 (Vertex AI Pipelines, Kubeflow 2.x).

The spec holds the same components as the local run; each runs in `kubeflow_image`, which needs CameNN
and its pins installed (tfx_pipeline/Dockerfile). Paths in the config must be reachable from the cluster
(e.g. gs://...), and Beam-based components run on the runner the config's Beam arguments name.

    camenn pipeline compile --dataset gs://b/data --outputs gs://b/camenn --image gcr.io/p/camenn:1 \\
        -- --runner=DataflowRunner --project=p --region=europe-west1 --temp_location=gs://b/tmp
"""

import os
from typing import Optional

from camenn.tfx_pipeline import configs

SPEC_FILE = "camenn_pipeline.json"


def compile_pipeline(config: configs.PipelineConfig, output: Optional[str] = None, image: Optional[str] = None) -> str:
    """Writes the PipelineJob JSON and returns its path (default outputs/kubeflow/camenn_pipeline.json)."""
    from tfx import v1 as tfx

    from camenn.tfx_pipeline.pipeline import create_pipeline

    output = output or os.path.join(str(configs.paths.DEFAULT_OUTPUTS), "kubeflow", SPEC_FILE)
    os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
    runner = tfx.orchestration.experimental.KubeflowV2DagRunner(
        config=tfx.orchestration.experimental.KubeflowV2DagRunnerConfig(default_image=image or config.kubeflow_image),
        output_dir=os.path.dirname(os.path.abspath(output)),
        output_filename=os.path.basename(output),
    )
    runner.run(create_pipeline(config))
    return output


if __name__ == "__main__":
    from camenn.tfx_pipeline.cli import main

    main(["compile"])
