"""Baselines that CameNN is measured against (`camenn experiments`): a DNN over pooled embeddings and an
MMoE with dense MLP experts. Both take CameNN's inputs (cached encodings), give the same `cvr`, `ita`, `tia`
probabilities and export through `camenn.model.camenn.export`."""

from camenn.model.baselines.baseline_presets import dnn_ranker_presets, mmoe_presets
from camenn.model.baselines.dnn_ranker import DNNRanker, DNNRankerBackbone
from camenn.model.baselines.mmoe import MMoE, MMoEBackbone
from camenn.model.baselines.pooled_inputs import PooledInputs
