"""Locust users of the rehearsal: HTTP and gRPC through the balancer, with our client library.

Each user holds one tritonclient connection to the balancer (gRPC: one
HTTP/2 channel, which the balancer spreads per request) and sends one JPEG
per request through our client's ``run_requests`` (with its retries of a
busy or briefly unavailable server); every response is checked against the
ensemble's contract (perf/contract.py). A request counts as failed when it
still failed after the retries or its response broke the contract; the
message names which.

    REHEARSE_GRPC=127.0.0.1:PORT locust -f deploy/rehearse/locustfile.py --headless -H http://127.0.0.1:PORT
"""
from __future__ import annotations

import collections
import json
import os
import random
import sys
import time
from pathlib import Path

import grpc.experimental.gevent as grpc_gevent
from locust import User, constant, events, task
from locust.stats import StatsEntry

grpc_gevent.init_gevent()  # grpcio's blocking calls must yield to locust's greenlets
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from perf.contract import contract_problem, served_keypoints  # noqa: E402
from perf.inputs import benchmark_jpegs  # noqa: E402
from rtmo_triton import spec  # noqa: E402
from rtmo_triton.client import connect  # noqa: E402
from rtmo_triton.client.transport import describe_error, model_config, run_requests  # noqa: E402

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
        self.keypoints = served_keypoints(model_config(self.client, self.protocol))

    def on_stop(self) -> None:
        self.client.close()

    @task
    def infer(self) -> None:
        label, jpeg = random.choice(list(JPEGS.items()))
        # our client's request path, retries of a busy or briefly unavailable server included
        [outcome] = run_requests(self.client, self.protocol, spec.ENSEMBLE_NAME, [[jpeg]],
                                 timeout_s=TIMEOUT_S)
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
        return os.environ["REHEARSE_GRPC"]


# --- what the rehearsal reads back (REHEARSE_SUMMARY): totals, percentiles, a per-second timeline ---

_timeline: dict[int, list[int]] = collections.defaultdict(lambda: [0, 0])


@events.request.add_listener
def _count(exception: BaseException | None = None, **kwargs) -> None:
    _timeline[int(time.time())][exception is not None] += 1


@events.quitting.add_listener
def _write_summary(environment, **kwargs) -> None:
    path = os.environ.get("REHEARSE_SUMMARY")
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

    Path(path).write_text(json.dumps({
        "total": summary(stats.total),
        "by_protocol": {name: summary(entry) for name, entry in sorted(by_protocol.items())},
        "errors": {f"{e.method} {e.name}: {e.error}": e.occurrences for e in stats.errors.values()},
        "timeline": [[second, ok, failed] for second, (ok, failed) in sorted(_timeline.items())],
    }, indent=1))
