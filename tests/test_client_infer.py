import threading
import time

import gevent
import numpy as np
import pytest
from tritonclient.utils import InferenceServerException, deserialize_bytes_tensor

from rtmo_triton import spec
from rtmo_triton.client import (
    Client,
    ModelNotReady,
    ServerUnavailable,
    infer_images,
    make_request,
    normalize_url,
    transport,
)
from rtmo_triton.client.transport import BACKOFF_CAP_S, DEFAULT_RETRIES, backoff_s, is_retryable

from .client_fakes import FakeResult, batched_outputs

BAD = b"undecodable"
REAL_MAKE_REQUEST = transport.make_request


class FakeTriton:
    """Answers like the ensemble: an image holds one person per ``p`` byte; BAD fails its whole request."""

    def __init__(self, protocol="grpc", delay=0.0, max_batch=8, error=None):
        self.protocol, self.delay, self.max_batch, self.error = protocol, delay, max_batch, error
        self.requests: list[list[bytes]] = []
        self.in_flight = self.most_in_flight = 0
        self.lock = threading.Lock()

    def infer(self, model_name, inputs, outputs=None, **kwargs):
        assert model_name == spec.ENSEMBLE_NAME
        images = inputs  # make_request is replaced by the identity in these tests
        with self.lock:
            self.requests.append(list(images))
            self.in_flight += 1
            self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            if self.delay:
                (gevent.sleep if self.protocol == "http" else time.sleep)(self.delay)
            if self.error is not None:
                raise self.error
            if BAD in images:
                raise InferenceServerException("unable to decode image", status="400")
            return FakeResult(batched_outputs([img.count(b"p") for img in images]))
        finally:
            with self.lock:
                self.in_flight -= 1

    def is_server_live(self):
        return True

    def is_model_ready(self, name):
        return name == spec.ENSEMBLE_NAME

    def get_model_config(self, name, as_json=False):
        config = {"name": name, "max_batch_size": self.max_batch}
        return {"config": config} if self.protocol == "grpc" else config


def fake(protocol="grpc", triton=None, **kwargs) -> Client:
    """Our client over a fake tritonclient; the fake is ``client.raw``."""
    return Client(triton or FakeTriton(protocol, **kwargs), protocol)


@pytest.fixture(autouse=True)
def images_as_inputs(monkeypatch):
    monkeypatch.setattr(transport, "make_request", lambda module, images: (images, None))


def counts(people):
    return [p.num_people if p.ok else p.error for p in people]


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_images_are_split_into_requests_of_the_model_max_batch(protocol):
    client = fake(protocol, max_batch=3)
    images = [b"p" * (i % 4) or b"\x00" for i in range(8)]
    people = infer_images(client, images)
    assert [len(r) for r in client.raw.requests] == [3, 3, 2]
    assert counts(people) == [img.count(b"p") for img in images]
    assert [p.batch for p in people] == [3] * 6 + [2] * 2


def test_explicit_batch_size_wins():
    client = fake(max_batch=8)
    infer_images(client, [b"p"] * 5, batch_size=2)
    assert [len(r) for r in client.raw.requests] == [2, 2, 1]


def test_a_bad_image_fails_alone_and_the_others_keep_their_people():
    client = fake()
    people = infer_images(client, [b"pp", BAD, b"p", b"ppp", b"p"], batch_size=2)
    assert counts(people)[0] == 2 and counts(people)[2:] == [1, 3, 1]
    assert not people[1].ok and "unable to decode image" in people[1].error
    # the failed pair was retried one image per request; the good requests were not repeated
    assert [len(r) for r in client.raw.requests] == [2, 2, 1, 1, 1]


def test_empty_image_data_is_not_sent():
    client = fake()
    people = infer_images(client, [b"p", b""])
    assert counts(people)[0] == 1 and "empty" in people[1].error
    assert client.raw.requests == [[b"p"]]


def test_transport_errors_are_not_retried_image_by_image():
    """A refused connection is retried as it was sent (a replica may be restarting), never split up."""
    client = fake("http", error=ConnectionRefusedError(111, "Connection refused"))
    people = infer_images(client, [b"p"] * 5, batch_size=4)
    assert all("Connection refused" in p.error for p in people)
    assert sorted(map(len, client.raw.requests)) == [1] * (DEFAULT_RETRIES + 1) + [4] * (DEFAULT_RETRIES + 1)


def test_only_busy_or_unavailable_answers_are_retried_with_capped_backoff():
    from tritonclient.utils import InferenceServerException

    busy = InferenceServerException("in ensemble 'rtmo', Exceeds maximum queue size",
                                    status="StatusCode.UNAVAILABLE")
    bad = InferenceServerException("not a decodable image", status="400")
    assert is_retryable(busy) and not is_retryable(bad)
    dead_stub = InferenceServerException("Stub process 'rtmo_engine_0_1' is not healthy.", status="500")
    assert is_retryable(dead_stub)
    waits = [backoff_s(n) for n in range(12) for _ in range(50)]
    assert 0 <= min(waits) and max(waits) <= BACKOFF_CAP_S


def test_contract_violation_is_reported_per_request():
    client = fake()
    client.raw.infer = lambda *a, **k: FakeResult({})
    people = infer_images(client, [b"p", b"pp"], batch_size=8)
    assert all(not p.ok and "lacks output" in p.error for p in people)


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_concurrency_bounds_requests_in_flight_and_keeps_order(protocol):
    client = fake(protocol, delay=0.05)
    images = [b"p" * (i % 5) or b"\x00" for i in range(12)]
    people = infer_images(client, images, batch_size=1, concurrency=3)
    assert client.raw.most_in_flight == 3
    assert counts(people) == [img.count(b"p") for img in images]
    assert all(p.latency_ms >= 50 for p in people), "a latency must include the request's own wait"


