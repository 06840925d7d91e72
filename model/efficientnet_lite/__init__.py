"""EfficientNet-Lite0 (Tan & Le 2019; the Lite variants of the TF efficientnet repository) as keras-hub's
own `EfficientNetBackbone`, with ImageNet weights converted from the installed EfficientNet-PyTorch
checkpoint without torch."""
