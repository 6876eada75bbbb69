"""The batched JPEG decoders the GPU-resident preprocess can use (``spec.JPEG_DECODERS``).

Each is a ``JpegDecoder``: plain JPEGs (``image_io.Header.plain_jpeg``) → HxWx3 BGR uint8 tensors on the
stage's device, as the CPU path decodes them; ``None`` in place of an image it refuses (decoded on the
CPU by the stage); raising means the whole call failed, and the stage retries each image alone.

- ``torchvision``: ``decode_jpeg`` with a list on CUDA (nvJPEG's batched decode), on the GPU hosts'
  images already; raises for the batch when one stream is bad.
- ``nvimgcodec``: NVIDIA's nvImageCodec (``nvidia-nvimgcodec-cu13``, with ``nvidia-nvjpeg`` for its GPU
  back ends): hardware, CUDA and hybrid back ends on a GPU, libjpeg-turbo on the CPU (bit-equal to the
  CPU path, so CI serves it); answers ``None`` per bad stream, so its batch-mates need no retry.

On CUDA, ``jpeg_decoder`` drains the stage's stream before each call (``drained``), and a decoder
that cannot decode a small JPEG at start is not used (``DecoderUnavailable``): a GPU that silently
refuses everything would otherwise send every image to the CPU path. Which one serves is measured on
a GPU host (``make gpu-check``'s jpeg section compares them).
"""
from __future__ import annotations

import os
from collections.abc import Callable

import numpy as np
import simplejpeg
import torch

from ... import spec

JpegDecoder = Callable[[list[bytes]], list["torch.Tensor | None"]]


class DecoderUnavailable(RuntimeError):
    """The decoder imports but cannot decode here (e.g. nvJPEG's library missing)."""


def drained(decode: JpegDecoder, device: torch.device) -> JpegDecoder:
    """``decode`` after the work queued on the stage's stream has run. nvJPEG's hardware engine does not
    honour stream order: it has written its outputs into memory that queued kernels were still reading
    (pytorch/vision PR 9606, torchcodec PR 1634), whichever library drives it. The stage's stream is
    idle between batches, so the wait costs nothing; ``make gpu-check``'s corruption test runs the
    decoders with and without it."""
    if device.type != "cuda":
        return decode

    def decode_after_drain(encoded: list[bytes]) -> list[torch.Tensor | None]:
        torch.cuda.current_stream(device).synchronize()
        return decode(encoded)

    return decode_after_drain


def torchvision_rgb(device: torch.device) -> JpegDecoder:
    """torchvision's batched nvJPEG decode as it answers: 3xHxW RGB planes, the tensors nvJPEG wrote."""
    from torchvision.io import ImageReadMode, decode_jpeg

    def decode(encoded: list[bytes]) -> list[torch.Tensor | None]:
        tensors = [torch.frombuffer(bytearray(data), dtype=torch.uint8) for data in encoded]
        return decode_jpeg(tensors, mode=ImageReadMode.RGB, device=device)

    return decode


def torchvision_decoder(device: torch.device) -> JpegDecoder:
    """torchvision's batched nvJPEG decode, in BGR pixels."""
    rgb = torchvision_rgb(device)

    def decode(encoded: list[bytes]) -> list[torch.Tensor | None]:
        return [planes.flip(0).permute(1, 2, 0) for planes in rgb(encoded)]  # RGB planes → BGR pixels

    return decode


def nvimgcodec_decoder(device: torch.device) -> JpegDecoder:
    """nvImageCodec on ``device``: its GPU back ends on CUDA (never its CPU one there, so what the GPU
    refuses is counted as the stage's own host decode), libjpeg-turbo on the CPU."""
    os.environ.setdefault("PYNVIMGCODEC_VERBOSITY", "1")  # errors only: not a warning per refused image
    from nvidia import nvimgcodec

    if device.type == "cuda":
        kinds = (nvimgcodec.BackendKind.HW_GPU_ONLY, nvimgcodec.BackendKind.GPU_ONLY,
                 nvimgcodec.BackendKind.HYBRID_CPU_GPU)
        where = torch.cuda.current_device() if device.index is None else device.index
    else:
        kinds, where = (nvimgcodec.BackendKind.CPU_ONLY,), nvimgcodec.NVIMGCODEC_DEVICE_CPU_ONLY
    decoder = nvimgcodec.Decoder(device_id=where, backends=[nvimgcodec.Backend(k) for k in kinds])
    params = nvimgcodec.DecodeParams(apply_exif_orientation=False, color_spec=nvimgcodec.ColorSpec.SRGB,
                                     sample_format=nvimgcodec.SampleFormat.I_BGR)

    def decode(encoded: list[bytes]) -> list[torch.Tensor | None]:
        streams = [nvimgcodec.CodeStream(data) for data in encoded]
        if device.type == "cuda":  # ordered on the stream the stage's kernels then run on
            images = decoder.decode(streams, params=params,
                                    cuda_stream=torch.cuda.current_stream(device).cuda_stream)
            return [None if image is None else torch.from_dlpack(image) for image in images]
        # a host image's DLPack export asks for CUDA; its array interface does not (the array keeps it)
        return [None if image is None else torch.from_numpy(np.asarray(image))
                for image in decoder.decode(streams, params=params)]

    return decode


DECODERS: dict[str, Callable[[torch.device], JpegDecoder]] = {
    "torchvision": torchvision_decoder, "nvimgcodec": nvimgcodec_decoder}
assert tuple(DECODERS) == spec.JPEG_DECODERS


def probed(name: str, device: torch.device) -> JpegDecoder:
    """The decoder ``name`` on ``device``, once it has decoded a small JPEG; ``DecoderUnavailable``
    otherwise (``ImportError`` where its package is missing)."""
    decode = DECODERS[name](device)
    probe = simplejpeg.encode_jpeg(np.full((16, 16, 3), 128, np.uint8), colorspace="BGR")
    try:
        [image] = decode([probe])
    except Exception as exc:  # noqa: BLE001 - any failure here means: not usable on this host
        raise DecoderUnavailable(f"a 16x16 JPEG failed: {type(exc).__name__}: {exc}") from exc
    if image is None:
        raise DecoderUnavailable("it refused a 16x16 JPEG (for nvimgcodec on a GPU: is nvidia-nvjpeg "
                                 "installed?)")
    return decode


def jpeg_decoder(name: str, device: torch.device) -> tuple[JpegDecoder | None, str]:
    """The decoder ``name`` on ``device`` and what it is; None (with why) where JPEGs go to the CPU path.

    On the CPU, torchvision has nothing to add to the CPU path's libjpeg-turbo; nvImageCodec decodes a
    batch there with its own libjpeg-turbo, which CI serves to test it.
    """
    if name not in DECODERS:
        raise ValueError(f"unknown JPEG decoder {name!r}: choose one of {', '.join(DECODERS)}")
    if device.type != "cuda" and name == "torchvision":
        return None, "JPEG decoded on the CPU (simplejpeg): the stage runs on the CPU"
    try:
        decoder = drained(probed(name, device), device)
    except ImportError as exc:
        return None, f"JPEG decoded on the CPU: {name} is missing ({exc})"
    except DecoderUnavailable as exc:
        return None, f"JPEG decoded on the CPU: {name} cannot decode here ({exc})"
    where = "on the GPU" if device.type == "cuda" else "on the CPU, batched"
    return decoder, f"JPEG decoded {where} by {name}"
