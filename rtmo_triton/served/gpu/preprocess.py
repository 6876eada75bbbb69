"""What the GPU-resident ``rtmo_preprocess`` computes for one dynamic batch of requests.

Every plain JPEG of the batch (RGB or grey, no EXIF rotation: ``image_io.Header.plain_jpeg``), across
all its requests, is decoded in one call of a batched decoder (``jpeg_decoders``); the letterbox then
runs on the GPU (``gpu.letterbox``, bit-equal to OpenCV's). An image the decoder cannot take (PNG,
WebP, TIFF, CMYK or an EXIF-rotated JPEG, a stream the decoder rejects) is decoded by the CPU path
(``image_io.decode_bgr``) for that image alone and uploaded; a bad image fails its own request with the
CPU path's message, never its batch-mates.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from ...spec import ENGINE_INPUT_DTYPE
from ..image_io import ImageError, checked_header, decode_bgr
from .jpeg_decoders import JpegDecoder
from .letterbox import letterbox


@dataclass
class Decoded:
    """One request's result: the letterboxed batch on the stage's device and its affines, or its error."""

    inputs: torch.Tensor | None = None
    affines: np.ndarray | None = None
    error: Exception | None = None


class GpuPreprocess:
    """Encoded images → letterboxed ``spec.ENGINE_INPUT_DTYPE`` rows on ``device``, batched over requests."""

    def __init__(self, *, input_size: int, max_pixels: int, device: torch.device,
                 decoder: JpegDecoder | None) -> None:
        self.input_size, self.max_pixels, self.device, self.decoder = input_size, max_pixels, device, decoder
        self.cpu_decodes = 0
        """Images decoded on the host CPU since start: every one on a CPU device, else the fallbacks."""

    def run(self, requests: Sequence[Sequence[bytes]]) -> list[Decoded]:
        """One ``Decoded`` per request; a request fails at its first bad image, naming the row."""
        headers: dict[tuple[int, int], object] = {}
        failed: dict[int, Exception] = {}
        for r, images in enumerate(requests):
            for i, data in enumerate(images):
                try:
                    headers[r, i] = checked_header(data, self.max_pixels)
                except ImageError as exc:
                    failed[r] = _name_row(exc, i, len(images))
                    break
        gpu_keys = [k for k, h in headers.items() if k[0] not in failed and h.plain_jpeg and self.decoder]
        pictures = self._decode_on_device([requests[r][i] for r, i in gpu_keys])
        decoded = dict(zip(gpu_keys, pictures))
        if self.device.type == "cpu":  # the batched decoder ran on the host too
            self.cpu_decodes += sum(p is not None for p in pictures)
        results = []
        for r, images in enumerate(requests):
            if r in failed:
                results.append(Decoded(error=failed[r]))
                continue
            try:
                results.append(self._letterbox_request(r, images, headers, decoded))
            except Exception as exc:  # noqa: BLE001 - this request's alone
                results.append(Decoded(error=exc))
        if self.device.type == "cuda":  # finished before another process reads the rows by CUDA IPC
            torch.cuda.current_stream(self.device).synchronize()
        return results

    def _decode_on_device(self, encoded: list[bytes]) -> list[torch.Tensor | None]:
        """All of them in one batched call; if that fails, each alone, so one bad stream costs only its
        own image a CPU decode (None here, as for an image the decoder answers None for)."""
        if not encoded:
            return []
        try:
            return list(self.decoder(encoded))
        except Exception:  # noqa: BLE001 - find which ones the decoder refuses
            pass
        alone: list[torch.Tensor | None] = []
        for data in encoded:
            try:
                alone.append(self.decoder([data])[0])
            except Exception:  # noqa: BLE001 - the CPU path decides, with its own error
                alone.append(None)
        return alone

    def _letterbox_request(self, r: int, images: Sequence[bytes], headers: dict, decoded: dict) -> Decoded:
        size = self.input_size
        inputs = torch.empty((len(images), 3, size, size), dtype=getattr(torch, ENGINE_INPUT_DTYPE),
                             device=self.device)
        affines = []
        for i, data in enumerate(images):
            picture = decoded.get((r, i))
            if picture is None:
                picture = self._decode_on_cpu(data, headers[r, i], i, len(images))
            _, box = letterbox(picture, size, out=inputs[i])
            affines.append(box.as_array())
        return Decoded(inputs=inputs, affines=np.stack(affines))

    def _decode_on_cpu(self, data: bytes, header, row: int, rows: int) -> torch.Tensor:
        self.cpu_decodes += 1
        try:
            bgr = decode_bgr(data, self.max_pixels, header)
        except ImageError as exc:
            raise _name_row(exc, row, rows) from None
        return torch.from_numpy(bgr).to(self.device, non_blocking=True)


def _name_row(exc: ImageError, row: int, rows: int) -> ImageError:
    """The CPU path's wording: a multi-image request's error names the image."""
    return ImageError(f"image {row}: {exc}") if rows > 1 else exc
