"""The request sender of ``rtmo-video``: one frame in, JPEG-encoded, one request out, a ``Reply``
back; safe to call from many threads, and it never raises (a frame fails alone)."""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from .. import spec
from ..people import People
from .people import parse_outputs
from .transport import (
    DEFAULT_TIMEOUT_S,
    connect,
    describe_error,
    is_busy,
    is_request_error,
)

DEFAULT_JPEG_QUALITY = 90


@dataclass(frozen=True)
class Reply:
    people: People
    """latency_ms covers the JPEG encoding and the request's round trip."""
    fatal: bool = False
    """True when the server, not this frame, is the problem: no later frame can succeed."""


class FrameSender:
    """Encodes a frame and sends it as one request; safe to call from many threads at once.

    The gRPC client is shared (it is thread-safe); the HTTP client is not, so
    each thread gets its own.
    """

    def __init__(self, url: str, protocol: str, *, model: str = spec.ENSEMBLE_NAME,
                 timeout_s: float = DEFAULT_TIMEOUT_S, jpeg_quality: int = DEFAULT_JPEG_QUALITY) -> None:
        self.url, self.protocol, self.model = url, protocol, model
        self.timeout_s = timeout_s
        self.jpeg_quality = jpeg_quality
        self._local = threading.local()
        self._clients: list[Any] = []
        self._lock = threading.Lock()
        self._shared = connect(url, protocol, timeout_s=timeout_s) if protocol == "grpc" else None

    def client(self) -> Any:
        if self._shared is not None:
            return self._shared
        client = getattr(self._local, "client", None)
        if client is None:
            client = self._local.client = connect(self.url, self.protocol, timeout_s=self.timeout_s)
            with self._lock:
                self._clients.append(client)
        return client

    def encode(self, image: np.ndarray) -> bytes:
        ok, jpeg = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, self.jpeg_quality])
        if not ok:
            raise ValueError("JPEG encoding failed")
        return jpeg.tobytes()

    def __call__(self, image: np.ndarray | None, data: bytes | None = None) -> Reply:
        """Never raises: a failure comes back as a Reply whose people carry the error."""
        start = time.perf_counter()
        try:
            payload = data if data is not None else self.encode(image)
        except Exception as exc:  # a frame OpenCV cannot encode fails alone
            return Reply(People.failure(f"cannot encode frame: {describe_error(exc)}"))
        try:
            [outcome] = self.client().infer([[payload]], model=self.model)
        except Exception as exc:  # e.g. the HTTP client cannot even be created
            return Reply(People.failure(describe_error(exc)), fatal=True)
        latency_ms = (time.perf_counter() - start) * 1e3
        if outcome.error is not None:
            answered = is_request_error(outcome.error) or is_busy(outcome.error)  # this frame fails alone
            return Reply(People.failure(describe_error(outcome.error), latency_ms=latency_ms),
                         fatal=not answered)
        try:
            [people] = parse_outputs(outcome.outputs, latency_ms)
        except ValueError as exc:
            return Reply(People.failure(str(exc), latency_ms=latency_ms))
        return Reply(people)

    def close(self) -> None:
        for client in [*self._clients, *([self._shared] if self._shared is not None else [])]:
            try:
                client.close()
            except Exception:  # closing is best effort; the process is ending anyway
                pass
