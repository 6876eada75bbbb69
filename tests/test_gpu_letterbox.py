"""The PyTorch letterbox (CPU torch here) against OpenCV and the CPU letterbox: bit for bit."""
import cv2
import numpy as np
import pytest
import torch

from rtmo_triton.served import letterbox as cpu
from rtmo_triton.served.gpu.letterbox import letterbox, warp_affine_linear
from rtmo_triton.spec import ENGINE_INPUT_DTYPE, PAD_VALUE

from .golden import fixture_ids, load_output


def opencv_warp(image: np.ndarray, matrix: np.ndarray, width: int, height: int, border: int) -> np.ndarray:
    warped = cv2.warpAffine(image, matrix, (width, height), flags=cv2.INTER_LINEAR,
                            borderMode=cv2.BORDER_CONSTANT, borderValue=(border,) * 3)
    return warped.reshape(height, width, image.shape[2])  # OpenCV drops a single channel's axis


def assert_warps_equal(image: np.ndarray, matrix: np.ndarray, width: int, height: int, border: int):
    got = warp_affine_linear(torch.from_numpy(image), matrix, width=width, height=height, border=border)
    assert got.dtype == torch.uint8 and tuple(got.shape) == (height, width, image.shape[2])
    want = opencv_warp(image, matrix, width, height, border)
    differ = got.numpy() != want
    assert not differ.any(), (f"{differ.sum()} of {differ.size} values differ (by up to "
                              f"{np.abs(got.numpy().astype(int) - want).max()}) for source {image.shape}, "
                              f"output {width}x{height}, border {border}, matrix {matrix.tolist()}")


def random_affine(rng: np.random.Generator, src_w: int, src_h: int, dst_w: int, dst_h: int) -> np.ndarray:
    """A forward map of one of the kinds the warp must survive, from general to the letterbox's."""
    kind = rng.integers(5)
    scale = np.exp(rng.uniform(-3, 2.5))  # ~0.05 (strong downscale) .. ~12 (strong upscale)
    if kind == 0:    # axis-aligned resize, fractional offset (the letterbox's form)
        a = np.diag(scale * np.exp(rng.uniform(-0.3, 0.3, 2)))
    elif kind == 1:  # rotation, any angle
        t = rng.uniform(-np.pi, np.pi)
        a = scale * np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]])
    elif kind == 2:  # general: shear, anisotropy, reflection
        a = scale * rng.uniform(-1, 1, (2, 2))
    elif kind == 3:  # dyadic, the inverse's a10 or a00 an odd multiple of 2**-11: ties in the per-column
        p, q = 2.0 ** rng.integers(-2, 3, 2) * rng.choice([-1, 1], 2)  # fixed-point terms (half to even)
        tie = (2 * int(rng.integers(-2048, 2048)) + 1) / 2048
        a = np.array([[p, 0], [-tie * p * q, q]] if rng.integers(2) else [[0, p], [q, -tie * p * q]])
    else:            # pure translation
        a = np.eye(2)
    # the source's centre lands anywhere from well inside to entirely off the output
    target = rng.uniform(-1.0, 2.0, 2) * (dst_w, dst_h)
    offset = target - a @ ((src_w - 1) / 2, (src_h - 1) / 2)
    if kind == 3:
        offset = np.round(offset * 4096) / 4096
    return np.hstack([a, offset[:, None]])


SOURCE_SIZES = [(1, 1), (3, 5), (5, 3), (1, 7), (8, 1), (17, 13), (31, 64), (97, 61)]
"""(w, h): single pixels and lines, odd and even sizes."""


@pytest.mark.parametrize("seed", range(8))
def test_warp_equals_opencv_on_random_affines(seed):
    """Enough pixels per seed that an off-by-one in round_delta, a shift or the weights' rounding
    moves some value (ties of the half-to-even rounding: the next test)."""
    rng = np.random.default_rng(seed)
    for w, h in SOURCE_SIZES:
        for channels in (1, 3):
            image = rng.integers(0, 256, (h, w, channels), dtype=np.uint8)
            dst_w, dst_h = (int(v) for v in rng.integers(1, 90, 2))
            border = int(rng.choice([0, PAD_VALUE, 255]))
            assert_warps_equal(image, random_affine(rng, w, h, dst_w, dst_h), dst_w, dst_h, border)


@pytest.mark.parametrize("swap_axes", [False, True])
@pytest.mark.parametrize("tie", [1 / 2048, -3 / 2048, 1 + 5 / 2048])
def test_warp_rounds_fixed_point_ties_half_to_even(tie, swap_axes):
    """An inverse entry that is an odd multiple of 2**-11 puts every odd column's fixed-point term
    exactly on .5, which cvRound rounds to even: rounding half up moves some columns' phases."""
    a = [[0, 1], [1, -tie]] if swap_axes else [[1, 0], [-tie, 1]]  # inverse's a00, resp. a10 = tie
    rng = np.random.default_rng(7)
    image = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    for offset in np.round(rng.uniform(0, 2, (3, 2, 1)) * 4096) / 4096:
        assert_warps_equal(image, np.hstack([a, offset]), 60, 60, PAD_VALUE)


