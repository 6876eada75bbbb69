"""Triton Python model ``rtmo_engine`` (torch flavour): our PyTorch deploy graph, on the GPU Triton gives
this instance (``KIND_GPU``) or on the CPU; outputs handed to Triton through DLPack."""
import json
from pathlib import Path

import triton_python_backend_utils as pb_utils

from ...spec import YES, Param
from ..engine_model import EngineModel, intra_op_threads
from ..params import read_parameters
from ..tensor_exchange import check_tensor_exchange

NO_TORCH = ("the torch engine flavour runs PyTorch from the server's own Python interpreter, and this one "
            "cannot import it ({error}). The repository never carries PyTorch (GBs): install it where "
            "tritonserver's Python models run (e.g. `pip install torch` in the Triton container), or "
            "rebuild with ENGINE=onnx")


class TritonPythonModel(EngineModel):
    def initialize(self, args: dict[str, str]) -> None:
        check_tensor_exchange(pb_utils)
        try:
            import torch  # noqa: F401
        except ImportError as exc:
            raise RuntimeError(NO_TORCH.format(error=exc)) from None
        from ..torch_engine import TorchEngine

        params = read_parameters(args["model_config"])
        gpu = args["model_instance_kind"] == "GPU"
        device = f"cuda:{args['model_instance_device_id']}" if gpu else "cpu"
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
