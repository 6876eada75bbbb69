"""Closed-loop load, written once for the benchmarks that need it (overload, soak): N clients, each
sending one image per request over gRPC and the next as soon as the reply is in."""
from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

from rtmo_triton.client import connect
from rtmo_triton.client.transport import Outcome, backoff_s


@contextmanager
def closed_loop(url: str, images: Sequence[bytes], *, clients: int, record: Callable[[Outcome], None],
                back_off_refused: bool = False) -> Iterator[None]:
    """Load runs while the ``with`` body does; every outcome goes to ``record`` (from client threads).

    ``back_off_refused``: no retries inside a request, so each refusal is seen; a refused client waits
    the backoff our client library would wait before its next request, as a real client would.
    """
    stop = threading.Event()

    def client_loop(k: int) -> None:
        client = connect(url, "grpc", **({"retries": 0} if back_off_refused else {}))
        refusals, i = 0, k
        try:
            while not stop.is_set():
                [outcome] = client.infer([[images[i % len(images)]]])
                record(outcome)
                i += 1
                refusals = refusals + 1 if back_off_refused and outcome.error is not None else 0
                if refusals:
                    stop.wait(backoff_s(refusals - 1))
        finally:
            client.close()

    threads = [threading.Thread(target=client_loop, args=(k,), daemon=True) for k in range(clients)]
    for t in threads:
        t.start()
    try:
        yield
    finally:
        stop.set()
        for t in threads:
            t.join()