@pytest.mark.parametrize(("name", "matrix"), [
    ("identity", [[1, 0, 0], [0, 1, 0]]),
    ("half-pixel shift", [[1, 0, 0.5], [0, 1, -0.5]]),
    ("half-phase shift", [[1, 0, 1 / 64], [0, 1, 3 / 64]]),
    ("partly left and above", [[1, 0, -20.3], [0, 1, -15.7]]),
    ("fully right", [[1, 0, 500], [0, 1, 0]]),
    ("fully above", [[1, 0, 0], [0, 1, -500]]),
    ("downscale", [[0.13, 0, 2.2], [0, 0.13, 1.1]]),
    ("upscale", [[7.3, 0, -3.0], [0, 6.1, 0.4]]),
    ("rotate 90", [[0, -1, 40], [1, 0, 0]]),
    ("rotate 30 and shear", [[0.866, -0.2, 10], [0.5, 0.866, -5]]),
    ("mirror", [[-1, 0, 40], [0, -1, 30]]),
    ("singular", [[1, 2, 3], [2, 4, 6]]),  # OpenCV maps every pixel to the source's (0, 0)
])
@pytest.mark.parametrize("border", [0, PAD_VALUE, 255])
def test_warp_equals_opencv_on_named_affines(name, matrix, border):
    rng = np.random.default_rng(len(name))
    for w, h in [(1, 1), (3, 5), (41, 29)]:
        image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        assert_warps_equal(image, np.array(matrix, np.float64), 45, 37, border)


def test_warp_rejects_what_opencv_would_not_take_as_uint8():
    image = torch.zeros((4, 4, 3), dtype=torch.uint8)
    with pytest.raises(ValueError, match="border"):
        warp_affine_linear(image, np.eye(2, 3), width=4, height=4, border=256)
    with pytest.raises(ValueError, match="uint8"):
        warp_affine_linear(image.float(), np.eye(2, 3), width=4, height=4, border=0)


def assert_letterbox_equal(image: np.ndarray, size: int):
    want, want_box = cpu.letterbox(image, size)
    got, box = letterbox(torch.from_numpy(image), size)
    assert box == want_box
    assert got.dtype == getattr(torch, ENGINE_INPUT_DTYPE) and tuple(got.shape) == want.shape
    differ = got.numpy() != want
    assert not differ.any(), f"{differ.sum()} values differ for a {image.shape[1]}x{image.shape[0]} image"
    return got


@pytest.mark.parametrize("name", fixture_ids())
def test_letterbox_equals_cpu_and_reference_on_fixtures(name):
    ref = load_output(name)
    got = assert_letterbox_equal(ref["img_bgr"], int(ref["input_size"][0]))
    np.testing.assert_array_equal(got.numpy().astype(np.float32), ref["input"][0])


EDGE_SIZES = [(1, 1), (1, 900), (900, 1), (3, 5), (416, 416), (640, 640), (639, 641), (333, 1001)]


@pytest.mark.parametrize("size", [416, 640])
def test_letterbox_equals_cpu_on_edge_and_random_sizes(size):
    rng = np.random.default_rng(size)
    sizes = EDGE_SIZES + [tuple(int(v) for v in wh) for wh in rng.integers(1, 1500, (6, 2))]
    if size == 640:
        sizes.append((4032, 3024))  # a phone photo, once
    for w, h in sizes:
        assert_letterbox_equal(rng.integers(0, 256, (h, w, 3), dtype=np.uint8), size)


def test_letterbox_fills_a_batch_row_in_place():
    """A reused batch row must be fully overwritten, and its neighbours left alone."""
    size = 416
    batch = torch.full((3, 3, size, size), 255 - PAD_VALUE, dtype=getattr(torch, ENGINE_INPUT_DTYPE))
    image = np.random.default_rng(0).integers(0, 256, (100, 400, 3), dtype=np.uint8)
    got, box = letterbox(torch.from_numpy(image), size, out=batch[1])
    assert got.data_ptr() == batch[1].data_ptr()
    want, want_box = cpu.letterbox(image, size)
    assert box == want_box
    np.testing.assert_array_equal(batch[1].numpy(), want)
    assert (batch[0] == 255 - PAD_VALUE).all() and (batch[2] == 255 - PAD_VALUE).all()
    with pytest.raises(ValueError, match="out must be"):
        letterbox(torch.from_numpy(image), size, out=batch[1, :, :-1])
