"""The GPU-resident preprocess on CPU torch: the same rows as the CPU preprocess, bad images alone.

The GPU JPEG decoder is replaced by one that decodes with libjpeg-turbo on the CPU, and nvImageCodec
runs its own libjpeg-turbo back end, so the rows must equal the CPU path's bit for bit; what nvJPEG does
to pixels is measured on a GPU host (``make gpu-check``, docs/gpu.md).
"""
import io

import cv2
import numpy as np
import pytest
import simplejpeg
import torch
from PIL import Image

from rtmo_triton import spec
from rtmo_triton.served.gpu import jpeg_decoders
from rtmo_triton.served.gpu import preprocess as preprocess_module
from rtmo_triton.served.gpu.jpeg_decoders import jpeg_decoder
from rtmo_triton.served.gpu.preprocess import GpuPreprocess
from rtmo_triton.served.image_io import ImageError, decode_bgr
from rtmo_triton.served.preprocess import preprocess_batch

from .golden import IMAGES

SIZE, LIMIT = 416, 10_000_000
CPU = torch.device("cpu")


class LibjpegDecoder:
    """Stands in for torchvision's batched GPU decoder: the whole call fails on one bad stream, as a
    batched hardware decode does."""

    def __init__(self, refuse_grey: bool = False):
        self.calls: list[int] = []
        self.refuse_grey = refuse_grey

    def __call__(self, encoded: list[bytes]) -> list[torch.Tensor]:
        self.calls.append(len(encoded))
        out = []
        for data in encoded:
            bgr = simplejpeg.decode_jpeg(data, colorspace="BGR")  # ValueError if corrupt
            if self.refuse_grey and simplejpeg.decode_jpeg_header(data)[2] == "Gray":
                raise RuntimeError("unsupported")
            out.append(torch.from_numpy(bgr))
        return out


class Counted:
    """A decoder that counts its calls' sizes."""

    def __init__(self, decoder):
        self.decoder, self.calls = decoder, []

    def __call__(self, encoded: list[bytes]) -> list[torch.Tensor | None]:
        self.calls.append(len(encoded))
        return self.decoder(encoded)


def nvimgcodec_on_cpu() -> Counted:
    decoder, how = jpeg_decoder("nvimgcodec", CPU)
    assert decoder is not None, how  # a dev dependency: missing is a broken setup, not a skip
    return Counted(decoder)


DECODERS = {"none": lambda: None, "stand-in": LibjpegDecoder, "nvimgcodec": nvimgcodec_on_cpu}


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


@pytest.fixture
def cpu_path(monkeypatch) -> list[bytes]:
    """The images the stage hands to the CPU path's decoder, in order."""
    seen = []

    def counted(data, *args):
        seen.append(data)
        return decode_bgr(data, *args)

    monkeypatch.setattr(preprocess_module, "decode_bgr", counted)
    return seen


def stage(decoder=None):
    return GpuPreprocess(input_size=SIZE, max_pixels=LIMIT, device=CPU, decoder=decoder)


@pytest.mark.parametrize("decoder_name", DECODERS)
def test_rows_equal_the_cpu_preprocess(pictures, decoder_name, cpu_path):
    names = ["coco", "crowd", "jpeg", "grey", "png", "webp", "cmyk"]
    requests = [[pictures[n] for n in names[:3]], [pictures[n] for n in names[3:]]]
    decoder = DECODERS[decoder_name]()
    preprocess = stage(decoder)
    results = preprocess.run(requests)
    for request, result in zip(requests, results):
        assert result.error is None
        want_inputs, want_affines = cpu_rows(request)
        np.testing.assert_array_equal(result.inputs.numpy(), want_inputs)
        np.testing.assert_array_equal(result.affines, want_affines)
    if decoder:  # every plain JPEG of every request in one call; PNG, WebP and CMYK never reach it
        assert decoder.calls == [4]
    assert len(cpu_path) == (3 if decoder else len(names))
    # on a CPU device, what the batched decoder decodes was decoded on the host as well
    assert preprocess.cpu_decodes == len(names)


def test_a_stream_the_decoder_refuses_goes_to_the_cpu_for_that_image_alone(pictures, cpu_path):
    decoder = LibjpegDecoder(refuse_grey=True)
    s = stage(decoder)
    requests = [[pictures["jpeg"], pictures["grey"]], [pictures["coco"]]]
    results = s.run(requests)
    assert decoder.calls == [3, 1, 1, 1]  # the batch, then each alone
    assert cpu_path == [pictures["grey"]]
    for request, result in zip(requests, results):
        np.testing.assert_array_equal(result.inputs.numpy(), cpu_rows(request)[0])


