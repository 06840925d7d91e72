"""EfficientNet-Lite0: the torch-free checkpoint reader, the converter, and ImageNet classification of
real grocery photos with the converted weights."""

import pickle
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from camenn.model.efficientnet_lite import torch_checkpoint
from camenn.model.efficientnet_lite.convert_efficientnet_lite import load_efficientnet_pytorch_weights
from camenn.model.efficientnet_lite.efficientnet_lite_backbone import EfficientNetLiteBackbone
from camenn.model.efficientnet_lite.efficientnet_lite_presets import WEIGHTS_FILE, WEIGHTS_PACKAGE
from camenn.model.preset_store import package_file

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "efficientnet_lite0_reference.npz"
# Grocery Store Dataset test folders whose ImageNet-1k class is unambiguous (indices checked against
# keras_hub.utils.imagenet_id_to_name).
IMAGENET_CLASSES = {
    "Fruit/Apple/Granny-Smith": 948,
    "Fruit/Banana": 954,
    "Fruit/Lemon": 951,
    "Fruit/Orange": 950,
    "Fruit/Pineapple": 953,
    "Vegetables/Pepper/Green-Bell-Pepper": 945,
    "Vegetables/Cucumber": 943,
    "Fruit/Pomegranate": 957,
    "Vegetables/Zucchini": 939,
    "Vegetables/Cabbage": 936,
    "Vegetables/Mushroom/Brown-Cap-Mushroom": 947,
}
PHOTOS_PER_CLASS = 2  # the first two test photos of each folder, by file name
MIN_TOP5_HITS = 18  # of 22: the criterion, fixed before the first run


@pytest.fixture(scope="module")
def state():
    return torch_checkpoint.load(package_file(WEIGHTS_PACKAGE, WEIGHTS_FILE))


def test_legacy_torch_file_reads_without_torch(state):
    assert len(state) == 296
    assert state["_conv_stem.weight"].shape == (32, 3, 3, 3) and state["_conv_stem.weight"].dtype == np.float32
    assert state["_blocks.15._depthwise_conv.weight"].shape == (1152, 1, 3, 3)
    assert state["_fc.weight"].shape == (1000, 1280)
    assert state["_bn0.num_batches_tracked"].dtype == np.int64
    variances = [v for k, v in state.items() if k.endswith("running_var")]
    assert all((v >= 0).all() and v.mean() > 0 for v in variances)  # a few dead channels have variance 0


def test_reader_refuses_code_and_other_formats(tmp_path):
    import os

    crafted = tmp_path / "crafted.pth"
    with open(crafted, "wb") as f:
        for part in (torch_checkpoint.LEGACY_MAGIC, 1001, {"little_endian": True}):
            pickle.dump(part, f, protocol=2)
        pickle.dump(os.system, f, protocol=2)
    with pytest.raises(pickle.UnpicklingError, match="refusing"):
        torch_checkpoint.load(crafted)
    (tmp_path / "zip.pth").write_bytes(b"PK\x03\x04rest")
    with pytest.raises(ValueError, match="zip-format"):
        torch_checkpoint.load(tmp_path / "zip.pth")


def test_converter_uses_every_tensor_and_refuses_strangers(state):
    backbone = EfficientNetLiteBackbone()
    load_efficientnet_pytorch_weights(backbone, state)  # raises on any unused or missing tensor
    assert sum(int(np.prod(w.shape)) for w in backbone.trainable_weights) == sum(
        v.size for k, v in state.items() if not k.startswith("_fc") and "running" not in k and "num_batches" not in k
    )
    with pytest.raises(ValueError, match="no place"):
        load_efficientnet_pytorch_weights(backbone, {**state, "_blocks.16._bn1.weight": np.ones(8, np.float32)})


def test_outputs_equal_the_reference_implementation(state):
    """Same function as timm's tf_efficientnet_lite0 with these weights (tests/fixtures, made by
    scripts/reference/make_efficientnet_lite0_reference.py); 1e-4 of the output scale."""
    from camenn.model.efficientnet_lite.efficientnet_lite_image_classifier import EfficientNetLiteImageClassifier

    reference = np.load(FIXTURE)
    backbone = EfficientNetLiteBackbone()
    classifier = EfficientNetLiteImageClassifier(backbone=backbone, num_classes=1000)
    load_efficientnet_pytorch_weights(backbone, state, classifier)
    for name in ("photo", "noise"):  # 224x224, and 100x100 (odd grids: TF "SAME" pads after, not before)
        images = (reference[name][None].astype(np.float32) - 127.0) / 128.0
        features = np.asarray(classifier.pooler(backbone(images)))
        logits = np.asarray(classifier.output_dense(features))
        for ours, theirs in ((features, reference[f"{name}_features"]), (logits, reference[f"{name}_logits"])):
            assert np.abs(ours - theirs).max() <= 1e-4 * np.abs(theirs).max(), name


def test_classifies_real_grocery_photos(grocery_store_dir):
    import keras

    from camenn.model.efficientnet_lite.efficientnet_lite_image_classifier import EfficientNetLiteImageClassifier

    classifier = EfficientNetLiteImageClassifier.from_preset("efficientnet_lite0_imagenet")
    hits, misses = 0, []
    for folder, expected in IMAGENET_CLASSES.items():
        photos = sorted((grocery_store_dir / "test" / folder).glob("*.jpg"))[:PHOTOS_PER_CLASS]
        assert len(photos) == PHOTOS_PER_CLASS, folder
        for photo in photos:
            pixels = np.asarray(Image.open(photo).convert("RGB"))[None]
            top5 = np.argsort(keras.ops.convert_to_numpy(classifier.predict(pixels, verbose=0))[0])[::-1][:5]
            hits += int(expected in top5)
            if expected not in top5:
                misses.append((photo.name, expected, top5.tolist()))
    assert hits >= MIN_TOP5_HITS, f"{hits}/{len(IMAGENET_CLASSES) * PHOTOS_PER_CLASS} in the top 5; missed {misses}"


def test_patch_encoder_of_the_preset():
    from camenn.model.patch_encoders import load_patch_encoder

    encoder = load_patch_encoder("efficientnet_lite0", "efficientnet_lite0_imagenet")
    assert (encoder.output_dim, encoder.image_size) == (1280, (224, 224))
    np.testing.assert_allclose(encoder.prepare(np.full((1, 5, 5, 3), 127, np.uint8)), 0.0, atol=1e-6)
    embeddings = encoder(np.random.default_rng(0).integers(0, 256, (3, 100, 120, 3), dtype=np.uint8))
    assert embeddings.shape == (3, 1280) and (embeddings >= 0).all()  # pooled ReLU6 features
