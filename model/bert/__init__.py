"""BERT text encoders in keras-hub form: preset folders for `keras_hub.models.BertBackbone` and
`BertTokenizer`, built once from the installed all-MiniLM-L6-v2 weights (or seeded random weights).

    import keras_hub
    from camenn.model import bert

    folder = bert.preset_dir("all_minilm_l6_v2")   # or "bert_tiny" for tests
    backbone = keras_hub.models.BertBackbone.from_preset(folder)
    tokenizer = keras_hub.models.BertTokenizer.from_preset(folder)

All presets share the all-MiniLM-L6-v2 (BERT uncased) vocabulary, so token ids do not depend on the
preset. This package imports no TensorFlow until a preset has to be built.
"""

from camenn.model import preset_store
from camenn.model.bert.bert_presets import backbone_presets

PRESETS = tuple(backbone_presets)


def preset_dir(name: str) -> str:
    """The keras-hub preset folder of BERT preset `name` (built and checksummed on first use), as the
    string keras-hub's `from_preset` takes."""
    if name not in backbone_presets:
        raise KeyError(f"unknown BERT preset {name!r}; choose one of {', '.join(PRESETS)}")
    return str(preset_store.ensure(name))
