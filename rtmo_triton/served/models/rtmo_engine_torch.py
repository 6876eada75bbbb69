"""Triton Python model ``rtmo_engine`` (torch flavour): our PyTorch deploy graph, on the GPU Triton gives
this instance (``KIND_GPU``) or on the CPU; its input taken where the preprocess left it and its outputs
handed on, both through DLPack."""
import json
from pathlib import Path

import triton_python_backend_utils as pb_utils

from ...spec import ENGINE_INPUT, YES, Param
from ..engine_model import EngineModel, intra_op_threads
from ..params import instance_device, read_parameters
from ..tensor_exchange import check_tensor_exchange
from ..torch_import import import_torch


class TritonPythonModel(EngineModel):
    def initialize(self, args: dict[str, str]) -> None:
        check_tensor_exchange(pb_utils)
        self.torch = import_torch()  # the server's PyTorch, else the launcher's (served/torch_import.py)
        from ..torch_engine import TorchEngine

        params = read_parameters(args["model_config"])
        device = instance_device(args)
        gpu = device != "cpu"
        path = Path(args["model_repository"]) / args["model_version"] / params[Param.ENGINE_FILE]
        self.engine = TorchEngine(path, device, params[Param.PRECISION],
                                  threads=intra_op_threads(args, params),
                                  cuda_graphs=params[Param.CUDA_GRAPHS] == YES)
        pb_utils.Logger.log_info(f"{args['model_name']}: {self.engine.describe()}")
        if gpu:  # no request pays for cuDNN's algorithm search or a graph capture
            max_batch = json.loads(args["model_config"])["max_batch_size"]
            seconds = self.engine.warm_up(max_batch)
            pb_utils.Logger.log_info(f"{args['model_name']}: batches 1-{max_batch} ready in {seconds:.1f} s")

    def tensors(self, outputs: dict) -> list:
        return [pb_utils.Tensor.from_dlpack(name, value.contiguous()) for name, value in outputs.items()]

    def read_input(self, request):
        """In GPU memory when the preprocess ran there (``FORCE_CPU_ONLY_INPUT_TENSORS: no``): no copy
        through the host."""
        return self.torch.from_dlpack(pb_utils.get_input_tensor_by_name(request, ENGINE_INPUT).to_dlpack())
