"""The GPU-resident preprocess on CPU torch: the same rows as the CPU preprocess, bad images alone.

The GPU JPEG decoder is replaced by one that decodes with libjpeg-turbo on the CPU, so the rows must
equal the CPU path's bit for bit; what nvJPEG does to pixels is measured on a GPU host
(``make gpu-check``, docs/gpu.md).
"""
import io

import cv2
import numpy as np
import pytest
import simplejpeg
import torch
from PIL import Image

from rtmo_triton.served.gpu.preprocess import GpuPreprocess, default_decoder
from rtmo_triton.served.image_io import ImageError
from rtmo_triton.served.preprocess import preprocess_batch

from .golden import IMAGES

SIZE, LIMIT = 416, 10_000_000
CPU = torch.device("cpu")


class LibjpegDecoder:
    """Stands in for the batched GPU decoder: RGB planes, and the whole call fails on one bad stream,
    as a batched hardware decode does."""

    def __init__(self, refuse_grey: bool = False):
        self.calls: list[int] = []
        self.refuse_grey = refuse_grey

    def __call__(self, encoded: list[torch.Tensor]) -> list[torch.Tensor]:
        self.calls.append(len(encoded))
        out = []
        for tensor in encoded:
            rgb = simplejpeg.decode_jpeg(tensor.numpy().tobytes(), colorspace="RGB")  # ValueError if corrupt
            if self.refuse_grey and simplejpeg.decode_jpeg_header(tensor.numpy().tobytes())[2] == "Gray":
                raise RuntimeError("unsupported")
            out.append(torch.from_numpy(rgb).permute(2, 0, 1))
        return out


def jpeg(path) -> bytes:
    return path.read_bytes()


def encoded(image: np.ndarray, ext: str) -> bytes:
    return cv2.imencode(ext, image)[1].tobytes()


def cmyk_jpeg() -> bytes:
    buf = io.BytesIO()
    Image.new("CMYK", (40, 30), (10, 200, 30, 5)).save(buf, "JPEG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def pictures():
    rng = np.random.default_rng(3)
    colour = cv2.resize(rng.integers(0, 255, (9, 13, 3), np.uint8), (130, 90), interpolation=cv2.INTER_CUBIC)
    grey = cv2.cvtColor(colour, cv2.COLOR_BGR2GRAY)
    return {
        "coco": jpeg(IMAGES / "coco" / "000000040083.jpg"),
        "crowd": jpeg(IMAGES / "crowdpose" / "103319.jpg"),
        "jpeg": encoded(colour, ".jpg"),
        "grey": encoded(grey, ".jpg"),
        "png": (IMAGES / "synth_457x331.png").read_bytes(),
        "webp": encoded(colour, ".webp"),
        "cmyk": cmyk_jpeg(),
        "corrupt": encoded(colour, ".jpg")[:-300] + b"\x00" * 40,
    }


def cpu_rows(images):
    return preprocess_batch(images, SIZE, LIMIT)


def stage(decoder=None):
    return GpuPreprocess(input_size=SIZE, max_pixels=LIMIT, device=CPU, decoder=decoder)


@pytest.mark.parametrize("with_decoder", [True, False])
def test_rows_equal_the_cpu_preprocess(pictures, with_decoder):
    names = ["coco", "crowd", "jpeg", "grey", "png", "webp", "cmyk"]
    requests = [[pictures[n] for n in names[:3]], [pictures[n] for n in names[3:]]]
    decoder = LibjpegDecoder() if with_decoder else None
    preprocess = stage(decoder)
    results = preprocess.run(requests)
    for request, result in zip(requests, results):
        assert result.error is None
        want_inputs, want_affines = cpu_rows(request)
        np.testing.assert_array_equal(result.inputs.numpy(), want_inputs)
        np.testing.assert_array_equal(result.affines, want_affines)
    if decoder:  # every plain JPEG of every request in one call; PNG, WebP and CMYK never reach it
        assert decoder.calls == [4]
    assert preprocess.cpu_decodes == (3 if decoder else len(names))


def test_a_stream_the_decoder_refuses_goes_to_the_cpu_for_that_image_alone(pictures):
    decoder = LibjpegDecoder(refuse_grey=True)
    s = stage(decoder)
    requests = [[pictures["jpeg"], pictures["grey"]], [pictures["coco"]]]
    results = s.run(requests)
    assert decoder.calls == [3, 1, 1, 1]  # the batch, then each alone
    assert s.cpu_decodes == 1
    for request, result in zip(requests, results):
        np.testing.assert_array_equal(result.inputs.numpy(), cpu_rows(request)[0])


def test_bad_images_fail_their_own_request_with_the_cpu_paths_message(pictures):
    requests = [[pictures["jpeg"]], [pictures["jpeg"], pictures["corrupt"]], [b"not an image"], [b""],
                [pictures["coco"]]]
    results = stage(LibjpegDecoder()).run(requests)
    assert [r.error is None for r in results] == [True, False, False, False, True]
    for request, result in zip(requests, results):
        if result.error is None:
            np.testing.assert_array_equal(result.inputs.numpy(), cpu_rows(request)[0])
            continue
        assert isinstance(result.error, ImageError)
        with pytest.raises(ImageError) as cpu:
            cpu_rows(request)
        assert str(result.error) == str(cpu.value)
    assert str(results[1].error).startswith("image 1: ")


def test_an_oversized_image_is_refused_before_any_decoder_sees_it(pictures):
    decoder = LibjpegDecoder()
    s = GpuPreprocess(input_size=SIZE, max_pixels=100 * 100, device=CPU, decoder=decoder)
    (result,) = s.run([[pictures["coco"]]])
    assert "exceeds the limit" in str(result.error)
    assert decoder.calls == []


def test_on_the_cpu_no_gpu_decoder_is_chosen():
    decoder, why = default_decoder(CPU)
    assert decoder is None and "CPU" in why
