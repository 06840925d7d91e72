"""Weights for `InceptionV4Backbone` from the public checkpoints, with numpy alone (no torch):

- timm's `inception_v4` (`model.safetensors` of e.g. timm/inception_v4.tf_in1k; a state dict with
  `features.N.<branch>.conv.weight` (out, in, kh, kw) and `.bn.{weight,bias,running_mean,running_var}`),
- TF-slim's `inception_v4.ckpt` (`InceptionV4/<block>/<branch>/<conv>/weights` (kh, kw, in, out) and
  `.../BatchNorm/{beta,moving_mean,moving_variance}`; slim's batch norm has no scale, so gamma is 1).

Both name maps come from the architecture table in `inception_v4_backbone`. The classifier heads
(timm `last_linear`, slim `Logits`/`AuxLogits`) are not part of the backbone and are skipped.
"""

from pathlib import Path

import numpy as np

from camenn.model.inception_v4.inception_v4_backbone import InceptionV4Backbone, conv_units

TIMM_HEAD = ("last_linear.",)
SLIM_SKIPPED = ("InceptionV4/Logits/", "InceptionV4/AuxLogits/", "global_step")


def _assign(backbone, prefix, kernel, gamma, beta, mean, variance):
    conv = backbone.get_layer(f"{prefix}_conv")
    bn = backbone.get_layer(f"{prefix}_bn")
    for layer, values in ((conv, [kernel]), (bn, [gamma, beta, mean, variance])):
        expected = [tuple(w.shape) for w in layer.weights]
        got = [tuple(np.shape(v)) for v in values]
        if expected != got:
            raise ValueError(
                f"checkpoint shapes {got} do not fit layer {layer.name} {expected}: the "
                f"checkpoint was made for another width_multiplier or stackwise_num_blocks"
            )
        layer.set_weights([np.asarray(v, dtype=w.dtype) for v, w in zip(values, layer.weights)])


def _check_all_used(keys, used, skipped, source):
    unused = sorted(k for k in keys if k not in used and not k.startswith(skipped))
    if unused:
        raise ValueError(
            f"{source} has {len(unused)} tensors the backbone does not use, e.g. {unused[:3]}: "
            "not an InceptionV4 checkpoint, or a different layout"
        )


def load_timm_weights(backbone: InceptionV4Backbone, state: dict) -> None:
    """Assigns a timm `inception_v4` state dict (name -> numpy array) to `backbone`, checking that every
    tensor is used exactly once (`num_batches_tracked` and the classifier excepted)."""
    used = set()
    for prefix, _, timm, _ in conv_units(backbone.stackwise_num_blocks):
        names = {k: f"{timm}.{k}" for k in ("conv.weight", "bn.weight", "bn.bias", "bn.running_mean", "bn.running_var")}
        missing = [n for n in names.values() if n not in state]
        if missing:
            raise KeyError(f"timm state dict lacks {missing[0]} (and {len(missing) - 1} more of {prefix})")
        used.update(names.values())
        used.add(f"{timm}.bn.num_batches_tracked")
        _assign(
            backbone,
            prefix,
            np.transpose(state[names["conv.weight"]], (2, 3, 1, 0)),
            state[names["bn.weight"]],
            state[names["bn.bias"]],
            state[names["bn.running_mean"]],
            state[names["bn.running_var"]],
        )
    _check_all_used(state, used, TIMM_HEAD, "the timm state dict")


def load_slim_weights(backbone: InceptionV4Backbone, tensors: dict) -> None:
    """Assigns TF-slim `InceptionV4` variables (name -> numpy array) to `backbone` (gamma = 1)."""
    used = set()
    for prefix, _conv, _, scope in conv_units(backbone.stackwise_num_blocks):
        names = [f"{scope}/weights"] + [f"{scope}/BatchNorm/{k}" for k in ("beta", "moving_mean", "moving_variance")]
        missing = [n for n in names if n not in tensors]
        if missing:
            raise KeyError(f"TF-slim checkpoint lacks {missing[0]} (for {prefix})")
        used.update(names)
        kernel, beta, mean, variance = (tensors[n] for n in names)
        _assign(backbone, prefix, kernel, np.ones_like(beta), beta, mean, variance)
    _check_all_used(tensors, used, SLIM_SKIPPED, "the TF-slim checkpoint")


def read_checkpoint(path) -> tuple:
    """Reads a timm safetensors file or a TF-slim checkpoint: ("timm" | "slim", name -> numpy array)."""
    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors.numpy import load_file

        return "timm", load_file(str(path))
    import tensorflow as tf

    prefix = str(path.with_suffix("")) if path.suffix in (".index", ".meta") else str(path)
    try:
        reader = tf.train.load_checkpoint(prefix)
    except (tf.errors.NotFoundError, tf.errors.DataLossError, ValueError) as error:
        raise ValueError(f"{path} is neither a .safetensors file nor a TF checkpoint: {error}") from None
    return "slim", {name: reader.get_tensor(name) for name in reader.get_variable_to_shape_map()}


def convert_checkpoint(checkpoint, output_dir, image_size=(299, 299), **backbone_config) -> InceptionV4Backbone:
    """Writes a keras-hub preset folder (backbone + image converter) from a timm or TF-slim checkpoint
    (of the paper's InceptionV4 unless `backbone_config` says otherwise); returns the backbone. Load it
    with `InceptionV4Backbone.from_preset(output_dir)` or `load_patch_encoder("inception_v4", output_dir)`."""
    from camenn.model.inception_v4.inception_v4_image_converter import InceptionV4ImageConverter

    kind, tensors = read_checkpoint(checkpoint)
    backbone = InceptionV4Backbone(**backbone_config)
    (load_timm_weights if kind == "timm" else load_slim_weights)(backbone, tensors)
    backbone.save_to_preset(str(output_dir))
    InceptionV4ImageConverter(image_size=image_size).save_to_preset(str(output_dir))
    return backbone


def build_random_preset(name, folder, config, image_size, seed) -> None:
    """Preset-store builder: a seeded, randomly initialised backbone and its image converter."""
    import keras

    from camenn.model.inception_v4.inception_v4_image_converter import InceptionV4ImageConverter

    keras.utils.set_random_seed(seed)
    InceptionV4Backbone(**config, name=name).save_to_preset(str(folder))
    InceptionV4ImageConverter(image_size=image_size).save_to_preset(str(folder))
