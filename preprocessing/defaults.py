"""Defaults of `camenn preprocess`, importable without TensorFlow or Beam (the CLI reads them for --help)."""

# The demo encoder: ImageNet-pretrained EfficientNet-Lite0; `inception_v4` is the paper's (no weights
# ship offline).
IMAGE_ENCODER = "efficientnet_lite0"
IMAGE_PRESET = "efficientnet_lite0_imagenet"
GRID = (2, 2)
MAX_TEXT_LENGTH = 64
# The frozen text encoder and how many pooled tokens each listing text becomes (README "Text tokens").
TEXT_ENCODER = "all_minilm_l6_v2"
NUM_TEXT_TOKENS = 4
# The last EVAL_FRACTION of the events' time range is the eval split.
EVAL_FRACTION = 0.2
