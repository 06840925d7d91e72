"""CameNN in Keras 3 (TensorFlow backend): backbone, mixture of transformer experts, task model, presets,
training data step and export."""

from camenn.model.camenn.alignment_examples import alignment_batch, make_alignment_examples
from camenn.model.camenn.camenn_backbone import CameNNBackbone, load_text_encoder
from camenn.model.camenn.camenn_multi_task import CameNNMultiTask, PerExampleBinaryCrossentropy
from camenn.model.camenn.camenn_optimizer import GroupedAdamW, WarmupLinearDecay, camenn_optimizer
from camenn.model.camenn.camenn_presets import backbone_presets
from camenn.model.camenn.listing_states import encode_listings, score_requests
from camenn.model.camenn.transformer_expert_mixture import (
    ExpertRoutingMetrics,
    TransformerExpertMixture,
    load_balancing_loss,
    router_z_loss,
)
