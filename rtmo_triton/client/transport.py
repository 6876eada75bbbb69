"""One code path over ``tritonclient.http`` and ``tritonclient.grpc``.

Both modules share ``InferInput``/``InferRequestedOutput``/``infer``; they differ
in how the model config comes back and in what may run concurrently. The gRPC
client is thread-safe, so requests go through a thread pool. The HTTP client
is not, but its connection pool is greenlet-safe (its own ``async_infer`` runs
``_post`` in greenlets), so concurrent HTTP requests run as greenlets in the
calling thread; that keeps per-request latencies exact, which
``async_infer().get_result()`` in submission order would not.
"""
from __future__ import annotations

import random
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from types import ModuleType
from typing import Any, NamedTuple

import numpy as np

from .. import spec

PROTOCOLS = ("http", "grpc")
DEFAULT_PORTS = {name: spec.PORTS[name] for name in ("http", "grpc")}
DEFAULT_TIMEOUT_S = 60.0

# gRPC statuses that say the server, not this request, is the problem
_TRANSPORT_STATUSES = frozenset({"StatusCode.UNAVAILABLE", "StatusCode.DEADLINE_EXCEEDED",
                                 "StatusCode.CANCELLED"})
DEFAULT_RETRIES = 4
"""Attempts after the first for a busy or briefly unavailable server (``is_retryable``)."""
BACKOFF_S, BACKOFF_CAP_S = 0.1, 2.0
"""Retry n waits up to BACKOFF_S * 2**n seconds (full jitter), never more than the cap."""
_RETRYABLE_STATUSES = frozenset({"StatusCode.UNAVAILABLE", "StatusCode.RESOURCE_EXHAUSTED",
                                 "429", "502", "503", "504"})
QUEUE_FULL = "Exceeds maximum queue size"
"""What Triton answers when a model's queue policy refuses a request: the server is busy, not gone."""
_RETRYABLE_MESSAGES = (QUEUE_FULL, "is not healthy", "Connection refused",
                       "Connection reset", "ConnectionClosed", "Broken pipe")
"""Busy (Triton's queue policy refused the request), a Python stub that died and is being replaced,
a replica restarting or dying behind a balancer: all pass, and inference is a pure function of the
image, so the same request is worth sending again."""


class ServerUnavailable(RuntimeError):
    """The server cannot be reached or is not live."""


class ModelNotReady(RuntimeError):
    """The server is up but the model is missing, unloaded or still loading."""


class ModelInfo(NamedTuple):
    name: str
    max_batch_size: int


class Outcome(NamedTuple):
    """What one request produced: outputs by name, or the exception that stopped it."""

    outputs: dict[str, np.ndarray | None] | None
    error: BaseException | None
    latency_ms: float


def client_module(protocol: str) -> ModuleType:
    """``tritonclient.http`` or ``tritonclient.grpc``, imported only when used."""
    if protocol == "http":
        import tritonclient.http as module
    elif protocol == "grpc":
        import tritonclient.grpc as module
    else:
        raise ValueError(f"protocol must be one of {PROTOCOLS}, not {protocol!r}")
    return module


def normalize_url(url: str | None, protocol: str) -> str:
    """``host:port`` as tritonclient wants it: scheme stripped, protocol's default port added.
    ``ValueError`` for an address without a host or with a port outside 1-65535 (tritonclient would
    fail later, less clearly)."""
    client_module(protocol)  # validates protocol
    url = (url or "127.0.0.1").strip()
    for scheme in ("http://", "grpc://"):
        if url.startswith(scheme):
            url = url[len(scheme):]
    url = url.rstrip("/")
    host, colon, port = url.rpartition(":")
    if not colon or "]" in port:  # no port (an IPv6 literal's last colon is inside brackets)
        host, port = url, str(DEFAULT_PORTS[protocol])
    if not host.strip("[]") or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"not a server address: {url!r} (host[:port], port 1-65535)")
    return f"{host}:{port}"


