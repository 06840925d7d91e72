"""Exports a trained CameNN as a SavedModel that stock TensorFlow Serving loads.

Signatures, all on core TensorFlow ops (no CameNN, Keras or keras-hub code is needed to serve them):
- `serving_default`: `examples`, serialized tf.Examples (string [batch]) -> float32 [batch] `cvr`, `ita`,
  `tia`: the whole model per example (what TFMA evaluates);
- `dense`: the same from one tensor per feature, named as in `camenn.model.features`: [batch] for a
  scalar feature (shape [] or [1] in the feature spec), [batch, *shape] otherwise.
With listing-only attention (`CameNNBackbone.listing_only_attention`), also the listing table's:
- `rank`: `item_id`, `shopper_id`, `hour`, `distance_km`, each [batch] -> `cvr`, `ita`, `tia`: the
  listings' states come from the version's listing table, and only the request's tokens run
  (`listing_states.score_requests`); an unknown item id is refused with INVALID_ARGUMENT naming it;
- `listings`: `item_id` [batch] -> the table's `title`, `merchant_id`, `category`, `price`, `ita`, `tia`;
- `encode_listings`: the listing features [batch, ...] -> the rows the table holds
  (`listing_states.encode_listings`), so that new or edited listings can be added without retraining.
The table is written empty here and filled from a catalog afterwards
(`camenn.serving.listings.write_listing_table`, the pipeline's `ListingTable` step).

With a `transform` (e.g. tf.Transform's `TransformFeaturesLayer`), every signature takes raw features
as `raw_feature_spec` describes them and the transform makes the model inputs inside the graph; without
one, they take the model inputs directly.

Every input is checked inside the graph, and a bad one is refused with an error naming the feature:
a missing feature, a wrong dtype in a tf.Example, a wrong shape (rank or length), an id outside its
vocabulary, an hour outside 0..23, a token id outside the text encoder's vocabulary, a non-finite number.
"""

import keras
import tensorflow as tf

from camenn.model import features
from camenn.model.camenn.listing_states import encode_listings, score_requests
from camenn.model.camenn.transformer_expert_mixture import routing_metrics_paused
from camenn.model.listing_table import DISPLAY_COLUMNS, ListingTable

EXAMPLES_INPUT = "examples"
DENSE_SIGNATURE = "dense"
RANK_SIGNATURE = "rank"
LISTINGS_SIGNATURE = "listings"
ENCODE_LISTINGS_SIGNATURE = "encode_listings"
# The variable collection (`ExportArchive.add_variable_collection`) that holds the listing table.
LISTING_TABLE_COLLECTION = "listing_table"


def model_input_feature_spec(model):
    """tf.io feature spec of the model's inputs: what tf.Examples must hold without a transform."""
    spec = {}
    for name, tensor in model.input.items():
        dtype = tf.as_dtype(tensor.dtype)
        spec[name] = tf.io.FixedLenFeature(tuple(tensor.shape[1:]), tf.int64 if dtype.is_integer else dtype)
    return spec


def _dense_shape(feature):
    """What `dense` takes per example: a scalar feature (shape [] or [1] in the spec) as one value."""
    return [] if list(feature.shape) in ([], [1]) else list(feature.shape)


def _checked_shapes(raw, spec):
    """Each tensor after asserting its rank and trailing dims and a common batch size, in the spec's shape.

    The signatures declare no shapes: a static rank would let TensorFlow's graph optimiser fold the rank
    checks away, and nothing checks a signature's shapes at run time.
    """
    checked = {}
    batch_name = batch_size = None
    for name, feature in spec.items():
        tail = _dense_shape(feature)
        shape = tf.shape(raw[name], out_type=tf.int64)
        expected = tf.constant([-1, *tail], tf.int64)
        same_rank = tf.equal(tf.size(shape), tf.size(expected))
        same_dims = tf.cond(
            same_rank, lambda s=shape, e=expected: tf.reduce_all(tf.equal(s[1:], e[1:])), lambda: tf.constant(False)
        )
        checks = [
            tf.debugging.Assert(
                same_rank & same_dims,
                [f"feature {name!r} must have shape [batch{''.join(f', {d}' for d in tail)}], got", shape],
            )
        ]
        if batch_name is None:
            batch_name, batch_size = name, shape[0]
        else:
            checks.append(
                tf.debugging.Assert(
                    tf.equal(shape[0], batch_size),
                    [f"feature {name!r} has a batch of", shape[0], f"but feature {batch_name!r} has", batch_size],
                )
            )
        with tf.control_dependencies(checks):
            checked[name] = tf.reshape(raw[name], [-1, *feature.shape])
    return checked


