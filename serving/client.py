"""Ranking client: a shopper, a context and candidate item ids in, one gRPC Predict out, items ranked by CVR.

The request names the candidates by item id and carries only the shopper and the context; the served
model version looks the listings up in its own listing table (`rank` signature), where everything that
depends on the listing alone was computed when the version was made. A second call to the `listings`
signature fetches what a person reads beside the scores (title, category, price), for the command line.

Context the client fills for every candidate: the shopper id, the local `hour` of the request (default:
now, on this machine's clock) and `distance_km` from the shopper to the store (default 2 km, a typical
same-day delivery distance; pass one per candidate when store locations differ).

An unknown item id is refused by the model with INVALID_ARGUMENT naming every unknown id of the request;
`rank` then scores the rest in a second request and reports the unknown ids beside the ranking, so one
stale id does not lose the whole request.

Example (against `camenn serve` on the default port; `with_titles` asks the `listings` signature too):
```python-needs-server
from camenn.serving.client import RankingClient

with RankingClient(port=8500) as client:
    ranking = client.rank("shopper_4", ["item_001", "item_007", "item_009", "item_999"], hour=18, with_titles=True)
    for item in ranking:
        print(item.item_id, item.title, item.cvr, item.ita, item.tia)
    print("unknown:", ranking.unknown_item_ids)
assert [item.cvr for item in ranking] == sorted((item.cvr for item in ranking), reverse=True)
assert ranking.unknown_item_ids == ["item_999"]  # not in the model version's listing table
```
"""

import dataclasses
import datetime
import re
from typing import Dict, List, Optional, Sequence, Union

import grpc
import numpy as np
import tensorflow as tf
from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2, types_pb2
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

from camenn.model import features
from camenn.serving import defaults

RANK_SIGNATURE = "rank"
LISTINGS_SIGNATURE = "listings"
# How the model's listing table names the ids it does not hold (camenn.model.listing_table).
_UNKNOWN_IDS = re.compile(r"unknown item ids:\]?\s*\[([^\]]*)\]")


class UnknownItemsError(KeyError):
    """Item ids that the served model version's listing table does not hold."""

    def __init__(self, item_ids: Sequence[str], source: str = "the served model's listing table"):
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


def tensor_proto(value: np.ndarray) -> tensor_pb2.TensorProto:
    """tf.make_tensor_proto, with a direct path for byte strings: it checks every element one by one,
    which for a request's id columns costs more than the rest of the request together."""
    if value.dtype != object:
        return tf.make_tensor_proto(value)
    shape = tensor_shape_pb2.TensorShapeProto(dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=d) for d in value.shape])
    proto = tensor_pb2.TensorProto(dtype=types_pb2.DT_STRING, tensor_shape=shape)
    proto.string_val.extend(value.ravel().tolist())
    return proto


def _encoded(values: Sequence[str]) -> np.ndarray:
    return np.array([v.encode() for v in values], dtype=object)


@dataclasses.dataclass(frozen=True)
class RankedItem:
    item_id: str
    cvr: float
    ita: float
    tia: float
    title: str = ""


class Ranking(list):
    """Ranked items, most likely to convert first; `unknown_item_ids` lists the candidates the model
    version does not know (left out)."""

    def __init__(self, items: Sequence[RankedItem] = (), unknown_item_ids: Sequence[str] = ()):
        super().__init__(items)
        self.unknown_item_ids = list(unknown_item_ids)


