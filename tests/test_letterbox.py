import cv2
import numpy as np
import pytest

from rtmo_triton.served.letterbox import letterbox, letterbox_matrix, opencv_difference
from rtmo_triton.spec import AFFINE_FIELDS, ENGINE_INPUT_DTYPE, PAD_VALUE

from .golden import OUTPUT_FILES, fixture_ids, load_output


@pytest.mark.parametrize("name", fixture_ids())
def test_input_is_bit_exact(name):
    ref = load_output(name)
    size = int(ref["input_size"][0])
    x, box = letterbox(ref["img_bgr"], size)
    assert x.dtype == ENGINE_INPUT_DTYPE and x.shape == ref["input"].shape[1:]
    # the reference's FP32 input holds exactly these 8-bit values: the narrow engine input loses nothing
    np.testing.assert_array_equal(x.astype(np.float32), ref["input"][0])
    # the reference's centre/scale description of the same mapping
    centre, scale = ref["input_center"], ref["input_scale"]
    np.testing.assert_allclose(box.scale, size / scale[0], rtol=1e-6)
    np.testing.assert_allclose(box.offset_x, size / 2 - centre[0] * box.scale, atol=1e-4)
    np.testing.assert_allclose(box.offset_y, size / 2 - centre[1] * box.scale, atol=1e-4)


def test_fixture_set_is_complete():
    assert len(OUTPUT_FILES) >= 8


@pytest.mark.parametrize(("w", "h"), [(640, 480), (480, 640), (457, 331), (100, 1000), (416, 416)])
def test_mapping_is_centred_and_fits(w, h):
    m, box = letterbox_matrix(w, h, 416)
    assert box.scale == pytest.approx(min(416 / w, 416 / h))
    # the image is centred: equal margins on both sides of each axis
    assert box.offset_x == pytest.approx((416 - w * box.scale) / 2, abs=1e-6)
    assert box.offset_y == pytest.approx((416 - h * box.scale) / 2, abs=1e-6)
    np.testing.assert_allclose(m, [[box.scale, 0, box.offset_x], [0, box.scale, box.offset_y]], atol=1e-9)
    vec = box.as_array()
    assert vec.shape == (len(AFFINE_FIELDS),)
    assert dict(zip(AFFINE_FIELDS, vec.tolist()))["input_size"] == 416


def test_tall_image_pads_left_and_right():
    img = np.full((400, 100, 3), 7, np.uint8)
    x, box = letterbox(img, 416)
    assert box.offset_x > 100 and box.offset_y == pytest.approx(0, abs=1e-6)
    assert (x[:, :, :100] == PAD_VALUE).all() and (x[:, :, -100:] == PAD_VALUE).all()
    assert (x[:, 10:-10, 208] == 7).all()


def full_frame_warp(image: np.ndarray, size: int) -> np.ndarray:
    """The reference's form: one warp over the whole square, border included."""
    m, _ = letterbox_matrix(image.shape[1], image.shape[0], size)
    warped = cv2.warpAffine(image, m, (size, size), flags=cv2.INTER_LINEAR,
                            borderMode=cv2.BORDER_CONSTANT, borderValue=(PAD_VALUE,) * 3)
    return warped.transpose(2, 0, 1)


EDGE_SIZES = [(1, 1), (1, 900), (900, 1), (3, 5), (416, 416), (640, 640), (639, 641), (4032, 3024)]


@pytest.mark.parametrize("size", [416, 640])
def test_picture_only_warp_equals_full_frame_warp(size):
    rng = np.random.default_rng(size)
    sizes = EDGE_SIZES + [tuple(int(v) for v in wh) for wh in rng.integers(1, 2200, (120, 2))]
    differ = []
    for w, h in sizes:
        image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        if not np.array_equal(letterbox(image, size)[0], full_frame_warp(image, size)):
            differ.append((w, h))
    assert not differ, f"picture-only warp differs from the full warp at sizes {differ}"


def test_out_row_is_fully_overwritten():
    """A reused batch row must not keep the previous image's pixels in the border."""
    out = np.full((3, 416, 416), 255 - PAD_VALUE, ENGINE_INPUT_DTYPE)
    image = np.random.default_rng(0).integers(0, 256, (100, 400, 3), dtype=np.uint8)
    letterbox(image, 416, out=out)
    np.testing.assert_array_equal(out, full_frame_warp(image, 416))


def test_an_opencv_other_than_the_references_is_named(monkeypatch):
    """Bit-exact inputs hold on OpenCV 4 (this suite runs it); 5.0's bilinear warp rounds differently."""
    assert opencv_difference() is None
    monkeypatch.setattr(cv2, "__version__", "5.0.0")
    said = opencv_difference()
    assert said is not None and "OpenCV 5.0.0" in said and "mmpose" in said
