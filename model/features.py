"""Every feature name, once: what `camenn preprocess` writes into each tf.Example (one per event), what
Transform makes of it, and what the model and the serving signatures take.

A raw tf.Example carries the listing's features (joined from the item catalog) and the event's features.
Transform turns the id features into vocabulary indices (with OOV buckets) and the numbers into
normalised floats; text and image encodings (and token ids) pass through unchanged, since tokenising and
encoding happen before the graph (`camenn preprocess`), so the serving graph holds only core TF ops.
"""

# --- Listing (item) features: cached per item for serving, joined onto every event for training.
ITEM_ID = "item_id"
MERCHANT_ID = "merchant_id"
CATEGORY = "category"  # fine product class, e.g. "Pink-Lady"
COARSE_CATEGORY = "coarse_category"  # e.g. "Apple": hard ITA/TIA negatives share it
MERCHANT_SIZE = "merchant_size"  # small | medium | large: an evaluation slice, not a model input
PRICE = "price"  # listing price, > 0
TITLE = "title"  # the merchant's title, for display (the listing table); never a model input
# WordPiece ids of "[CLS] title [SEP] description [SEP]" (uncased, accents stripped), right-padded with 0:
# what an end-to-end model (text encoder inside) takes instead of TEXT_EMBEDDINGS.
TEXT_TOKEN_IDS = "text_token_ids"
# num_text_tokens x text_dim floats, row-major: the frozen text encoder's token states of the listing
# text, averaged over that many contiguous segments (`camenn.model.text_encoders.segment_mean_pool`).
TEXT_EMBEDDINGS = "text_embeddings"
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
# What a model may take, after Transform: the id, integer and numeric features, the text (pooled token
# states, or token ids end to end) and the image (patch embeddings, or pixels end to end). Each model
# takes the subset its `input` names.
MODEL_INPUTS = (
    ID_FEATURES + tuple(INTEGER_FEATURES) + NUMERIC_FEATURES + (TEXT_EMBEDDINGS, TEXT_TOKEN_IDS, PATCH_EMBEDDINGS)
)
# The two sides of a ranking request. What depends only on the listing is computed once per listing and
# model version (the listing table); a request brings only the shopper and the context.
LISTING_INPUTS = (
    ITEM_ID,
    MERCHANT_ID,
    CATEGORY,
    COARSE_CATEGORY,
    PRICE,
    TEXT_EMBEDDINGS,
    TEXT_TOKEN_IDS,
    PATCH_EMBEDDINGS,
    IMAGE,
)
REQUEST_INPUTS = (SHOPPER_ID, HOUR, DISTANCE_KM)
# Item-level features `camenn preprocess` writes once per listing (OUT/items).
ITEM_FEATURES = (
    ITEM_ID,
    MERCHANT_ID,
    CATEGORY,
    COARSE_CATEGORY,
    MERCHANT_SIZE,
    PRICE,
    TITLE,
    TEXT_TOKEN_IDS,
    TEXT_EMBEDDINGS,
    PATCH_EMBEDDINGS,
)
# Raw features that are never model inputs.
NON_MODEL_FEATURES = (REQUEST_ID, TIMESTAMP, MERCHANT_SIZE, LABEL)

# Model outputs, one per task, in the paper's words.
CVR = "cvr"  # will the click convert?
ITA = "ita"  # image-to-text alignment: for this image, is this the right text?
TIA = "tia"  # text-to-image alignment: for this text, is this the right image?
TASKS = (CVR, ITA, TIA)
# Tasks that look at the listing alone: their scores are computed once per listing and model version.
LISTING_TASKS = (ITA, TIA)

# --- Evaluation only (the pipeline's AlignmentEvalExamples writes them; never model inputs).
LISTING_QUALITY = "listing_quality"  # a slice: the listing's known quality where a truth file gives it
# The qualities a truth file (item_id, quality) gives a listing, as the embedded sample's simulator writes them.
OK_QUALITY = "ok"
INACCURATE_TEXT = "inaccurate_text"  # the title and description of another product
VAGUE_PHOTO = "vague_photo"  # blurred, tightly cropped or dark
FLAWED_QUALITIES = (INACCURATE_TEXT, VAGUE_PHOTO)
# A slice of the ITA/TIA rows: which negatives a true pair is judged against. A true pair carries both
# values (it is in both slices), a negative its own kind.
NEGATIVE_KIND = "negative_kind"
HARD_NEGATIVE = "hard"  # another product of the same coarse category (another apple for an apple)
OTHER_COARSE_NEGATIVE = "other_coarse"  # a product of another coarse category (an onion for an apple)
# The training split's conversion rate on every eval row: the prior normalized entropy is measured against.
TRAIN_CONVERSION_RATE = "train_conversion_rate"
EVAL_LABELS = {CVR: LABEL, ITA: "ita_label", TIA: "tia_label"}  # 1 for the true pair, 0 for a negative
EVAL_WEIGHTS = {CVR: "cvr_weight", ITA: "ita_weight", TIA: "tia_weight"}  # which rows count for which task
