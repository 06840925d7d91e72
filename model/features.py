"""Every feature name, once: what `camenn preprocess` writes into each tf.Example (one per event), what
Transform makes of it, and what the model and the serving signatures take.

A raw tf.Example carries the listing's features (joined from the item catalog) and the event's features.
Transform turns the id features into vocabulary indices (with OOV buckets) and the numbers into
normalised floats; token ids and patch embeddings pass through unchanged, since tokenising and image
encoding happen before the graph (`camenn preprocess`), so the serving graph holds only core TF ops.
"""

# --- Listing (item) features: cached per item for serving, joined onto every event for training.
ITEM_ID = "item_id"
MERCHANT_ID = "merchant_id"
CATEGORY = "category"  # fine product class, e.g. "Pink-Lady"
COARSE_CATEGORY = "coarse_category"  # e.g. "Apple": hard ITA/TIA negatives share it
MERCHANT_SIZE = "merchant_size"  # small | medium | large: an evaluation slice, not a model input
PRICE = "price"  # listing price, > 0
# WordPiece ids of "[CLS] title [SEP] description [SEP]" (uncased, accents stripped), right-padded with 0.
TEXT_TOKEN_IDS = "text_token_ids"
# num_patches x patch_dim floats, row-major: the frozen image encoder's embedding of each photo patch
# (patches in reading order, left to right then top to bottom).
PATCH_EMBEDDINGS = "patch_embeddings"
# uint8 RGB pixels [H, W, 3]: what an end-to-end model (image encoder inside) takes instead of
# PATCH_EMBEDDINGS.
IMAGE = "image"

# --- Event features: one click.
REQUEST_ID = "request_id"
SHOPPER_ID = "shopper_id"
TIMESTAMP = "timestamp"  # unix seconds
HOUR = "hour"  # local hour of the click, 0..23
DISTANCE_KM = "distance_km"  # shopper to store, >= 0

# --- Label.
LABEL = "converted"  # 1 if the click turned into an order

# Ids the model embeds (after Transform: int64 vocabulary indices, OOV buckets last).
ID_FEATURES = (SHOPPER_ID, ITEM_ID, MERCHANT_ID, CATEGORY, COARSE_CATEGORY)
# Numbers the model projects (after Transform: float32, normalised).
NUMERIC_FEATURES = (PRICE, DISTANCE_KM)
# Small integer features the model embeds directly (no vocabulary needed).
INTEGER_FEATURES = {HOUR: 24}
# What the model takes (contract 5), after Transform: the id, integer and numeric features, the text's
# token ids and the image's patch embeddings.
MODEL_INPUTS = ID_FEATURES + tuple(INTEGER_FEATURES) + NUMERIC_FEATURES + (TEXT_TOKEN_IDS, PATCH_EMBEDDINGS)
# Item-level features attached by id at serving time (the ranking client's cache).
ITEM_FEATURES = (ITEM_ID, MERCHANT_ID, CATEGORY, COARSE_CATEGORY, MERCHANT_SIZE, PRICE, TEXT_TOKEN_IDS,
                 PATCH_EMBEDDINGS)
# Raw features that are never model inputs.
NON_MODEL_FEATURES = (REQUEST_ID, TIMESTAMP, MERCHANT_SIZE, LABEL)

# Model outputs, one per task, in the paper's words.
CVR = "cvr"  # will the click convert?
ITA = "ita"  # image-to-text alignment: for this image, is this the right text?
TIA = "tia"  # text-to-image alignment: for this text, is this the right image?
TASKS = (CVR, ITA, TIA)

# --- Evaluation only (the pipeline's AlignmentEvalExamples writes them; never model inputs).
LISTING_QUALITY = "listing_quality"  # a slice: the listing's known quality where a truth file gives it
EVAL_LABELS = {CVR: LABEL, ITA: "ita_label", TIA: "tia_label"}  # 1 for the true pair, 0 for a negative
EVAL_WEIGHTS = {CVR: "cvr_weight", ITA: "ita_weight", TIA: "tia_weight"}  # which rows count for which task