def test_sequential_by_default():
    client = fake(delay=0.01)
    infer_images(client, [b"p"] * 4, batch_size=1)
    assert client.raw.most_in_flight == 1


def test_bad_batch_size():
    with pytest.raises(ValueError, match="batch_size"):
        infer_images(fake(), [b"p"], batch_size=0)


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_check_ready_reads_max_batch_size(protocol):
    assert fake(protocol, max_batch=16).ready().max_batch_size == 16


def test_check_ready_names_the_problem():
    class Down(FakeTriton):
        def is_server_live(self):
            raise ConnectionRefusedError(111, "Connection refused")

    with pytest.raises(ServerUnavailable, match="cannot reach.*Connection refused"):
        fake("http", triton=Down()).ready()

    class Loading(FakeTriton):
        def get_model_repository_index(self, **kwargs):
            return [{"name": "other", "state": "READY"}, {"name": "rtmo", "state": "LOADING"}]

    with pytest.raises(ModelNotReady, match="'nope' is not ready; ready models: other"):
        fake("http", triton=Loading()).ready("nope")
    with pytest.raises(ServerUnavailable):
        infer_images(fake("http", triton=Down()), [b"p"])  # no batch size: readiness is checked first


def test_check_ready_waits_for_a_starting_server():
    class Starting(FakeTriton):
        calls = 0

        def is_server_live(self):
            self.calls += 1
            if self.calls < 3:
                raise ConnectionRefusedError(111, "Connection refused")
            return True

    assert fake(triton=Starting()).ready(wait_s=5).max_batch_size == 8


def test_a_model_without_batch_dimension_is_refused_clearly():
    """The contract's IMAGE is [B, 1]: a model without a batch dimension is not the rtmo ensemble."""
    with pytest.raises(ModelNotReady, match="no batch dimension"):
        infer_images(fake(max_batch=0), [b"pp", b"p"])


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_request_tensor_is_bytes_b_by_1_and_keeps_every_byte(monkeypatch, protocol):
    monkeypatch.undo()  # the real make_request
    images = [b"\x89PNG\x00\x00", b"\xff\xd8jpeg\x00"]
    (tensor,), outputs = make_request(transport.client_module(protocol), images)
    assert tensor.name() == spec.ENSEMBLE_INPUT and tensor.datatype() == "BYTES"
    assert tensor.shape() == [2, 1]
    assert [o.name() for o in outputs] == list(spec.ENSEMBLE_OUTPUTS)
    raw = getattr(tensor, "_raw_data", None) or getattr(tensor, "_raw_content", None)
    if raw is None:
        pytest.skip("this tritonclient keeps the tensor elsewhere")
    assert deserialize_bytes_tensor(raw).tolist() == images


@pytest.mark.parametrize(
    ("url", "protocol", "expected"),
    [
        (None, "http", "127.0.0.1:8000"),
        (None, "grpc", "127.0.0.1:8001"),
        ("http://host:9000/", "http", "host:9000"),
        ("grpc://host", "grpc", "host:8001"),
        ("10.0.0.1:1234", "grpc", "10.0.0.1:1234"),
        ("[::1]", "http", "[::1]:8000"),
        ("[::1]:9", "http", "[::1]:9"),
    ],
)
def test_normalize_url(url, protocol, expected):
    assert normalize_url(url, protocol) == expected


@pytest.mark.parametrize("url", ["host:", "http://", ":8000", "host:port", "host:0", "host:65536"])
def test_a_malformed_address_is_refused_before_connecting(url):
    with pytest.raises(ValueError, match="not a server address"):
        normalize_url(url, "grpc")


def test_unknown_protocol():
    with pytest.raises(ValueError, match="protocol"):
        normalize_url(None, "websocket")


def test_results_are_numpy(monkeypatch):
    (p,) = infer_images(fake(), [b"pp"])
    assert isinstance(p.boxes, np.ndarray) and p.boxes.shape == (2, 4)


def test_no_images_no_requests():
    client = fake()
    assert infer_images(client, [], batch_size=4) == [] and client.raw.requests == []


@pytest.fixture
def silent_host():
    """Accepts connections, says nothing: without a deadline a gRPC call would wait on it forever."""
    import socket

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    held = []
    threading.Thread(target=lambda: held.extend(listener.accept() for _ in range(4)), daemon=True).start()
    yield f"127.0.0.1:{listener.getsockname()[1]}"
    listener.close()


def test_grpc_status_calls_give_up_at_the_timeout_on_a_host_that_never_answers(silent_host):
    from rtmo_triton.client import connect
    from rtmo_triton.client.transport import ServerUnavailable

    client = connect(silent_host, "grpc", timeout_s=0.5)
    try:
        with pytest.raises(ServerUnavailable, match="DEADLINE_EXCEEDED|Deadline Exceeded"):
            client.ready()
    finally:
        client.close()


def test_grpc_inference_gives_up_at_the_same_timeout(monkeypatch, silent_host):
    from rtmo_triton.client import connect

    monkeypatch.setattr(transport, "make_request", REAL_MAKE_REQUEST)
    client = connect(silent_host, "grpc", timeout_s=0.5)
    try:
        [outcome] = client.infer([[b"image"]], retries=0)
    finally:
        client.close()
    assert outcome.outputs is None and "Deadline Exceeded" in str(outcome.error)
