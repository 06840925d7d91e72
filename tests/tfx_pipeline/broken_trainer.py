"""A deliberately broken Trainer for the pipeline tests: the pipeline's CameNN model, exported untrained.

A model that learned nothing scores every click near 0.5 whatever converts, so the Evaluator must refuse to
bless it and the Pusher must not push it. It is built, sized and exported by the pipeline's own Trainer
code (camenn.tfx_pipeline.trainer); only `fit` is left out.
"""
import tensorflow_transform as tft

from camenn.tfx_pipeline import trainer


def run_fn(fn_args):
    tft_output = tft.TFTransformOutput(fn_args.transform_output)
    model = trainer.build_model(fn_args.custom_config, tft_output, "float32")
    trainer.export_serving_model(model, tft_output, fn_args.serving_model_dir)
