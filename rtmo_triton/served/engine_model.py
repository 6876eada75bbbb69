"""What both engine models (onnxruntime, PyTorch) share inside Triton: one engine run per dynamic
batch, the culprit found alone when that run fails, and the engine threads the host gets."""
from __future__ import annotations

import json
from typing import Any

import triton_python_backend_utils as pb_utils

from ..spec import AUTO_THREADS, ENGINE_INPUT, Param
from .cpus import engine_threads
from .respond import describe, respond_each


def intra_op_threads(args: dict, params: dict[str, str]) -> int:
    """The configured threads, or the serving host's share when the config leaves it to the host."""
    threads = params[Param.INTRA_OP_THREADS]
    if threads != AUTO_THREADS:
        return int(threads)
    return engine_threads(sum(g["count"] for g in json.loads(args["model_config"])["instance_group"]))


class EngineModel:
    """Subclasses set ``self.engine`` (``run`` and ``run_requests``) and say how outputs become tensors."""

    engine: Any

    def execute(self, requests: list) -> list:
        try:
            inputs = [self.read_input(r) for r in requests]
            return [pb_utils.InferenceResponse(self.tensors(outputs))
                    for outputs in self.engine.run_requests(inputs)]
        except Exception as exc:  # noqa: BLE001 - find the request at fault: each alone, errors its own
            if len(requests) > 1:  # said once per batch: a fault of the engine itself shows here first
                pb_utils.Logger.log_warn(f"engine run of {len(requests)} requests failed ({describe(exc)}); "
                                         "running each alone")
            return respond_each(requests, self._run_alone, pb_utils)

    def _run_alone(self, request) -> list:
        return self.tensors(self.engine.run(self.read_input(request)))

    def read_input(self, request) -> Any:
        """The request's images as the engine takes them (host memory here)."""
        return pb_utils.get_input_tensor_by_name(request, ENGINE_INPUT).as_numpy()

    def tensors(self, outputs: dict) -> list:
        """The outputs of one request as Triton tensors."""
        raise NotImplementedError