def _check_values(inputs, backbone):
    """Asserts that each model input lies in the range the model can embed (the id must fit its table)."""
    upper = dict(backbone.vocabulary_sizes)
    upper.update(features.INTEGER_FEATURES)
    if backbone.text_encoder is not None:
        upper[features.TEXT_TOKEN_IDS] = backbone.text_encoder.vocabulary_size
    checks = []
    for name, limit in upper.items():
        if name not in inputs:  # the other side of a request, or an ablation without the text
            continue
        values = inputs[name]
        checks.append(
            tf.debugging.Assert(
                tf.reduce_all((values >= 0) & (values < limit)),
                [
                    f"feature {name!r} must lie in [0, {limit}); got values from",
                    tf.reduce_min(values),
                    "to",
                    tf.reduce_max(values),
                ],
            )
        )
    for name in (*features.NUMERIC_FEATURES, features.TEXT_EMBEDDINGS, features.PATCH_EMBEDDINGS):
        if name not in inputs:  # an end-to-end model takes pixels or token ids instead, an ablation may take none
            continue
        checks.append(
            tf.debugging.Assert(
                tf.reduce_all(tf.math.is_finite(inputs[name])), [f"feature {name!r} holds a NaN or infinite value"]
            )
        )
    return checks


def _model_inputs(raw, transform, names, backbone):
    """The model inputs `names` from raw features, through the transform, checked."""
    inputs = transform(raw) if transform is not None else raw
    missing = [name for name in names if name not in inputs]
    if missing:
        raise ValueError(f"the transform's outputs lack the model inputs {missing}")
    selected = {name: inputs[name] for name in names}
    with tf.control_dependencies(_check_values(selected, backbone)):
        return {name: tf.identity(value) for name, value in selected.items()}


def _signature_inputs(spec):
    return {name: tf.TensorSpec(None, feature.dtype, name=name) for name, feature in spec.items()}


def export_saved_model(
    model, export_dir, *, transform=None, raw_feature_spec=None, transform_trackables=(), verbose=False
):
    """Writes `model` (a `CameNNMultiTask`) as a SavedModel with the signatures of the module docstring.

    Args:
        model: a `CameNNMultiTask`.
        export_dir: str. Where the SavedModel goes (e.g. `<serving base>/camenn/<version>`).
        transform: callable or None. Raw feature dict -> dict holding the model inputs (more keys are
            ignored), traced into the graph, e.g. `tft_output.transform_features_layer()`. It must accept
            the listing's or the request's raw features alone (tf.Transform's layer does).
        raw_feature_spec: dict of `tf.io.FixedLenFeature`, the raw features the signatures take
            (without the label). Required with `transform`; without, the model inputs' spec.
        transform_trackables: objects that own what `transform` needs (tables, vocabulary assets),
            e.g. the `TransformFeaturesLayer`; they are saved with the model.
        verbose: bool. Print the signatures.

    Returns:
        `export_dir`.

    Example:
    ```python
    import numpy as np
    import tensorflow as tf
    from camenn.model import features
    from camenn.model.camenn import CameNNMultiTask

    model = CameNNMultiTask.from_preset(
        "camenn_tiny", vocabulary_sizes={name: 50 for name in features.ID_FEATURES},
        num_text_tokens=2, text_dim=8, num_patches=4, patch_dim=8)
    export_saved_model(model, "outputs/serving_model/camenn/1")

    # Without a transform, a tf.Example holds the model inputs (`model_input_feature_spec`): here all zeros.
    def zeros(feature):
        size = int(np.prod(feature.shape))
        if feature.dtype == tf.int64:
            return tf.train.Feature(int64_list=tf.train.Int64List(value=[0] * size))
        return tf.train.Feature(float_list=tf.train.FloatList(value=[0.0] * size))

    example = tf.train.Example(features=tf.train.Features(
        feature={name: zeros(feature) for name, feature in model_input_feature_spec(model).items()}))
    serving = tf.saved_model.load("outputs/serving_model/camenn/1")
    scores = serving.signatures["serving_default"](examples=tf.constant([example.SerializeToString()] * 3))
    assert sorted(scores) == ["cvr", "ita", "tia"] and scores["cvr"].shape == (3,)
    ```
    """
    if transform is None and raw_feature_spec is not None:
        raise ValueError("raw_feature_spec describes a transform's inputs: give the transform too")
    if transform is not None and raw_feature_spec is None:
        raise ValueError("a transform needs raw_feature_spec: the raw features the signatures take")
    if transform is None and features.IMAGE in model.input:
        raise ValueError(
            f"an end-to-end model takes pixels ({features.IMAGE!r}): export it with a transform "
            "that decodes the images (e.g. tf.io.decode_jpeg) from raw features"
        )
    spec = dict(raw_feature_spec) if transform is not None else model_input_feature_spec(model)
    for name, feature in spec.items():
        if not isinstance(feature, tf.io.FixedLenFeature):
            raise ValueError(f"feature {name!r}: only tf.io.FixedLenFeature is supported, got {feature!r}")
    backbone = model.backbone
    model_inputs = list(model.input)
    tasks = backbone.task_names

    def predict(raw):
        outputs = model(_model_inputs(raw, transform, model_inputs, backbone), training=False)
        return {task: tf.cast(outputs[task], tf.float32) for task in tasks}

    archive = keras.export.ExportArchive()
    for trackable in transform_trackables:
        archive.track(trackable)
    with routing_metrics_paused(model):
        # One trace of the transform and model, which both signatures call.
        predict = tf.function(predict, autograph=False).get_concrete_function(
            {name: tf.TensorSpec([None, *feature.shape], feature.dtype, name=name) for name, feature in spec.items()}
        )

        def serve_examples(examples):
            return predict(tf.io.parse_example(examples, spec))

        def serve_dense(raw):
            return predict(_checked_shapes(raw, spec))

        archive.add_endpoint(
            "serving_default", serve_examples, input_signature=[tf.TensorSpec([None], tf.string, name=EXAMPLES_INPUT)]
        )
        archive.add_endpoint(DENSE_SIGNATURE, serve_dense, input_signature=[_signature_inputs(spec)])
        if backbone.listing_only_attention and backbone.request_tasks:
            _add_listing_endpoints(archive, model, transform, spec)
    archive.write_out(str(export_dir), verbose=verbose)
    return export_dir


