"""Triton Python model ``rtmo_engine`` (ONNX flavour): the exported graph in onnxruntime, where the
server has no TensorRT."""
from pathlib import Path

import triton_python_backend_utils as pb_utils

from ...spec import Param
from ..engine_model import EngineModel, intra_op_threads
from ..heap import keep_freed_buffers
from ..onnx_engine import OnnxEngine
from ..params import read_parameters
from ..tensor_exchange import check_tensor_exchange


class TritonPythonModel(EngineModel):
    def initialize(self, args: dict[str, str]) -> None:
        check_tensor_exchange(pb_utils)
        params = read_parameters(args["model_config"])
        path = Path(args["model_repository"]) / args["model_version"] / params[Param.ENGINE_FILE]
        threads = intra_op_threads(args, params)
        self.engine = OnnxEngine(path, threads)
        pb_utils.Logger.log_info(f"{args['model_name']}: onnxruntime with {threads} intra-op thread(s)")
        keep_freed_buffers()  # each batch's outputs are MBs of fresh numpy arrays

    def tensors(self, outputs: dict) -> list:
        return [pb_utils.Tensor(name, value) for name, value in outputs.items()]
