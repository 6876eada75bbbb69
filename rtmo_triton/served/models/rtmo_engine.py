"""Triton Python model ``rtmo_engine`` (ONNX flavour): the exported graph in onnxruntime, where the
server has no TensorRT."""
import json
from pathlib import Path

import triton_python_backend_utils as pb_utils

from ...spec import AUTO_THREADS, ENGINE_INPUT
from ..cpus import engine_threads
from ..heap import keep_freed_buffers
from ..onnx_engine import OnnxEngine
from ..params import read_parameters
from ..respond import respond_each


class TritonPythonModel:
    def initialize(self, args):
        params = read_parameters(args["model_config"])
        path = Path(args["model_repository"]) / args["model_version"] / params["engine_file"]
        threads = params["intra_op_threads"]
        if threads == AUTO_THREADS:
            instances = sum(g["count"] for g in json.loads(args["model_config"])["instance_group"])
            threads = engine_threads(instances)
        self.engine = OnnxEngine(path, int(threads))
        pb_utils.Logger.log_info(f"{args['model_name']}: onnxruntime with {threads} intra-op thread(s)")
        keep_freed_buffers()  # each batch's outputs are MBs of fresh numpy arrays

    def execute(self, requests):
        inputs = [pb_utils.get_input_tensor_by_name(r, ENGINE_INPUT).as_numpy() for r in requests]
        try:
            results = self.engine.run_requests(inputs)
        except Exception:  # noqa: BLE001 - find the request at fault: each alone, errors its own
            return respond_each(requests, self._run_alone, pb_utils)
        return [pb_utils.InferenceResponse(_tensors(outputs)) for outputs in results]

    def _run_alone(self, request):
        return _tensors(self.engine.run(pb_utils.get_input_tensor_by_name(request, ENGINE_INPUT).as_numpy()))


def _tensors(outputs):
    return [pb_utils.Tensor(name, value) for name, value in outputs.items()]
