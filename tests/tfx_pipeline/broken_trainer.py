"""A deliberately broken Trainer for the pipeline tests: the pipeline's CameNN model with every head's
weights set to zero, so it scores every row 0.5 whatever converts or matches.

Such a model ranks nothing (every AUC 0.5) and is not calibrated (log loss ln 2 = 0.69 where the click
rate alone gives ~0.55), so the Evaluator must refuse to bless it and the Pusher must not push it. It is
built, sized and exported by the pipeline's own Trainer code (camenn.tfx_pipeline.trainer).
"""

import numpy as np
import tensorflow_transform as tft

from camenn.tfx_pipeline import trainer


def run_fn(fn_args):
    tft_output = tft.TFTransformOutput(fn_args.transform_output)
    model = trainer.build_model(trainer.settings_of(fn_args), tft_output, "float32")
    for head in model.heads:
        head.set_weights([np.zeros_like(w) for w in head.get_weights()])
    trainer.export_serving_model(model, tft_output, fn_args.serving_model_dir)
