"""The stages that attach each listing's text and patch encodings, from the cache or the frozen encoders.

The cache is content-addressed: an encoding is stored under sha256 of what it was computed from (a text's
token ids, a photo's bytes) and of a salt naming everything else it depends on (encoder, preset, grid, cache
version: pipeline.py builds the salts). Each distinct text or photo is looked up once; only the misses are
encoded, and written back atomically. The encoders come in as PTransforms ((key, input) -> (key, float32
[rows, D])), `text_embedding.EmbedTexts` and `patch_embedding.EmbedPatches` in a run, fakes in tests.
"""

import dataclasses
import hashlib
import io
import logging
import time
import uuid

import apache_beam as beam
import numpy as np
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from camenn.preprocessing import images, photo_files
from camenn.preprocessing.dataset import RowError
from camenn.preprocessing.transforms import REJECTED, Listing, rejected_listing, tally

log = logging.getLogger(__name__)

MISS = "miss"
PROGRESS_EVERY = 100


def _cache_path(cache_dir: str, key: str) -> str:
    return FileSystems.join(cache_dir, key[:2], f"{key}.npy")


def _text_key(listing: Listing, salt: str) -> str:
    return hashlib.sha256(listing.token_ids.astype("<i8").tobytes() + salt.encode()).hexdigest()


class LookupCache(beam.DoFn):
    """(key, payload) -> (key, cached float32 [rows, D] encoding), or tagged MISS (key, payload) when the
    cache has no readable entry of `rows` rows (the payload is what computing it needs: a photo's path,
    a text's token ids)."""

    def __init__(self, cache_dir: str, rows: int):
        self.cache_dir, self.rows = cache_dir, rows

    def process(self, element):
        key, payload = element
        cached = _cache_path(self.cache_dir, key)
        if FileSystems.exists(cached):
            try:
                with FileSystems.open(cached, compression_type=CompressionTypes.UNCOMPRESSED) as stream:
                    embeddings = np.load(io.BytesIO(stream.read()), allow_pickle=False)
                if embeddings.ndim == 2 and embeddings.shape[0] == self.rows:
                    yield key, embeddings.astype(np.float32, copy=False)
                    return
            except (OSError, ValueError) as error:
                log.warning("unreadable cache entry %s (%s): encoding again", cached, error)
        yield beam.pvalue.TaggedOutput(MISS, (key, payload))


class WriteCache(beam.DoFn):
    """(key, [rows, D]) -> written to the cache (atomically: temp file, then rename), passed on; logs
    progress, counting `what` (photos, texts)."""

    def __init__(self, cache_dir: str, what: str):
        self.cache_dir, self.what = cache_dir, what

    def setup(self):
        self.written, self.started = 0, time.time()

    def process(self, element):
        key, embeddings = element
        embeddings = np.asarray(embeddings, dtype=np.float32)
        buffer = io.BytesIO()
        np.save(buffer, embeddings, allow_pickle=False)
        final = _cache_path(self.cache_dir, key)
        temporary = f"{final}.tmp-{uuid.uuid4().hex}"
        with FileSystems.create(temporary, compression_type=CompressionTypes.UNCOMPRESSED) as stream:
            stream.write(buffer.getvalue())
        FileSystems.rename([temporary], [final])
        self.written += 1
        if self.written % PROGRESS_EVERY == 0:
            log.info(
                "encoded %d %s (%.1f/s on this worker)",
                self.written,
                self.what,
                self.written / (time.time() - self.started),
            )
        yield key, embeddings


def _attach_text_embeddings(element):
    """CoGroupByKey by text key -> listings with text_embeddings (every distinct text was encoded)."""
    _, grouped = element
    (embeddings,) = list(grouped["embeddings"])
    for listing in grouped["listings"]:
        yield dataclasses.replace(listing, text_embeddings=embeddings)


