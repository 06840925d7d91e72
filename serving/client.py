"""Ranking client: candidates by item id in, one gRPC Predict out, items ranked by CVR back.

The client keeps the item features `camenn preprocess` cached (OUT/items/*.tfrecord.gz: tokens, patch
embeddings, ids, price) in memory, attaches them to the shopper and context of a request, and sends one
Predict to the model's `dense` signature: tensors rather than serialized tf.Examples, because the
features are already arrays here and a tensor request skips both the Example encoding on this side and
the parsing in the graph (`serving_default` takes tf.Examples for callers that have them).

Context the client fills for every candidate: the shopper id, the local `hour` of the request (default:
now, on this machine's clock) and `distance_km` from the shopper to the store (default 2 km, a typical
same-day delivery distance; pass one per candidate when store locations differ).

Example:
    with RankingClient(item_features="outputs/serving_model/item_features", port=8500) as client:
        for item in client.rank("shopper_42", ["item_1", "item_7", "item_9"]):
            print(item.item_id, item.cvr, item.ita, item.tia)
"""
import dataclasses
import datetime
import os
from typing import Dict, List, Optional, Sequence, Union

import grpc
import numpy as np
import tensorflow as tf
from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2, types_pb2
from tensorflow_serving.apis import get_model_metadata_pb2, predict_pb2, prediction_service_pb2_grpc

from camenn.model import features
from camenn.serving import defaults, examples

DENSE_SIGNATURE = "dense"


class UnknownItemsError(KeyError):
    """Item ids that the item feature cache does not hold."""

    def __init__(self, item_ids: Sequence[str], source: str):
        self.item_ids = list(item_ids)
        super().__init__(f"unknown item id(s): {', '.join(self.item_ids)} (not in {source})")

    def __str__(self) -> str:
        return self.args[0]


class PredictionError(RuntimeError):
    """The server refused or failed a request: `code` is its gRPC status."""

    def __init__(self, code: grpc.StatusCode, details: str):
        super().__init__(f"{code.name}: {details}")
        self.code = code
        self.details = details


class ItemFeatureStore:
    """The listings' cached features, one row per item, looked up by item id.

    Args:
        columns: feature name -> array with one row per item (as `examples.parse_columns` returns).
        source: where they came from, for error messages.
    """

    def __init__(self, columns: Dict[str, np.ndarray], source: str = "the item features"):
        if features.ITEM_ID not in columns:
            raise ValueError(f"{source} has no {features.ITEM_ID!r} feature")
        self.columns = columns
        self.source = source
        ids = [i.decode() for i in columns[features.ITEM_ID]]
        self._row = {item_id: row for row, item_id in enumerate(ids)}
        if len(self._row) != len(ids):
            raise ValueError(f"{source} holds an item id twice")

    @classmethod
    def load(cls, folder: Union[str, os.PathLike] = defaults.ITEM_FEATURES) -> "ItemFeatureStore":
        """Reads `folder/*.tfrecord.gz`: the pipeline's `<serving base>/item_features`, or `camenn preprocess`'s
        OUT/items (OUT itself works too)."""
        folder = str(folder)
        if os.path.isdir(os.path.join(folder, "items")):
            folder = os.path.join(folder, "items")
        try:
            records = examples.read_tfrecords(examples.tfrecord_pattern(folder))
        except FileNotFoundError:
            raise FileNotFoundError(f"no item features in {folder}: pass --item-features, the pipeline's "
                                    "<serving base>/item_features or `camenn preprocess`'s OUT/items") from None
        return cls(examples.parse_columns(records), source=folder)

    def __len__(self) -> int:
        return len(self._row)

    def __contains__(self, item_id: str) -> bool:
        return item_id in self._row

    @property
    def item_ids(self) -> List[str]:
        return list(self._row)

    def item_ids_of(self, merchant_id: Optional[str] = None) -> List[str]:
        """Every listing of a merchant (all listings when merchant_id is None), in cache order."""
        if merchant_id is None:
            return self.item_ids
        merchants = self.columns[features.MERCHANT_ID]
        wanted = merchant_id.encode()
        return [item_id for item_id, row in self._row.items() if merchants[row] == wanted]

    def rows(self, item_ids: Sequence[str]) -> Dict[str, np.ndarray]:
        """The features of these items, in this order; raises UnknownItemsError naming every unknown id."""
        unknown = [i for i in item_ids if i not in self._row]
        if unknown:
            raise UnknownItemsError(unknown, self.source)
        index = np.fromiter((self._row[i] for i in item_ids), dtype=np.int64, count=len(item_ids))
        return {name: column[index] for name, column in self.columns.items()}


def tensor_proto(value: np.ndarray) -> tensor_pb2.TensorProto:
    """tf.make_tensor_proto, with a direct path for byte strings: it checks every element one by one,
    which for a request's five id columns costs more than the rest of the request together."""
    if value.dtype != object:
        return tf.make_tensor_proto(value)
    shape = tensor_shape_pb2.TensorShapeProto(dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=d) for d in value.shape])
    proto = tensor_pb2.TensorProto(dtype=types_pb2.DT_STRING, tensor_shape=shape)
    proto.string_val.extend(value.ravel().tolist())
    return proto