def connect(url: str | None = None, protocol: str = "http", *, concurrency: int = 1,
            timeout_s: float = DEFAULT_TIMEOUT_S, retries: int = DEFAULT_RETRIES) -> Client:
    """A ``Client`` for ``url`` (default 127.0.0.1 on the protocol's default port).

    ``concurrency`` sizes the HTTP connection pool; pass the same value to ``Client.infer`` or
    concurrent HTTP requests queue on fewer connections.
    """
    module = client_module(protocol)
    url = normalize_url(url, protocol)
    if protocol == "http":
        raw = module.InferenceServerClient(url, concurrency=max(1, concurrency),
                                           connection_timeout=timeout_s, network_timeout=timeout_s)
    else:
        raw = GrpcDeadline(module.InferenceServerClient(url), timeout_s)
    return Client(raw, protocol, retries=retries)


class Client:
    """One tritonclient connection that knows its protocol and retries (its timeout is the raw
    client's: set when an HTTP client is made, per call by ``GrpcDeadline`` for gRPC): the calls every
    tool makes (readiness, config, inference) take it alone, and resolve nothing per call."""

    def __init__(self, raw: Any, protocol: str, *, retries: int = DEFAULT_RETRIES) -> None:
        self.raw, self.protocol, self.module = raw, protocol, client_module(protocol)
        self.retries = retries

    def config(self, model: str = spec.ENSEMBLE_NAME) -> dict:
        """The model's config as a dict, whichever protocol fetched it."""
        if self.protocol == "grpc":
            return self.raw.get_model_config(model, as_json=True).get("config", {})
        return self.raw.get_model_config(model)

    def ready(self, model: str = spec.ENSEMBLE_NAME, *, wait_s: float = 0.0) -> ModelInfo:
        """Fail with a clear message unless the server is live and the model ready.

        Polls for up to ``wait_s`` seconds, so a test can call it right after starting a server.
        """
        deadline = time.monotonic() + wait_s
        while (problem := self._readiness_problem(model)) is not None:
            if time.monotonic() >= deadline:
                raise problem
            time.sleep(0.2)
        max_batch = int(self.config(model).get("max_batch_size", 0))
        if max_batch < 1:
            raise ModelNotReady(f"model {model!r} has no batch dimension (max_batch_size 0); the rtmo "
                                "ensemble's contract takes a batch of encoded images")
        return ModelInfo(model, max_batch)

    def infer(self, requests: Sequence[Sequence[bytes]], *, model: str = spec.ENSEMBLE_NAME,
              concurrency: int = 1, retries: int | None = None) -> list[Outcome]:
        """Send every request (a list of encoded images), at most ``concurrency`` in flight.

        Never raises for a failed request: its exception comes back in its Outcome, in the order of
        ``requests``. A busy or briefly unavailable server is retried up to ``retries`` times (the
        client's own unless given) with backoff; the latency counts every attempt.
        """
        retries = self.retries if retries is None else retries
        sleep = time.sleep if self.protocol == "grpc" else _gevent_sleep()

        def one(images: Sequence[bytes]) -> Outcome:
            start, attempt = time.perf_counter(), 0
            while True:
                try:
                    inputs, outputs = make_request(self.module, images)
                    result = self.raw.infer(model, inputs, outputs=outputs)
                    arrays = {n: result.as_numpy(n) for n in spec.ENSEMBLE_OUTPUTS}
                    return Outcome(arrays, None, (time.perf_counter() - start) * 1e3)
                except Exception as exc:  # reported per request so the others' results survive
                    if attempt >= retries or not is_retryable(exc):
                        return Outcome(None, exc, (time.perf_counter() - start) * 1e3)
                sleep(backoff_s(attempt))
                attempt += 1

        if concurrency <= 1 or len(requests) <= 1:
            return [one(r) for r in requests]
        if self.protocol == "grpc":  # thread-safe client: a thread pool
            with ThreadPoolExecutor(max_workers=concurrency) as pool:
                return list(pool.map(one, requests))
        import gevent.pool  # the HTTP client's pool is greenlet-safe, not thread-safe

        return gevent.pool.Pool(concurrency).map(one, requests)

    def close(self) -> None:
        self.raw.close()

    def _readiness_problem(self, model: str) -> Exception | None:
        try:
            if not self.raw.is_server_live():
                return ServerUnavailable("the server answers but is not live")
        except Exception as exc:  # connection refused, DNS, timeouts: all mean "not reachable"
            return ServerUnavailable(f"cannot reach Triton over {self.protocol}: {describe_error(exc)}")
        try:
            if self.raw.is_model_ready(model):
                return None
            why = "not ready"
        except Exception as exc:  # gRPC raises for a model the server does not know
            why = f"not ready ({describe_error(exc)})"
        return ModelNotReady(f"model {model!r} is {why}; ready models: {self._ready_models() or 'none'}")

    def _ready_models(self) -> str:
        try:
            as_json = {"as_json": True} if self.protocol == "grpc" else {}
            index = self.raw.get_model_repository_index(**as_json)
        except Exception:
            return "unknown"
        models = index.get("models", []) if isinstance(index, dict) else index
        return ", ".join(sorted(m["name"] for m in models if m.get("state") == "READY"))


