"""From raw tf.Examples (as `camenn preprocess` writes them) to the tensors a signature takes.

The ranking client's item cache (OUT/items/*.tfrecord.gz) and the bundle's warmup requests both start from
raw tf.Examples; both end as named arrays shaped and typed as a SignatureDef's inputs declare.
"""

import glob
import os
from typing import Dict, Iterable, List, Mapping, Sequence

import numpy as np
import tensorflow as tf

_DTYPE_OF_KIND = {"bytes_list": tf.string, "float_list": tf.float32, "int64_list": tf.int64}


def _feature_spec(serialized: bytes) -> Dict[str, tf.io.FixedLenFeature]:
    """Fixed-length parsing spec read off one example: its kinds and value counts (one value -> a scalar)."""
    example = tf.train.Example.FromString(serialized)
    spec = {}
    for name, feature in example.features.feature.items():
        kind = feature.WhichOneof("kind")
        if kind is None:
            continue
        length = len(getattr(feature, kind).value)
        spec[name] = tf.io.FixedLenFeature(() if length == 1 else (length,), _DTYPE_OF_KIND[kind])
    return spec


def parse_columns(serialized: Sequence[bytes], batch_size: int = 1024) -> Dict[str, np.ndarray]:
    """Parses serialized tf.Examples that share one layout into one array per feature (rows in order).

    Raises ValueError naming the problem when the examples disagree on a feature's kind or length.
    """
    serialized = list(serialized)
    if not serialized:
        return {}
    spec = _feature_spec(serialized[0])
    parts: Dict[str, List[np.ndarray]] = {name: [] for name in spec}
    for start in range(0, len(serialized), batch_size):
        try:
            parsed = tf.io.parse_example(tf.constant(serialized[start : start + batch_size]), spec)
        except tf.errors.InvalidArgumentError as error:
            raise ValueError(
                f"examples {start}..{start + batch_size - 1} do not share the layout of the first "
                f"one ({ {k: (v.dtype.name, v.shape) for k, v in spec.items()} }): {error.message}"
            ) from None
        for name, value in parsed.items():
            parts[name].append(value.numpy())
    return {name: np.concatenate(chunks) for name, chunks in parts.items()}


def read_tfrecords(pattern: str, compression: str = "GZIP") -> List[bytes]:
    """Every record of the files matching a glob pattern, files in name order."""
    files = sorted(glob.glob(pattern))
    if not files:
        raise FileNotFoundError(f"no files match {pattern}")
    return list(tf.data.TFRecordDataset(files, compression_type=compression).as_numpy_iterator())


def signature_arrays(
    columns: Mapping[str, np.ndarray], signature_inputs: Mapping, source: str = "the features"
) -> Dict[str, np.ndarray]:
    """Picks, casts and reshapes columns to a SignatureDef's inputs (a map of name -> TensorInfo).

    Raises KeyError naming the inputs that `columns` lack.
    """
    missing = sorted(set(signature_inputs) - set(columns))
    if missing:
        raise KeyError(f"the signature needs {missing}, which {source} lack")
    arrays = {}
    for name, info in signature_inputs.items():
        value = np.asarray(columns[name])
        dtype = tf.dtypes.as_dtype(info.dtype)
        if dtype != tf.string:
            value = value.astype(dtype.as_numpy_dtype, copy=False)
        if not info.tensor_shape.unknown_rank:
            inner = [d.size for d in info.tensor_shape.dim[1:]]
            value = value.reshape([len(value)] + inner)
        arrays[name] = value
    return arrays


def tfrecord_pattern(folder: str) -> str:
    return os.path.join(folder, "*.tfrecord.gz")


def iter_chunks(values: Sequence, size: int) -> Iterable[Sequence]:
    for start in range(0, len(values), size):
        yield values[start : start + size]
