"""Decoding as the reference does, and refusing bad images before they cost anything."""
import io
import struct
import zlib

import cv2
import numpy as np
import pytest
from PIL import Image

from rtmo_triton.served.image_io import ImageError, decode_bgr, read_header
from rtmo_triton.served.preprocess import preprocess, preprocess_batch

from .golden import IMAGES

LIMIT = 10_000_000


def png_header(width: int, height: int) -> bytes:
    """A PNG that declares ``width``x``height`` and holds no pixel data (a decompression bomb's shape)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")


@pytest.fixture(scope="module")
def image():
    rng = np.random.default_rng(0)
    return cv2.resize(rng.integers(0, 255, (12, 16, 3), np.uint8), (64, 48), interpolation=cv2.INTER_CUBIC)


@pytest.mark.parametrize("ext", [".jpg", ".png", ".bmp", ".webp", ".tiff"])
def test_formats_decode_like_the_reference(image, ext):
    data = cv2.imencode(ext, image)[1].tobytes()
    header = read_header(data)
    assert (header.width, header.height) == (64, 48)
    np.testing.assert_array_equal(decode_bgr(data, LIMIT), cv2.imdecode(np.frombuffer(data, np.uint8), 1))


def test_grayscale_becomes_three_equal_channels(image):
    gray = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    out = decode_bgr(cv2.imencode(".png", gray)[1].tobytes(), LIMIT)
    assert out.shape == (48, 64, 3)
    for c in range(3):
        np.testing.assert_array_equal(out[..., c], gray)


def test_rgba_drops_alpha(image):
    rgba = np.dstack([image, np.full(image.shape[:2], 7, np.uint8)])
    np.testing.assert_array_equal(decode_bgr(cv2.imencode(".png", rgba)[1].tobytes(), LIMIT), image)


def test_sixteen_bit_scales_to_eight(image):
    deep = image.astype(np.uint16) * 257  # 8-bit value v becomes v*257: the top byte is v again
    np.testing.assert_array_equal(decode_bgr(cv2.imencode(".png", deep)[1].tobytes(), LIMIT), image)


@pytest.mark.parametrize(("data", "message"), [
    (b"", "empty image"),
    (b"this is not an image at all", "not a decodable image"),
    (b"GIF89a\x01\x00\x01\x00\x00\x00\x00;", "not a decodable image|unsupported image format GIF"),
])
def test_undecodable_bytes_are_named(data, message):
    with pytest.raises(ImageError, match=message):
        decode_bgr(data, LIMIT)


def test_pixel_limit_is_checked_from_the_header_before_decoding():
    bomb = png_header(100_000, 100_000)  # 10^10 declared pixels in 57 bytes
    expected = r"100000x100000 = 10,000,000,000 pixels exceeds the limit of 10,000,000"
    with pytest.raises(ImageError, match=expected):
        decode_bgr(bomb, LIMIT)


def test_limit_is_configurable(image):
    data = cv2.imencode(".png", image)[1].tobytes()
    with pytest.raises(ImageError, match="exceeds the limit of 3,000 pixels"):
        decode_bgr(data, 3_000)
    assert decode_bgr(data, 64 * 48).shape == (48, 64, 3)


def test_truncated_image_is_refused(image):
    data = cv2.imencode(".png", image)[1].tobytes()
    with pytest.raises(ImageError):
        decode_bgr(data[: len(data) // 2], LIMIT)


def test_batch_error_names_the_row(image):
    good = cv2.imencode(".jpg", image)[1].tobytes()
    with pytest.raises(ImageError, match="^image 1: empty image"):
        preprocess_batch([good, b"", good], 64, LIMIT)


def test_batch_rows_equal_single_images(image):
    a, b = (cv2.imencode(".jpg", x)[1].tobytes() for x in (image, image[:, ::-1]))
    inputs, affines = preprocess_batch([a, b], 64, LIMIT)
    for i, data in enumerate((a, b)):
        single, affine = preprocess(data, 64, LIMIT)
        np.testing.assert_array_equal(inputs[i], single)
        np.testing.assert_array_equal(affines[i], affine)


def jpeg_files():
    return sorted(IMAGES.rglob("*.jpg"))


@pytest.mark.skipif(not jpeg_files(), reason="fixture images not found")
def test_fast_jpeg_path_is_bit_identical_on_real_photos():
    for path in jpeg_files():
        data = path.read_bytes()
        assert read_header(data).plain_jpeg, path.name
        np.testing.assert_array_equal(decode_bgr(data, LIMIT), cv2.imdecode(np.frombuffer(data, np.uint8), 1),
                                      err_msg=path.name)


@pytest.mark.parametrize(("mode", "exif_orientation"), [("RGB", 6), ("CMYK", 1), ("L", 1), ("RGB", 1)])
def test_rotated_and_cmyk_jpegs_decode_as_opencv_does(image, mode, exif_orientation):
    pil = Image.fromarray(image[..., ::-1]).convert(mode)
    exif = Image.Exif()
    exif[0x0112] = exif_orientation
    buf = io.BytesIO()
    pil.save(buf, "JPEG", quality=90, exif=exif.tobytes())
    data = buf.getvalue()
    assert read_header(data).plain_jpeg == (mode in ("RGB", "L") and exif_orientation == 1)
    reference = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if exif_orientation == 6:
        assert reference.shape[:2] == image.shape[1::-1], "OpenCV applies EXIF rotation"
    np.testing.assert_array_equal(decode_bgr(data, LIMIT), reference)