class EmbedListingTexts(beam.PTransform):
    """Listings with token_ids -> (listings with text_embeddings float32 [num_tokens, D], counts).

    Each distinct text (its token ids and `salt`) is looked up in `cache_dir`; the misses go through
    `encode`, (key, token ids) -> (key, [num_tokens, D]), and into the cache. Counts `texts/distinct`,
    `texts/cache_hits`, `texts/encoded` and `text_dim/{D}` per distinct text.
    """

    def __init__(self, cache_dir: str, salt: str, num_tokens: int, encode: beam.PTransform):
        super().__init__()
        self.cache_dir, self.salt, self.num_tokens, self.encode = cache_dir, salt, num_tokens, encode

    def expand(self, listings):
        salt = self.salt
        keyed = listings | "TextKey" >> beam.Map(lambda listing: (_text_key(listing, salt), listing))
        distinct = (
            keyed
            | "TextTokens" >> beam.Map(lambda kv: (kv[0], kv[1].token_ids))
            | "DistinctTexts" >> beam.combiners.Sample.FixedSizePerKey(1)
            | "OneTokens" >> beam.Map(lambda kv: (kv[0], kv[1][0]))
        )
        looked_up = distinct | "LookupTextCache" >> beam.ParDo(
            LookupCache(self.cache_dir, self.num_tokens)
        ).with_outputs(MISS, main="hits")
        encoded = (
            looked_up[MISS]
            | "EncodeTexts" >> self.encode
            | "WriteTextCache" >> beam.ParDo(WriteCache(self.cache_dir, "texts"))
        )
        embeddings = (looked_up.hits, encoded) | "AllTextEmbeddings" >> beam.Flatten()
        with_texts = (
            {"listings": keyed, "embeddings": embeddings}
            | "JoinTexts" >> beam.CoGroupByKey()
            | "AttachTextEmbeddings" >> beam.FlatMap(_attach_text_embeddings)
        )
        counts = (
            tally(distinct, "texts/distinct", "DistinctTexts"),
            tally(looked_up.hits, "texts/cache_hits", "TextHits"),
            tally(encoded, "texts/encoded", "TextsEncoded"),
            embeddings | "TextDim" >> beam.Map(lambda kv: (f"text_dim/{kv[1].shape[1]}", 1)),
        ) | "Counts" >> beam.Flatten()
        return with_texts, counts


class HashImage(beam.DoFn):
    """Listing -> (cache key, listing with image_key), or the listing Rejected with the photo's reason.

    The photo is opened as `photo_files` allows (inside the dataset folder, a regular file, bounded).
    """

    def __init__(self, dataset_dir: str, salt: str, max_bytes: int = photo_files.MAX_PHOTO_BYTES):
        self.dataset_dir, self.salt, self.max_bytes = dataset_dir, salt, max_bytes

    def process(self, listing: Listing):
        path = FileSystems.join(self.dataset_dir, listing.item.image_path)
        try:
            key = photo_files.hash_photo(self.dataset_dir, path, self.salt, self.max_bytes)
        except RowError as error:
            yield beam.pvalue.TaggedOutput(REJECTED, rejected_listing(listing, error.reason, error.detail))
            return
        except Exception as error:  # FileSystems raises BeamIOError, IOError, ... by backend.
            yield beam.pvalue.TaggedOutput(
                REJECTED, rejected_listing(listing, "missing_image", f"{listing.item.image_path}: {error}")
            )
            return
        yield key, (path, dataclasses.replace(listing, image_key=key))


class DecodeAndSplit(beam.DoFn):
    """(key, image path) -> (key, uint8 [P, h, w, 3] patches), or tagged REJECTED (key, (reason, detail)).

    The photo is read again, as HashImage read it, and must still hash to `key` (else `image_changed`):
    the embedding cached under a key is always that of the bytes the key names.
    """

    def __init__(self, grid: images.Grid, dataset_dir: str, salt: str, max_bytes: int = photo_files.MAX_PHOTO_BYTES):
        self.grid, self.dataset_dir, self.salt, self.max_bytes = grid, dataset_dir, salt, max_bytes

    def process(self, element):
        key, path = element
        try:
            data = photo_files.read_photo(self.dataset_dir, path, key, self.salt, self.max_bytes)
            yield key, images.split_into_patches(images.decode_image(data, self.grid), self.grid)
        except RowError as error:
            yield beam.pvalue.TaggedOutput(REJECTED, (key, (error.reason, error.detail)))
        except Exception as error:  # the file vanished since it was hashed
            yield beam.pvalue.TaggedOutput(REJECTED, (key, ("missing_image", str(error))))


