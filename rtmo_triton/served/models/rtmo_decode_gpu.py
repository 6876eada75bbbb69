"""Triton Python model ``rtmo_decode`` (``PREPROCESS=gpu``): engine candidates, taken where the engine left
them (DLPack, GPU memory on a GPU host) → people in image pixels; only the people cross to the host."""
import triton_python_backend_utils as pb_utils

from ...spec import AFFINE, ENGINE_OUTPUTS, ENSEMBLE_OUTPUTS, Param
from ..params import instance_device, read_parameters
from ..respond import respond_each
from ..tensor_exchange import check_tensor_exchange
from ..torch_import import import_torch


class TritonPythonModel:
    def initialize(self, args: dict[str, str]) -> None:
        check_tensor_exchange(pb_utils)
        self.torch = import_torch()
        from ..gpu.decode import decode_batch

        params = read_parameters(args["model_config"])
        self.decode_batch = decode_batch
        self.device = self.torch.device(instance_device(args))
        self.score_thr = float(params[Param.SCORE_THR])
        self.nms_thr = float(params[Param.NMS_THR])
        self.num_keypoints = int(params[Param.NUM_KEYPOINTS])
        pb_utils.Logger.log_info(f"{args['model_name']}: on {self.device}")

    def execute(self, requests: list) -> list:
        return respond_each(requests, self._decode, pb_utils)

    def _tensor(self, request, name: str):
        """The input wherever Triton holds it, moved to this instance's device if it is elsewhere."""
        tensor = pb_utils.get_input_tensor_by_name(request, name)
        return self.torch.from_dlpack(tensor.to_dlpack()).to(self.device)

    def _decode(self, request) -> list:
        torch = self.torch
        with torch.inference_mode():
            outputs = {n: self._tensor(request, n) for n in ENGINE_OUTPUTS}
            affines = self._tensor(request, AFFINE)
            arrays = self.decode_batch(outputs, affines, score_thr=self.score_thr, nms_thr=self.nms_thr,
                                       num_keypoints=self.num_keypoints)
        return [pb_utils.Tensor(name, value.cpu().numpy()) for name, value in zip(ENSEMBLE_OUTPUTS, arrays)]
