"""Many images through the `rtmo` ensemble: batching, concurrency, per-image errors.

Triton fails a whole request when one of its images is bad (say, undecodable),
so a failed multi-image request is retried one image per request: only the
bad image ends up with an error, the others still get their people.
"""
from __future__ import annotations

from collections.abc import Sequence

from .. import spec
from .people import People, parse_outputs
from .transport import DEFAULT_TIMEOUT_S, Client, connect, describe_error, is_request_error


def infer_images(client: Client, images: Sequence[bytes], *, model_name: str = spec.ENSEMBLE_NAME,
                 batch_size: int | None = None, concurrency: int = 1) -> list[People]:
    """People for every encoded image, in input order; failed images carry ``error``.

    ``batch_size=None`` checks that the model is ready (raising ServerUnavailable
    or ModelNotReady) and uses its ``max_batch_size``; pass it explicitly to skip
    that round trip. ``concurrency`` bounds the requests in flight.
    """
    if batch_size is None:
        batch_size = client.ready(model_name).max_batch_size
    elif batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, not {batch_size}")
    results: list[People | None] = [None] * len(images)
    todo = []
    for i, image in enumerate(images):
        if len(image) == 0:
            results[i] = People.failure("empty image data (not sent)")
        else:
            todo.append(i)
    requests = [todo[k:k + batch_size] for k in range(0, len(todo), batch_size)]
    retry = _collect(results, requests, _send(client, model_name, images, requests, concurrency))
    singles = [[i] for request in retry for i in request]
    _collect(results, singles, _send(client, model_name, images, singles, concurrency), retry_failed=False)
    return results  # type: ignore[return-value]  # every slot is filled by now


def infer(url: str | None, protocol: str, images: Sequence[bytes], *, model_name: str = spec.ENSEMBLE_NAME,
          concurrency: int = 1, wait_s: float = 0.0, timeout_s: float = DEFAULT_TIMEOUT_S) -> list[People]:
    """Connect, wait up to ``wait_s`` for the model, infer, disconnect: one call for tests and scripts."""
    client = connect(url, protocol, concurrency=concurrency, timeout_s=timeout_s)
    try:
        batch_size = client.ready(model_name, wait_s=wait_s).max_batch_size
        return infer_images(client, images, model_name=model_name, batch_size=batch_size,
                            concurrency=concurrency)
    finally:
        client.close()


def _send(client: Client, model_name: str, images: Sequence[bytes], requests: list[list[int]],
          concurrency: int) -> list:
    payloads = [[images[i] for i in request] for request in requests]
    return client.infer(payloads, model=model_name, concurrency=concurrency)


def _collect(results: list[People | None], requests: list[list[int]], outcomes: list,
             retry_failed: bool = True) -> list[list[int]]:
    """Store each request's people (or its error) by image index; return the requests to retry."""
    retry = []
    for request, outcome in zip(requests, outcomes, strict=True):
        error = outcome.error
        if error is None:
            try:
                people = parse_outputs(outcome.outputs, outcome.latency_ms)
                if len(people) != len(request):
                    raise ValueError(f"response has {len(people)} images, request had {len(request)}")
            except ValueError as exc:
                error = exc
        if error is None:
            for i, p in zip(request, people, strict=True):
                results[i] = p
        elif retry_failed and len(request) > 1 and is_request_error(error):
            retry.append(request)
        else:
            message = describe_error(error)
            for i in request:
                results[i] = People.failure(message, latency_ms=outcome.latency_ms, batch=len(request))
    return retry