class RankingClient:
    """Scores candidates through a PredictionService (`camenn serve` or TensorFlow Serving).

    Args:
        host, port: the server (default 127.0.0.1:8500).
        model_name: the served model (default camenn); `version` pins one, else the newest.
        timeout: seconds per request.
        max_message_bytes: the largest request or response.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = defaults.GRPC_PORT,
        model_name: str = defaults.MODEL_NAME,
        version: Optional[int] = None,
        timeout: float = 30.0,
        max_message_bytes: int = 64 << 20,
    ):
        self.model_name = model_name
        self.version = version
        self.timeout = timeout
        options = [
            ("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.max_send_message_length", max_message_bytes),
        ]
        self._channel = grpc.insecure_channel(f"{host}:{port}", options=options)
        self._stub = prediction_service_pb2_grpc.PredictionServiceStub(self._channel)

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> "RankingClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _predict(
        self,
        signature: str,
        arrays: Dict[str, np.ndarray],
        output_filter: Sequence[str] = (),
        model_name: Optional[str] = None,
    ) -> Dict[str, np.ndarray]:
        """One Predict to `model_name` (default: this client's model, at its pinned version if any)."""
        request = predict_pb2.PredictRequest()
        request.model_spec.name = model_name or self.model_name
        if self.version is not None and model_name is None:
            request.model_spec.version.value = self.version
        request.model_spec.signature_name = signature
        request.output_filter.extend(output_filter)
        for name, value in arrays.items():
            request.inputs[name].CopyFrom(tensor_proto(value))
        try:
            response = self._stub.Predict(request, timeout=self.timeout)
        except grpc.RpcError as error:
            unknown = _UNKNOWN_IDS.search(error.details() or "")
            if error.code() == grpc.StatusCode.INVALID_ARGUMENT and unknown:
                raise UnknownItemsError([i for i in unknown.group(1).split(",") if i]) from None
            raise PredictionError(error.code(), error.details()) from None
        return {name: tf.make_ndarray(tensor) for name, tensor in response.outputs.items()}

    def rank_request_arrays(
        self,
        shopper_id: str,
        item_ids: Sequence[str],
        hour: Optional[int] = None,
        distance_km: Union[float, Sequence[float]] = defaults.DISTANCE_KM,
    ) -> Dict[str, np.ndarray]:
        """The `rank` signature's inputs for these candidates (see the module docstring for the defaults)."""
        if not item_ids:
            raise ValueError("no candidate items to score")
        n = len(item_ids)
        hour = datetime.datetime.now().hour if hour is None else hour
        if not 0 <= hour <= 23:
            raise ValueError(f"hour must be 0..23, got {hour}")
        distance = np.broadcast_to(np.asarray(distance_km, dtype=np.float32), (n,))
        if (distance < 0).any() or not np.isfinite(distance).all():
            raise ValueError("distance_km must be finite and >= 0")
        return {
            features.ITEM_ID: _encoded(item_ids),
            features.SHOPPER_ID: _encoded([shopper_id] * n),
            features.HOUR: np.full(n, hour, dtype=np.int64),
            features.DISTANCE_KM: np.array(distance),
        }

    def score(
        self,
        shopper_id: str,
        item_ids: Sequence[str],
        hour: Optional[int] = None,
        distance_km: Union[float, Sequence[float]] = defaults.DISTANCE_KM,
    ) -> Dict[str, np.ndarray]:
        """One Predict: {cvr, ita, tia} arrays aligned with item_ids. Raises UnknownItemsError naming
        every id the model version does not know."""
        arrays = self.rank_request_arrays(shopper_id, item_ids, hour, distance_km)
        return self._predict(RANK_SIGNATURE, arrays, features.TASKS)

    def listings(self, item_ids: Sequence[str]) -> Dict[str, np.ndarray]:
        """What the model version's listing table holds for these items (title, merchant_id, category,
        price, ita, tia), aligned with item_ids."""
        return self._predict(LISTINGS_SIGNATURE, {features.ITEM_ID: _encoded(item_ids)})

    def rank(
        self,
        shopper_id: str,
        item_ids: Sequence[str],
        hour: Optional[int] = None,
        distance_km: Union[float, Sequence[float]] = defaults.DISTANCE_KM,
        with_titles: bool = False,
    ) -> Ranking:
        """The candidates, most likely to convert first, with their alignment scores (and titles, with
        `with_titles`: one more request). Unknown ids are left out and listed in `unknown_item_ids`."""
        item_ids = list(item_ids)
        distance = np.broadcast_to(np.asarray(distance_km, dtype=np.float32), (len(item_ids),))
        unknown: List[str] = []
        try:
            scores = self.score(shopper_id, item_ids, hour, distance)
        except UnknownItemsError as error:
            unknown = [i for i in error.item_ids if i in set(item_ids)]
            if not unknown:
                raise
            keep = [k for k, i in enumerate(item_ids) if i not in set(unknown)]
            item_ids, distance = [item_ids[k] for k in keep], distance[keep]
            if not item_ids:
                return Ranking([], unknown)
            scores = self.score(shopper_id, item_ids, hour, distance)
        titles = [t.decode() for t in self.listings(item_ids)[features.TITLE]] if with_titles else [""] * len(item_ids)
        order = np.argsort(-scores[features.CVR], kind="stable")
        return Ranking(
            [
                RankedItem(
                    item_ids[i],
                    *(float(scores[t][i]) for t in (features.CVR, features.ITA, features.TIA)),
                    title=titles[i],
                )
                for i in order
            ],
            unknown,
        )