@dataclasses.dataclass(frozen=True)
class RankedItem:
    item_id: str
    cvr: float
    ita: float
    tia: float


class RankingClient:
    """Scores candidates through a PredictionService (`camenn serve` or TensorFlow Serving).

    Args:
        item_features: an ItemFeatureStore, or the folder to load one from.
        host, port: the server (default 127.0.0.1:8500).
        model_name: the served model (default camenn); `version` pins one, else the newest.
        timeout: seconds per request.
    """

    def __init__(self, item_features: Union[ItemFeatureStore, str, os.PathLike] = defaults.ITEM_FEATURES,
                 host: str = "127.0.0.1", port: int = defaults.GRPC_PORT, model_name: str = defaults.MODEL_NAME,
                 version: Optional[int] = None, timeout: float = 30.0, max_message_bytes: int = 64 << 20):
        self.store = item_features if isinstance(item_features, ItemFeatureStore) else ItemFeatureStore.load(item_features)
        self.model_name = model_name
        self.version = version
        self.timeout = timeout
        options = [("grpc.max_receive_message_length", max_message_bytes),
                   ("grpc.max_send_message_length", max_message_bytes)]
        self._channel = grpc.insecure_channel(f"{host}:{port}", options=options)
        self._stub = prediction_service_pb2_grpc.PredictionServiceStub(self._channel)
        self._signature_inputs = None

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> "RankingClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _call(self, method, request):
        try:
            return method(request, timeout=self.timeout)
        except grpc.RpcError as error:
            raise PredictionError(error.code(), error.details()) from None

    def _model_spec(self, spec) -> None:
        spec.name = self.model_name
        if self.version is not None:
            spec.version.value = self.version

    def signature_inputs(self):
        """The `dense` signature's inputs as the server declares them (asked once per client)."""
        if self._signature_inputs is None:
            request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
            self._model_spec(request.model_spec)
            response = self._call(self._stub.GetModelMetadata, request)
            signature_defs = get_model_metadata_pb2.SignatureDefMap()
            response.metadata["signature_def"].Unpack(signature_defs)
            if DENSE_SIGNATURE not in signature_defs.signature_def:
                raise PredictionError(grpc.StatusCode.NOT_FOUND, f"model {self.model_name!r} has no "
                                      f"{DENSE_SIGNATURE!r} signature; it has {sorted(signature_defs.signature_def)}")
            self._signature_inputs = signature_defs.signature_def[DENSE_SIGNATURE].inputs
        return self._signature_inputs

    def predict_request(self, shopper_id: str, item_ids: Sequence[str], hour: Optional[int] = None,
                        distance_km: Union[float, Sequence[float]] = defaults.DISTANCE_KM) -> predict_pb2.PredictRequest:
        """The Predict request for these candidates (see the module docstring for the context defaults)."""
        if not item_ids:
            raise ValueError("no candidate items to score")
        n = len(item_ids)
        hour = datetime.datetime.now().hour if hour is None else hour
        if not 0 <= hour <= 23:
            raise ValueError(f"hour must be 0..23, got {hour}")
        distance = np.broadcast_to(np.asarray(distance_km, dtype=np.float32), (n,))
        if (distance < 0).any():
            raise ValueError("distance_km must be >= 0")
        columns = self.store.rows(item_ids)
        columns[features.SHOPPER_ID] = np.full(n, shopper_id.encode(), dtype=object)
        columns[features.HOUR] = np.full(n, hour, dtype=np.int64)
        columns[features.DISTANCE_KM] = distance
        arrays = examples.signature_arrays(columns, self.signature_inputs(),
                                           source=f"the item features ({self.store.source}) and the request context")
        request = predict_pb2.PredictRequest()
        self._model_spec(request.model_spec)
        request.model_spec.signature_name = DENSE_SIGNATURE
        for name, value in arrays.items():
            request.inputs[name].CopyFrom(tensor_proto(value))
        return request

    def score(self, shopper_id: str, item_ids: Sequence[str], hour: Optional[int] = None,
              distance_km: Union[float, Sequence[float]] = defaults.DISTANCE_KM) -> Dict[str, np.ndarray]:
        """One Predict: {cvr, ita, tia} arrays aligned with item_ids."""
        response = self._call(self._stub.Predict, self.predict_request(shopper_id, item_ids, hour, distance_km))
        return {task: tf.make_ndarray(response.outputs[task]) for task in features.TASKS}

    def rank(self, shopper_id: str, item_ids: Sequence[str], hour: Optional[int] = None,
             distance_km: Union[float, Sequence[float]] = defaults.DISTANCE_KM) -> List[RankedItem]:
        """The candidates, most likely to convert first, with their alignment scores."""
        scores = self.score(shopper_id, item_ids, hour, distance_km)
        order = np.argsort(-scores[features.CVR], kind="stable")
        return [RankedItem(item_ids[i], *(float(scores[t][i]) for t in (features.CVR, features.ITA, features.TIA)))
                for i in order]
