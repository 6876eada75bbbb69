"""One response per request, whatever happens to the others in the same dynamic batch.

Triton fails every request of a batch when ``execute`` raises, so the Python models never let an
exception out: each request is handled on its own and any error (ours, numpy's, OpenCV's, Pillow's,
simplejpeg's, onnxruntime's) becomes that request's error response, naming the problem.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from .errors import RequestError


def describe(exc: BaseException) -> str:
    """Our own errors speak for themselves; anything else is prefixed with its type."""
    return str(exc) if isinstance(exc, RequestError) else f"{type(exc).__name__}: {exc}"


def respond_each(requests: Sequence[Any], handle: Callable[[Any], list], pb_utils: Any) -> list:
    """``handle(request)`` returns the request's output tensors; an exception becomes its error."""
    responses = []
    for request in requests:
        try:
            responses.append(pb_utils.InferenceResponse(handle(request)))
        except Exception as exc:  # noqa: BLE001 - any failure belongs to this request alone
            # a bad request is the client's to fix (HTTP 400); anything else is ours (500)
            error = pb_utils.TritonError
            code = error.INVALID_ARG if isinstance(exc, RequestError) else error.INTERNAL
            responses.append(pb_utils.InferenceResponse(error=error(describe(exc), code)))
    return responses