def test_nvimgcodec_answers_none_for_a_bad_stream_and_its_batch_mates_keep_their_decode(pictures):
    decoder = nvimgcodec_on_cpu()
    s = stage(decoder)
    requests = [[pictures["jpeg"], pictures["corrupt"]], [pictures["coco"]]]
    results = s.run(requests)
    assert decoder.calls == [3]  # no retry image by image: the bad one came back None
    with pytest.raises(ImageError) as cpu:
        cpu_rows([pictures["corrupt"]])
    assert str(results[0].error) == f"image 1: {cpu.value}"
    np.testing.assert_array_equal(results[1].inputs.numpy(), cpu_rows(requests[1])[0])


@pytest.mark.parametrize("decoder_name", DECODERS)
def test_bad_images_fail_their_own_request_with_the_cpu_paths_message(pictures, decoder_name):
    requests = [[pictures["jpeg"]], [pictures["jpeg"], pictures["corrupt"]], [b"not an image"], [b""],
                [pictures["coco"]]]
    results = stage(DECODERS[decoder_name]()).run(requests)
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


def test_on_the_cpu_torchvision_leaves_jpegs_to_the_cpu_path():
    decoder, why = jpeg_decoder(spec.DEFAULT_JPEG_DECODER, CPU)
    assert decoder is None and "CPU" in why


def test_on_cuda_the_stream_is_drained_before_each_decode(monkeypatch):
    """nvJPEG's hardware decode ignores stream order (pytorch/vision PR 9606): the wait must come first."""
    events = []

    class Stream:
        def synchronize(self):
            events.append("drain")

    monkeypatch.setattr(torch.cuda, "current_stream", lambda device: Stream())
    decode = jpeg_decoders.drained(lambda encoded: events.append("decode") or [None], torch.device("cuda", 0))
    decode([b"x"])
    decode([b"y"])
    assert events == ["drain", "decode", "drain", "decode"]
    plain = lambda encoded: [None]  # noqa: E731 - on the CPU there is no stream to wait for
    assert jpeg_decoders.drained(plain, CPU) is plain


@pytest.mark.parametrize(("answer", "says"), [
    (lambda encoded: [None], "refused a 16x16 JPEG"),
    (lambda encoded: 1 / 0, "a 16x16 JPEG failed: ZeroDivisionError"),
])
def test_a_decoder_that_cannot_decode_at_start_leaves_jpegs_to_the_cpu_path(monkeypatch, answer, says):
    """nvImageCodec without nvJPEG imports, logs, and answers None for everything: not a decoder to use."""
    monkeypatch.setitem(jpeg_decoders.DECODERS, "nvimgcodec", lambda device: answer)
    decoder, why = jpeg_decoder("nvimgcodec", CPU)
    assert decoder is None and "nvimgcodec cannot decode here" in why and says in why


def test_an_unknown_decoder_is_refused_with_the_choices():
    with pytest.raises(ValueError, match="choose one of torchvision, nvimgcodec"):
        jpeg_decoder("libjpeg", CPU)


def random_jpegs() -> list[bytes]:
    """Sizes from 1x1, every chroma subsampling OpenCV writes, progressive, grey."""
    rng = np.random.default_rng(11)
    out = []
    for sampling in (cv2.IMWRITE_JPEG_SAMPLING_FACTOR_411, cv2.IMWRITE_JPEG_SAMPLING_FACTOR_420,
                     cv2.IMWRITE_JPEG_SAMPLING_FACTOR_422, cv2.IMWRITE_JPEG_SAMPLING_FACTOR_440,
                     cv2.IMWRITE_JPEG_SAMPLING_FACTOR_444):
        for h, w in ((1, 1), (7, 13), (31, 17), (240, 320)):
            image = rng.integers(0, 256, (h, w, 3), np.uint8)
            out.append(cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 90,
                                                    cv2.IMWRITE_JPEG_SAMPLING_FACTOR, sampling])[1].tobytes())
    out.append(cv2.imencode(".jpg", rng.integers(0, 256, (50, 70, 3), np.uint8),
                            [cv2.IMWRITE_JPEG_PROGRESSIVE, 1])[1].tobytes())
    out.append(cv2.imencode(".jpg", rng.integers(0, 256, (50, 70), np.uint8))[1].tobytes())
    return out


def test_nvimgcodec_on_the_cpu_decodes_the_cpu_paths_pixels(pictures):
    images = [pictures[n] for n in ("coco", "crowd", "jpeg", "grey")] + random_jpegs()
    got = nvimgcodec_on_cpu()(images)
    for data, pixels in zip(images, got):
        np.testing.assert_array_equal(pixels.numpy(), decode_bgr(data, LIMIT))
