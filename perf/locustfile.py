"""Load test of the `rtmo` ensemble over HTTP: real JPEGs in, every response checked against the contract.

Requests are built once per image with tritonclient (binary tensor extension: JPEG bytes unencoded) and
posted by locust; a response that ``perf.contract`` finds at fault (against the keypoint count the served
config declares, read at the start) counts as a failure. ``make load`` (``python -m perf.load``) runs it.
"""
from __future__ import annotations

import json
import random
import urllib.request

import numpy as np
import tritonclient.http as httpclient
from locust import HttpUser, constant, events, task

from perf.contract import contract_problem, served_keypoints
from perf.inputs import benchmark_jpegs
from rtmo_triton import spec


def request_body(jpeg: bytes) -> tuple[bytes, int]:
    data = np.empty((1, 1), np.object_)
    data[0, 0] = jpeg
    tensor = httpclient.InferInput(spec.ENSEMBLE_INPUT, [1, 1], "BYTES")
    tensor.set_data_from_numpy(data, binary_data=True)
    outputs = [httpclient.InferRequestedOutput(n, binary_data=True) for n in spec.ENSEMBLE_OUTPUTS]
    return httpclient.InferenceServerClient.generate_request_body([tensor], outputs)


BODIES = {f"{w}x{h}": request_body(jpeg) for (w, h), jpeg in benchmark_jpegs().items()}
SERVED: dict[str, int] = {}
"""What the served model declares; a test whose config could not be read fails every request."""


@events.test_start.add_listener
def read_served_config(environment, **_) -> None:
    with urllib.request.urlopen(f"{environment.host}/v2/models/{spec.ENSEMBLE_NAME}/config", timeout=10) as r:
        SERVED["keypoints"] = served_keypoints(json.load(r))


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
            problem = contract_problem(result.as_numpy, SERVED["keypoints"])
            if problem:
                response.failure(problem)