def _add_listing_endpoints(archive, model, transform, spec):
    """`encode_listings`, `rank` and `listings` over an empty `ListingTable` (module docstring)."""
    backbone = model.backbone
    listing_names = [name for name in model.input if name in features.LISTING_INPUTS]
    request_names = [name for name in model.input if name in features.REQUEST_INPUTS]
    listing_spec = {name: spec[name] for name in spec if name in listing_names or name == features.ITEM_ID}
    request_spec = {name: spec[name] for name in request_names}

    def encode(raw):
        return encode_listings(
            model, _model_inputs(_checked_shapes(raw, listing_spec), transform, listing_names, backbone)
        )

    encode = tf.function(encode, autograph=False).get_concrete_function(_signature_inputs(listing_spec))
    state_columns = {name: (tensor.dtype, tensor.shape[1:]) for name, tensor in encode.structured_outputs.items()}
    display = {name: (dtype, ()) for name, dtype in DISPLAY_COLUMNS.items()}
    table = ListingTable({**state_columns, **display})
    states = [name for name in state_columns if name not in backbone.listing_tasks]

    def rows_of(raw_item_ids):
        # Without a transform the model's item ids are vocabulary indices; the table keys them as strings.
        item_ids = tf.reshape(raw_item_ids, [-1])
        return table.rows(item_ids if item_ids.dtype == tf.string else tf.strings.as_string(item_ids))

    def rank(request):
        raw = _checked_shapes(request, {features.ITEM_ID: spec[features.ITEM_ID], **request_spec})
        rows = rows_of(raw[features.ITEM_ID])
        inputs = _model_inputs(raw, transform, request_names, backbone)
        scores = {task: tf.gather(table.columns[task], rows) for task in backbone.listing_tasks}
        for task in backbone.request_tasks:
            scores[task] = score_requests(model, inputs, table.gather(rows, states))
        return scores

    def listings(request):
        rows = rows_of(_checked_shapes(request, {features.ITEM_ID: spec[features.ITEM_ID]})[features.ITEM_ID])
        return table.gather(rows, [*DISPLAY_COLUMNS, *backbone.listing_tasks])

    archive.add_endpoint(
        ENCODE_LISTINGS_SIGNATURE, lambda raw: encode(raw), input_signature=[_signature_inputs(listing_spec)]
    )
    archive.add_endpoint(
        RANK_SIGNATURE,
        rank,
        input_signature=[_signature_inputs({features.ITEM_ID: spec[features.ITEM_ID], **request_spec})],
    )
    archive.add_endpoint(
        LISTINGS_SIGNATURE, listings, input_signature=[_signature_inputs({features.ITEM_ID: spec[features.ITEM_ID]})]
    )
    archive.add_variable_collection(LISTING_TABLE_COLLECTION, table.ordered_variables)
