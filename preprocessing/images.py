"""Listing photos: robust decoding to uint8 RGB, and the split into equal patches (one image token each).

Merchants upload what their phones and tools produce. `decode_image` turns every kind it can into
uint8 RGB [H, W, 3] and names a quarantine reason for the rest:

- grayscale, palette, CMYK -> RGB; RGBA / LA -> composited over white (transparent pixels carry no
  colour of their own); 16-bit -> scaled to 8 bits (Pillow would clip, not scale); EXIF orientation applied.
- more than MAX_PIXELS (8192 x 8192) -> `image_too_large`, judged from the header before any pixel is
  decoded (a decompression-bomb guard). Anything smaller is downscaled so its longest side is at most
  MAX_SIDE: JPEGs through `draft` (the decoder's DCT scaling, so an 8000 x 8000 photo never exists at
  full size in memory), others after decoding. The encoders resize each patch to their own input
  (224-299 px), so MAX_SIDE loses nothing for a 2x2 grid.
- patches under MIN_PATCH_SIDE px on a side -> `image_too_small` (e.g. a 10 x 10 thumbnail): upscaling
  would invent detail, and the merchant should be told to upload a real photo.
- unreadable bytes -> `corrupt_image`; a file that ends early -> `truncated_image` (never padded with grey).
"""

import io
from typing import Tuple

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from camenn.preprocessing.dataset import RowError
from camenn.preprocessing.defaults import GRID as DEFAULT_GRID

MAX_PIXELS = 8192 * 8192
MAX_SIDE = 1024
MIN_PATCH_SIDE = 16

Grid = Tuple[int, int]


def parse_grid(text: str) -> Grid:
    """ "ROWSxCOLS" (e.g. "2x2", "3x2") -> (rows, cols)."""
    try:
        rows, cols = (int(part) for part in text.lower().split("x"))
    except ValueError:
        raise ValueError(f"grid {text!r} is not ROWSxCOLS, e.g. 2x2") from None
    if rows < 1 or cols < 1:
        raise ValueError(f"grid {text!r} needs at least one row and one column")
    return rows, cols


def format_grid(grid: Grid) -> str:
    return f"{grid[0]}x{grid[1]}"


def decode_image(data: bytes, grid: Grid = DEFAULT_GRID) -> np.ndarray:
    """Decodes photo bytes to uint8 RGB [H, W, 3] with H, W <= MAX_SIDE, or raises RowError with the reason.

    Args:
        data: the file's bytes (any format Pillow reads).
        grid: (rows, cols) the image will be split into; each patch must keep MIN_PATCH_SIDE px a side.

    Example:
    >>> import io; from PIL import Image
    >>> buffer = io.BytesIO(); Image.new("CMYK", (64, 48)).save(buffer, "JPEG")
    >>> decode_image(buffer.getvalue()).shape
    (48, 64, 3)
    """
    try:
        image = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as error:
        raise RowError("image_too_large", str(error)) from None
    except UnidentifiedImageError:
        raise RowError("corrupt_image", "not an image format Pillow reads") from None
    except (OSError, ValueError, SyntaxError) as error:
        raise RowError("corrupt_image", str(error) or type(error).__name__) from None
    width, height = image.size
    if width * height > MAX_PIXELS:
        raise RowError("image_too_large", f"{width}x{height} exceeds {MAX_PIXELS} pixels")
    try:
        if image.format == "JPEG":
            image.draft(image.mode, (MAX_SIDE, MAX_SIDE))
        image.load()
        image = _to_rgb(ImageOps.exif_transpose(image))
    except OSError as error:
        reason = "truncated_image" if "truncated" in str(error).lower() else "corrupt_image"
        raise RowError(reason, str(error)) from None
    except (ValueError, SyntaxError, Image.DecompressionBombError) as error:
        raise RowError("corrupt_image", str(error) or type(error).__name__) from None
    if max(image.size) > MAX_SIDE:
        image.thumbnail((MAX_SIDE, MAX_SIDE), Image.Resampling.BICUBIC)
    width, height = image.size
    rows, cols = grid
    if height // rows < MIN_PATCH_SIDE or width // cols < MIN_PATCH_SIDE:
        raise RowError(
            "image_too_small", f"{width}x{height} gives patches under {MIN_PATCH_SIDE} px for grid {format_grid(grid)}"
        )
    return np.asarray(image, dtype=np.uint8)


def _to_rgb(image: Image.Image) -> Image.Image:
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        # 16-bit (and 32-bit) grayscale: scale the 16-bit range to 8 bits.
        values = np.asarray(image, dtype=np.float64)
        image = Image.fromarray(np.clip(values / 257.0, 0, 255).round().astype(np.uint8), "L")
    if image.mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    if image.mode in ("RGBA", "LA", "PA", "RGBa"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, rgba)
    return image.convert("RGB") if image.mode != "RGB" else image


def split_into_patches(image: np.ndarray, grid: Grid = DEFAULT_GRID) -> np.ndarray:
    """Splits [H, W, 3] into rows*cols equal patches [P, H // rows, W // cols, 3] in reading order.

    Patch (r, c) is image[r*h:(r+1)*h, c*w:(c+1)*w] with h = H // rows, w = W // cols; the remainder
    (under `rows` pixels at the bottom, under `cols` at the right) is dropped so all patches are equal.
    `camenn.model.patch_embedding.PatchEmbedding` splits the same way.

    Example:
    >>> import numpy as np
    >>> split_into_patches(np.zeros((65, 64, 3), np.uint8), (2, 2)).shape
    (4, 32, 32, 3)
    """
    rows, cols = grid
    height, width = image.shape[0] // rows, image.shape[1] // cols
    if height == 0 or width == 0:
        raise ValueError(f"a {image.shape[1]}x{image.shape[0]} image cannot be split into {format_grid(grid)}")
    cropped = image[: rows * height, : cols * width]
    patches = cropped.reshape(rows, height, cols, width, image.shape[2]).transpose(0, 2, 1, 3, 4)
    return np.ascontiguousarray(patches.reshape(rows * cols, height, width, image.shape[2]))
