"""Photo decoding of every awkward kind merchants upload, and the split into patches."""

import io

import numpy as np
import pytest
from awkward_data import awkward_photos, jpeg, photo, png, png_header_only
from PIL import Image

from camenn.preprocessing import images
from camenn.preprocessing.dataset import RowError


def decoded(data: bytes, grid=(2, 2)) -> np.ndarray:
    image = images.decode_image(data, grid)
    assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
    return image


def reason(data: bytes, grid=(2, 2)) -> str:
    with pytest.raises(RowError) as error:
        images.decode_image(data, grid)
    return error.value.reason


def test_rgb_png_round_trips_exactly():
    pixels = photo(0)
    np.testing.assert_array_equal(decoded(png(Image.fromarray(pixels))), pixels)


def test_grayscale_becomes_three_equal_channels():
    image = decoded(png(Image.fromarray(photo(0)[..., 1])))
    np.testing.assert_array_equal(image[..., 0], photo(0)[..., 1])
    np.testing.assert_array_equal(image[..., 0], image[..., 2])


def test_rgba_is_composited_over_white():
    pixels = photo(0)
    alpha = np.zeros(pixels.shape[:2], np.uint8)
    alpha[:, :10] = 255
    image = decoded(png(Image.fromarray(np.dstack([pixels, alpha]), "RGBA")))
    np.testing.assert_array_equal(image[:, :10], pixels[:, :10])
    assert (image[:, 10:] == 255).all()


def test_cmyk_jpeg_keeps_its_colours():
    red = Image.new("RGB", (64, 64), (220, 30, 30))
    image = decoded(jpeg(red.convert("CMYK")))
    assert abs(image[..., 0].mean() - 220) < 12 and image[..., 1].mean() < 45


def test_16_bit_png_is_scaled_not_clipped():
    levels = np.repeat(np.array([[0, 257 * 64, 257 * 128, 65535]], np.uint16), 64, axis=0).repeat(16, axis=1)
    image = decoded(png(Image.fromarray(levels)))
    assert image[0, ::16, 0].tolist() == [0, 64, 128, 255]


def test_palette_with_transparency():
    palette = Image.fromarray(photo(0)).convert("P")
    palette.info["transparency"] = 0
    assert decoded(png(palette)).shape == (80, 96, 3)


def test_exif_orientation_is_applied():
    buffer = io.BytesIO()
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    Image.fromarray(photo(0)).save(buffer, "JPEG", exif=exif)
    assert decoded(buffer.getvalue()).shape == (96, 80, 3)


def test_8000_pixel_jpeg_is_downscaled_while_decoding():
    image = decoded(awkward_photos()["huge"])
    assert max(image.shape[:2]) <= images.MAX_SIDE
    assert abs(image[..., 0].mean() - 200) < 3


def test_8000_pixel_png_is_downscaled():
    big = Image.new("L", (8000, 6000), 90)
    image = decoded(png(big))
    assert image.shape == (768, 1024, 3) and (image == 90).all()


@pytest.mark.parametrize("side", [9000, 20000])  # over our limit; over Pillow's own bomb limit too
def test_decompression_bomb_is_refused_from_its_header(side):
    assert reason(png_header_only(side, side)) == "image_too_large"


def test_tiny_images_are_too_small_for_the_grid():
    assert reason(png(Image.fromarray(photo(0, size=(10, 10))))) == "image_too_small"
    assert decoded(png(Image.fromarray(photo(0, size=(32, 32))))).shape == (32, 32, 3)
    assert reason(png(Image.fromarray(photo(0, size=(32, 32)))), grid=(3, 3)) == "image_too_small"


@pytest.mark.parametrize("encode", [jpeg, png])
def test_truncated_files(encode):
    data = encode(Image.fromarray(np.random.default_rng(0).integers(0, 255, (120, 120, 3), np.uint8)))
    assert reason(data[: len(data) // 2]) == "truncated_image"


@pytest.mark.parametrize("data", [b"", b"not an image at all", b"\xff\xd8\xff\xe0" + b"\x00" * 40])
def test_corrupt_bytes(data):
    assert reason(data) in ("corrupt_image", "truncated_image")
    if not data.startswith(b"\xff\xd8"):
        assert reason(data) == "corrupt_image"


def test_patches_are_equal_and_in_reading_order():
    image = np.zeros((65, 91, 3), np.uint8)
    for r in range(2):
        for c in range(3):
            image[r * 32 : (r + 1) * 32, c * 30 : (c + 1) * 30] = 10 * (3 * r + c) + 1
    patches = images.split_into_patches(image, (2, 3))
    assert patches.shape == (6, 32, 30, 3)
    assert [int(p[0, 0, 0]) for p in patches] == [1, 11, 21, 31, 41, 51]
    assert all((p == p[0, 0]).all() for p in patches)


def test_grid_parsing():
    assert images.parse_grid("2x2") == (2, 2) and images.parse_grid("3X1") == (3, 1)
    for bad in ("2", "0x2", "axb", "2x2x2"):
        with pytest.raises(ValueError):
            images.parse_grid(bad)
