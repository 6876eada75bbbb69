"""Load test of the `rtmo` ensemble over HTTP: real JPEGs in, every response checked against the contract.

Requests are built once per image with tritonclient (binary tensor
extension, so JPEG bytes travel unencoded) and posted by locust's HTTP
client; responses are parsed by tritonclient and checked by the same
``parse_outputs`` the project's client uses, plus checks that scores descend and
values are finite. A response that breaks the contract counts as a failure.

    locust -f perf/locustfile.py --headless -H http://127.0.0.1:8000 -u 8 -r 2 -t 60s
"""
from __future__ import annotations

import random
import sys
from pathlib import Path

import numpy as np
import tritonclient.http as httpclient
from locust import HttpUser, constant, task

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from perf.contract import contract_problem  # noqa: E402
from perf.inputs import benchmark_jpegs  # noqa: E402
from rtmo_triton import spec  # noqa: E402


def request_body(jpeg: bytes) -> tuple[bytes, int]:
    data = np.empty((1, 1), np.object_)
    data[0, 0] = jpeg
    tensor = httpclient.InferInput(spec.ENSEMBLE_INPUT, [1, 1], "BYTES")
    tensor.set_data_from_numpy(data, binary_data=True)
    outputs = [httpclient.InferRequestedOutput(n, binary_data=True) for n in spec.ENSEMBLE_OUTPUTS]
    body, json_size = httpclient.InferenceServerClient.generate_request_body([tensor], outputs)
    return body, json_size


BODIES = {f"{w}x{h}": request_body(jpeg) for (w, h), jpeg in benchmark_jpegs().items()}


class RtmoUser(HttpUser):
    wait_time = constant(0)

    @task
    def infer(self) -> None:
        label, (body, json_size) = random.choice(list(BODIES.items()))
        headers = {"Inference-Header-Content-Length": str(json_size),
                   "Content-Type": "application/octet-stream"}
        with self.client.post(f"/v2/models/{spec.ENSEMBLE_NAME}/infer", data=body, headers=headers,
                              name=f"rtmo {label}", catch_response=True) as response:
            if response.status_code != 200:
                response.failure(f"HTTP {response.status_code}: {response.text[:200]}")
                return
            length = response.headers.get("Inference-Header-Content-Length")
            result = httpclient.InferResult.from_response_body(
                response.content, header_length=int(length) if length else None)
            problem = contract_problem(result.as_numpy)
            if problem:
                response.failure(problem)
