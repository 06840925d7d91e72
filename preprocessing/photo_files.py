"""Reading the photo files of a dataset folder that someone else made.

`items.csv` names the files preprocessing reads, so a dataset folder is untrusted input. A photo is
read only if it is a regular file that really lies inside the folder, and never past a size bound:

- the path is resolved (every symlink followed) and must still lie inside the resolved dataset folder:
  a symlink to a file (or a folder of photos) elsewhere is `bad_image_path`; the file actually opened
  is checked again, so swapping a link between the check and the open does not get around it;
- a FIFO, device, socket or folder is `missing_image` (it is not a photo, and opening a FIFO would wait
  for a writer forever); the open never blocks;
- a file over MAX_PHOTO_BYTES is `image_too_large` before a byte is read;
- a file that grows, shrinks or is replaced while it is read is `image_changed`: each read takes
  exactly the size the file had when it was opened and checks that nothing follows, and the bytes that
  are decoded must hash to the key the bytes that were hashed gave (`photo_key`).

Paths of other Beam filesystems (gs://, s3://, ...) have no symlinks or FIFOs; for them the size
bounds and the change checks apply.
"""

import contextlib
import errno
import hashlib
import os
import stat
from typing import BinaryIO, Iterator, Tuple

from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from camenn.preprocessing.dataset import RowError

# An uncompressed RGBA photo at the decoder's pixel limit (8192 x 8192) is 256 MiB: no real photo is larger.
MAX_PHOTO_BYTES = 256 << 20
_CHUNK = 1 << 20
_FILE_KINDS = (
    (stat.S_ISDIR, "a folder"),
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def _inside(path: str, root: str) -> bool:
    return os.path.commonpath([path, root]) == root


def _kind(mode: int) -> str:
    return next((name for test, name in _FILE_KINDS if test(mode)), "not a regular file")


def _shown(dataset_dir: str, path: str) -> str:
    """The path as items.csv gives it (relative to the dataset folder), for messages."""
    try:
        return os.path.relpath(path, dataset_dir)
    except ValueError:
        return path


@contextlib.contextmanager
def _open_local(dataset_dir: str, path: str, max_bytes: int) -> Iterator[Tuple[BinaryIO, int]]:
    shown = _shown(dataset_dir, path)
    root = os.path.realpath(dataset_dir)
    real = os.path.realpath(path)
    if not _inside(real, root):
        raise RowError(
            "bad_image_path", f"{shown} resolves through a symlink to {real}, outside the dataset folder {root}"
        )
    try:
        fd = os.open(real, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise RowError("missing_image", f"{shown}: no such file") from None
    except OSError as error:
        if error.errno == errno.ELOOP:  # a link appeared where the resolved path had none
            raise RowError("bad_image_path", f"{shown} became a symlink while it was opened") from None
        raise RowError("missing_image", f"{shown}: cannot be opened ({error.strerror or error})") from None
    with os.fdopen(fd, "rb", buffering=0) as stream:
        opened = f"/proc/self/fd/{fd}"
        if os.path.islink(opened):  # Linux: the file actually opened, whatever happened since the check
            actual = os.readlink(opened)
            if actual.startswith("/") and not _inside(actual, root):
                raise RowError("bad_image_path", f"{shown} was swapped for {actual}, outside the dataset folder")
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise RowError("missing_image", f"{shown} is {_kind(info.st_mode)}, not a photo file")
        if info.st_size > max_bytes:
            raise RowError(
                "image_too_large", f"{shown} is a file of {info.st_size} bytes, over the {max_bytes}-byte limit"
            )
        yield stream, info.st_size


@contextlib.contextmanager
def _open_remote(dataset_dir: str, path: str, max_bytes: int) -> Iterator[Tuple[BinaryIO, int]]:
    shown = _shown(dataset_dir, path)
    try:
        (metadata,) = FileSystems.match([path])[0].metadata_list
        size = metadata.size_in_bytes
    except Exception as error:  # noqa: BLE001 - each filesystem raises its own kinds
        raise RowError("missing_image", f"{shown}: {error}") from None
    if size > max_bytes:
        raise RowError("image_too_large", f"{shown} is a file of {size} bytes, over the {max_bytes}-byte limit")
    try:
        stream = FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED)
    except Exception as error:  # noqa: BLE001
        raise RowError("missing_image", f"{shown}: {error}") from None
    with stream:
        yield stream, size


def open_photo(dataset_dir: str, path: str, max_bytes: int = MAX_PHOTO_BYTES):
    """Opens a photo of an untrusted dataset folder: a context manager giving (stream, size), or RowError.

    Args:
        dataset_dir: the dataset folder (local, or any Beam filesystem).
        path: the photo, `FileSystems.join(dataset_dir, image_path)`.
        max_bytes: larger files are `image_too_large`.

    Example:
    >>> import io
    >>> from PIL import Image
    >>> with open_photo("data/sample", "data/sample/images/i00001.jpg") as (stream, size):
    ...     data = read_opened(stream, size, "images/i00001.jpg")
    >>> len(data) == size, Image.open(io.BytesIO(data)).format
    (True, 'JPEG')
    >>> with open_photo("data/sample", "/etc/passwd") as (stream, size):  # doctest: +ELLIPSIS
    ...     pass
    Traceback (most recent call last):
    ...
    camenn.preprocessing.dataset.RowError: bad_image_path: ...
    """
    if FileSystems.get_scheme(path) is None:
        return _open_local(dataset_dir, path, max_bytes)
    return _open_remote(dataset_dir, path, max_bytes)


def chunks_of(stream: BinaryIO, size: int, shown: str) -> Iterator[bytes]:
    """Exactly `size` bytes of an opened photo, in pieces; `image_changed` if it ends early or goes on."""
    left = size
    while left:
        chunk = stream.read(min(_CHUNK, left))
        if not chunk:
            raise RowError("image_changed", f"{shown} shrank while it was read ({size - left} of {size} bytes)")
        left -= len(chunk)
        yield chunk
    if stream.read(1):
        raise RowError("image_changed", f"{shown} grew while it was read (past its {size} bytes)")


def read_opened(stream: BinaryIO, size: int, shown: str) -> bytes:
    """The whole of an opened photo (see `chunks_of`)."""
    return b"".join(chunks_of(stream, size, shown))


def photo_key(chunks, salt: str) -> str:
    """The cache key of a photo: sha256 of its bytes, then of the salt (encoder, preset, grid, version)."""
    digest = hashlib.sha256()
    for chunk in chunks:
        digest.update(chunk)
    digest.update(salt.encode())
    return digest.hexdigest()


def hash_photo(dataset_dir: str, path: str, salt: str, max_bytes: int = MAX_PHOTO_BYTES) -> str:
    """The photo's cache key, reading it in pieces (never whole in memory), or RowError."""
    with open_photo(dataset_dir, path, max_bytes) as (stream, size):
        return photo_key(chunks_of(stream, size, _shown(dataset_dir, path)), salt)


def read_photo(dataset_dir: str, path: str, key: str, salt: str, max_bytes: int = MAX_PHOTO_BYTES) -> bytes:
    """The photo's bytes, checked against the key they were hashed to (`image_changed` if they differ), or RowError."""
    shown = _shown(dataset_dir, path)
    with open_photo(dataset_dir, path, max_bytes) as (stream, size):
        data = read_opened(stream, size, shown)
    if photo_key([data], salt) != key:
        raise RowError("image_changed", f"{shown} was replaced after it was hashed: its bytes differ now")
    return data