class GrpcDeadline:
    """tritonclient's gRPC client, whose calls get ``timeout_s`` as their deadline when given none:
    its HTTP client takes a timeout when it is made, the gRPC one per call only, and without one a
    host that accepts connections but never answers would hold a client forever. The one owner of
    every gRPC deadline, inference included."""

    CALLS = frozenset({"infer", "is_server_live", "is_server_ready", "is_model_ready", "get_model_config",
                       "get_model_metadata", "get_server_metadata", "get_model_repository_index"})

    def __init__(self, client: Any, timeout_s: float | None) -> None:
        self._client, self._timeout_s = client, timeout_s

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._client, name)
        if name not in self.CALLS or not self._timeout_s:
            return attr

        def call(*args: Any, **kwargs: Any) -> Any:
            kwargs.setdefault("client_timeout", self._timeout_s)
            return attr(*args, **kwargs)

        return call


def describe_error(exc: BaseException) -> str:
    """One line for a failed call; tritonclient's exceptions keep the server's own message."""
    message = getattr(exc, "message", None)
    if callable(message):
        text = message() or str(exc)
        status = exc.status() if callable(getattr(exc, "status", None)) else None
        status = status.removeprefix("StatusCode.") if isinstance(status, str) else status
        return f"{text} (status {status})" if status else text
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def is_request_error(exc: BaseException) -> bool:
    """True when the server answered and refused this request (so other requests may succeed)."""
    from tritonclient.utils import InferenceServerException

    return isinstance(exc, InferenceServerException) and exc.status() not in _TRANSPORT_STATUSES


def served_parameters(config: dict) -> dict[str, str]:
    """A model config's ``parameters`` as plain strings (HTTP and gRPC configs alike)."""
    return {k: v.get("string_value", "") for k, v in config.get("parameters", {}).items()}


def served_keypoint_names(config: dict) -> list[str] | None:
    """The keypoint names the build recorded in the ensemble's config, if any."""
    names = served_parameters(config).get(spec.Param.KEYPOINT_NAMES)
    return names.split(",") if names else None


def make_request(module: ModuleType, images: Sequence[bytes]) -> tuple[list, list]:
    """Inputs and requested outputs (of ``module``, tritonclient.http or .grpc) for one request
    carrying ``images`` (shape [B, 1])."""
    data = np.empty((len(images), 1), dtype=np.object_)
    for i, image in enumerate(images):  # element-wise: never let numpy turn bytes into fixed-width 'S'
        data[i, 0] = bytes(image)
    tensor = module.InferInput(spec.ENSEMBLE_INPUT, list(data.shape), "BYTES")
    tensor.set_data_from_numpy(data)
    return [tensor], [module.InferRequestedOutput(n) for n in spec.ENSEMBLE_OUTPUTS]


def is_busy(exc: BaseException) -> bool:
    """True when the server refused the request because a queue was full (gRPC says UNAVAILABLE, as it
    does for a server that is gone; HTTP says 503)."""
    return QUEUE_FULL in describe_error(exc)


def is_retryable(exc: BaseException) -> bool:
    """True for a busy or briefly unavailable server, where the same request may pass later."""
    status = exc.status() if callable(getattr(exc, "status", None)) else None
    return str(status) in _RETRYABLE_STATUSES or any(m in describe_error(exc) for m in _RETRYABLE_MESSAGES)


def backoff_s(attempt: int, rng: random.Random = random) -> float:  # type: ignore[assignment]
    """Exponential backoff with full jitter: clients refused together do not come back together."""
    return rng.uniform(0, min(BACKOFF_CAP_S, BACKOFF_S * 2 ** attempt))


def _gevent_sleep() -> Callable[[float], None]:
    """HTTP requests run as greenlets: a blocking sleep would stall the others."""
    import gevent

    return gevent.sleep
