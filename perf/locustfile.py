"""Locust users of the `rtmo` ensemble, HTTP and gRPC, with our client library: ``make load`` runs the
HTTP users against one server, the scale rehearsal both kinds through its balancer.

Each user holds one tritonclient connection (gRPC: one HTTP/2 channel, which a
balancer spreads per request) and sends one JPEG
per request through our client's ``Client.infer`` (with its retries of a
busy or briefly unavailable server); every response is checked against the
ensemble's contract (perf/contract.py). A request counts as failed when it
still failed after the retries or its response broke the contract; the
message names which.

    PYTHONPATH=. RTMO_GRPC_URL=127.0.0.1:PORT locust -f perf/locustfile.py --headless -H http://127.0.0.1:PORT

gRPC users need ``RTMO_GRPC_URL``; ``RTMO_LOCUST_SUMMARY`` names a JSON file for the summary below.
"""
from __future__ import annotations

import collections
import json
import os
import random
import time

import grpc.experimental.gevent as grpc_gevent
from locust import User, constant, events, task
from locust.stats import StatsEntry

grpc_gevent.init_gevent()  # grpcio's blocking calls must yield to locust's greenlets

from perf.contract import contract_problem, served_keypoints  # noqa: E402
from perf.inputs import benchmark_jpegs  # noqa: E402
from rtmo_triton.client import connect  # noqa: E402
from rtmo_triton.client.transport import describe_error  # noqa: E402
from rtmo_triton.whole_files import write_whole  # noqa: E402

JPEGS = {f"{w}x{h}": jpeg for (w, h), jpeg in benchmark_jpegs().items()}
TIMEOUT_S = 60.0


class _RtmoUser(User):
    abstract = True
    protocol = "http"
    wait_time = constant(0)

    def url(self) -> str:
        raise NotImplementedError

    def on_start(self) -> None:
        self.client = connect(self.url(), self.protocol, timeout_s=TIMEOUT_S)
        self.keypoints = served_keypoints(self.client.config())

    def on_stop(self) -> None:
        self.client.close()

    @task
    def infer(self) -> None:
        label, jpeg = random.choice(list(JPEGS.items()))
        # our client's request path, retries of a busy or briefly unavailable server included
        [outcome] = self.client.infer([[jpeg]])
        exception: Exception | None = None
        if outcome.error is not None:
            exception = RuntimeError(describe_error(outcome.error))
        elif problem := contract_problem(outcome.outputs.get, self.keypoints):
            exception = AssertionError(f"contract: {problem}")
        events.request.fire(request_type=self.protocol, name=f"rtmo {label}",
                            response_time=outcome.latency_ms, response_length=len(jpeg),
                            exception=exception, context={})


class HttpRtmoUser(_RtmoUser):
    protocol = "http"

    def url(self) -> str:
        return self.host


class GrpcRtmoUser(_RtmoUser):
    protocol = "grpc"

    def url(self) -> str:
        return os.environ["RTMO_GRPC_URL"]


# --- what the rehearsal reads back (RTMO_LOCUST_SUMMARY): totals, percentiles, a per-second timeline ---

_timeline: dict[int, list[int]] = collections.defaultdict(lambda: [0, 0])


@events.request.add_listener
def _count(exception: BaseException | None = None, **kwargs) -> None:
    _timeline[int(time.time())][exception is not None] += 1


@events.quitting.add_listener
def _write_summary(environment, **kwargs) -> None:
    path = os.environ.get("RTMO_LOCUST_SUMMARY")
    if not path:
        return
    stats = environment.stats
    by_protocol: dict[str, StatsEntry] = {}
    for entry in stats.entries.values():
        by_protocol.setdefault(entry.method, StatsEntry(stats, entry.method, entry.method)).extend(entry)

    def summary(entry: StatsEntry) -> dict:
        return {"requests": entry.num_requests, "failures": entry.num_failures,
                "p50_ms": entry.get_response_time_percentile(0.5),
                "p99_ms": entry.get_response_time_percentile(0.99),
                "first_s": entry.start_time, "last_s": entry.last_request_timestamp}

    write_whole(path, json.dumps({
        "total": summary(stats.total),
        "by_protocol": {name: summary(entry) for name, entry in sorted(by_protocol.items())},
        "errors": {f"{e.method} {e.name}: {e.error}": e.occurrences for e in stats.errors.values()},
        "timeline": [[second, ok, failed] for second, (ok, failed) in sorted(_timeline.items())],
    }, indent=1))