def _attach_embeddings(element):
    """CoGroupByKey by image key -> listings with patch_embeddings, or Rejected with the image's reason."""
    _, grouped = element
    embeddings = list(grouped["embeddings"])
    errors = list(grouped["errors"])
    for _, listing in grouped["listings"]:
        if embeddings:
            yield dataclasses.replace(listing, patch_embeddings=embeddings[0])
        elif errors:
            yield beam.pvalue.TaggedOutput(REJECTED, rejected_listing(listing, *errors[0]))
        else:
            yield beam.pvalue.TaggedOutput(
                REJECTED,
                rejected_listing(
                    listing, "embedding_missing", f"{listing.item.image_path}: the encoder returned nothing"
                ),
            )


class EmbedListingPhotos(beam.PTransform):
    """Listings -> (listings with patch_embeddings float32 [rows * cols, D], rejected, counts).

    Each listing's photo (under `dataset_dir`) is hashed with `salt`; each distinct photo is looked up in
    `cache_dir`, and the misses are decoded, split into `grid` patches, embedded by `encode`, (key, uint8
    [P, h, w, 3]) -> (key, [P, D]), and written to the cache. A listing whose photo cannot be read or
    decoded is rejected with the photo's reason. Counts `images/distinct`, `images/cache_hits`,
    `images/embedded` and `patch_dim/{D}` per distinct photo.
    """

    def __init__(self, dataset_dir: str, cache_dir: str, salt: str, grid: images.Grid, encode: beam.PTransform):
        super().__init__()
        self.dataset_dir, self.cache_dir, self.salt, self.grid, self.encode = (
            dataset_dir,
            cache_dir,
            salt,
            tuple(grid),
            encode,
        )

    def expand(self, listings):
        hashed = listings | "HashImages" >> beam.ParDo(HashImage(self.dataset_dir, self.salt)).with_outputs(
            REJECTED, main="keyed"
        )
        distinct = (
            hashed.keyed
            | "ImagePath" >> beam.Map(lambda kv: (kv[0], kv[1][0]))
            | "DistinctImages" >> beam.CombinePerKey(min)
        )
        looked_up = distinct | "LookupCache" >> beam.ParDo(
            LookupCache(self.cache_dir, self.grid[0] * self.grid[1])
        ).with_outputs(MISS, main="hits")
        decoded = looked_up[MISS] | "DecodeAndSplit" >> beam.ParDo(
            DecodeAndSplit(self.grid, self.dataset_dir, self.salt)
        ).with_outputs(REJECTED, main="patches")
        embedded = (
            decoded.patches
            | "EncodePatches" >> self.encode
            | "WriteCache" >> beam.ParDo(WriteCache(self.cache_dir, "photos"))
        )
        embeddings = (looked_up.hits, embedded) | "AllEmbeddings" >> beam.Flatten()
        attached = (
            {"listings": hashed.keyed, "embeddings": embeddings, "errors": decoded[REJECTED]}
            | "JoinImages" >> beam.CoGroupByKey()
            | "AttachEmbeddings" >> beam.FlatMap(_attach_embeddings).with_outputs(REJECTED, main="listings")
        )
        rejected = (hashed[REJECTED], attached[REJECTED]) | "Rejected" >> beam.Flatten()
        counts = (
            tally(distinct, "images/distinct", "Distinct"),
            tally(looked_up.hits, "images/cache_hits", "Hits"),
            tally(embedded, "images/embedded", "Embedded"),
            embeddings | "PatchDim" >> beam.Map(lambda kv: (f"patch_dim/{kv[1].shape[1]}", 1)),
        ) | "Counts" >> beam.Flatten()
        return attached.listings, rejected, counts
