"""Reads a legacy (pre-1.6, non-zip) `torch.save` file into numpy arrays, without torch.

The legacy format is five things one after the other: a pickled magic number, a pickled protocol
version, pickled system info (endianness, type sizes), the pickled object itself (tensors appear as
`torch._utils._rebuild_tensor_v2(storage, offset, size, stride, ...)`, storages as persistent ids
`("storage", storage_type, key, location, numel)`), a pickled list of storage keys, then each storage's
raw bytes in that order (an int64 element count, then the data). Only the globals a state dict of
tensors needs are allowed, so a crafted file cannot run code.
"""

import collections
import pickle
import struct

import numpy as np

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
STORAGE_DTYPES = {
    "FloatStorage": np.float32,
    "DoubleStorage": np.float64,
    "HalfStorage": np.float16,
    "LongStorage": np.int64,
    "IntStorage": np.int32,
    "ShortStorage": np.int16,
    "CharStorage": np.int8,
    "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
}


class _StorageType:
    def __init__(self, name):
        self.dtype = np.dtype(STORAGE_DTYPES[name])


class _Storage:
    """A storage whose bytes come after the pickled object; filled in by `load`."""

    def __init__(self, dtype, numel):
        self.dtype, self.numel, self.data = dtype, numel, None


class _LazyTensor:
    def __init__(self, storage, offset, size, stride):
        self.storage, self.offset, self.size, self.stride = storage, offset, tuple(size), tuple(stride)

    def materialise(self):
        item = self.storage.dtype.itemsize
        view = np.lib.stride_tricks.as_strided(
            self.storage.data[self.offset :], shape=self.size, strides=[s * item for s in self.stride]
        )
        return np.array(view)  # a contiguous copy, independent of the storage


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False, backward_hooks=None, metadata=None):
    return _LazyTensor(storage, storage_offset, size, stride)


def _rebuild_tensor(storage, storage_offset, size, stride):
    return _LazyTensor(storage, storage_offset, size, stride)


class _Unpickler(pickle.Unpickler):
    def __init__(self, file, storages):
        super().__init__(file)
        self.storages = storages

    def find_class(self, module, name):
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        if module == "torch._utils" and name == "_rebuild_tensor_v2":
            return _rebuild_tensor_v2
        if module == "torch._utils" and name == "_rebuild_tensor":
            return _rebuild_tensor
        if module == "torch" and name in STORAGE_DTYPES:
            return _StorageType(name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}: not part of a tensor state dict")

    def persistent_load(self, saved_id):
        kind, storage_type, key, _location, numel = saved_id[:5]
        if kind != "storage":
            raise pickle.UnpicklingError(f"unsupported persistent id {kind!r}")
        if len(saved_id) > 5 and saved_id[5] is not None:
            raise pickle.UnpicklingError("storage views (torch < 0.4 files) are not supported")
        if key not in self.storages:
            self.storages[key] = _Storage(storage_type.dtype, numel)
        return self.storages[key]


def _materialise(value):
    if isinstance(value, _LazyTensor):
        return value.materialise()
    if isinstance(value, dict):
        return type(value)((k, _materialise(v)) for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return type(value)(_materialise(v) for v in value)
    return value


def load(path):
    """The object saved in a legacy torch file, with every tensor as a numpy array."""
    with open(path, "rb") as f:
        if f.read(2) == b"PK":
            raise ValueError(f"{path} is a zip-format torch file (torch >= 1.6), not the legacy format")
        f.seek(0)
        if pickle.load(f) != LEGACY_MAGIC:
            raise ValueError(f"{path} is not a legacy torch file (wrong magic number)")
        protocol = pickle.load(f)
        if protocol != 1001:
            raise ValueError(f"{path}: unsupported torch protocol version {protocol}")
        sys_info = pickle.load(f)
        if not sys_info.get("little_endian", False):
            raise ValueError(f"{path} was saved big-endian; only little-endian files are supported")
        storages = {}
        obj = _Unpickler(f, storages).load()
        keys = pickle.load(f)
        for key in keys:
            storage = storages[key]
            (numel,) = struct.unpack("<q", f.read(8))
            nbytes = numel * storage.dtype.itemsize
            data = f.read(nbytes)
            if numel != storage.numel or len(data) != nbytes:
                raise ValueError(f"{path} is truncated or corrupt (storage {key})")
            storage.data = np.frombuffer(data, dtype=storage.dtype)
    return _materialise(obj)
