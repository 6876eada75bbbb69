"""Triton Python model: the exported ONNX graph in onnxruntime, for servers without TensorRT."""
import json
from pathlib import Path

import triton_python_backend_utils as pb_utils

from rtmo_triton.serving.heap import keep_freed_buffers
from rtmo_triton.serving.onnx_engine import OnnxEngine
from rtmo_triton.serving.params import read_parameters
from rtmo_triton.spec import ENGINE_INPUT


class TritonPythonModel:
    def initialize(self, args):
        params = read_parameters(json.loads(args["model_config"]))
        path = Path(args["model_repository"]) / args["model_version"] / params["engine_file"]
        self.engine = OnnxEngine(path, int(params["intra_op_threads"]))
        keep_freed_buffers()  # each batch's outputs are MBs of fresh numpy arrays

    def execute(self, requests):
        inputs = [pb_utils.get_input_tensor_by_name(r, ENGINE_INPUT).as_numpy() for r in requests]
        return [
            pb_utils.InferenceResponse([pb_utils.Tensor(name, value) for name, value in outputs.items()])
            for outputs in self.engine.run_requests(inputs)
        ]
