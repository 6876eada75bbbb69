"""Triton Python model ``rtmo_decode``: engine candidates → people in image pixels."""
import triton_python_backend_utils as pb_utils

from ...spec import AFFINE, ENGINE_OUTPUTS, ENSEMBLE_OUTPUTS, Param
from ..heap import keep_freed_buffers
from ..params import read_parameters
from ..postprocess import decode_batch, stack_people
from ..respond import respond_each
from ..tensor_exchange import check_tensor_exchange


class TritonPythonModel:
    def initialize(self, args: dict[str, str]) -> None:
        check_tensor_exchange(pb_utils)
        params = read_parameters(args["model_config"])
        self.score_thr = float(params[Param.SCORE_THR])
        self.nms_thr = float(params[Param.NMS_THR])
        self.num_keypoints = int(params[Param.NUM_KEYPOINTS])
        keep_freed_buffers()  # per-request arrays of several MB: no page faults on each request

    def execute(self, requests: list) -> list:
        return respond_each(requests, self._decode, pb_utils)

    def _decode(self, request) -> list:
        outputs = {n: pb_utils.get_input_tensor_by_name(request, n).as_numpy() for n in ENGINE_OUTPUTS}
        affines = pb_utils.get_input_tensor_by_name(request, AFFINE).as_numpy()
        people = decode_batch(outputs, affines, self.score_thr, self.nms_thr)
        arrays = stack_people(people, self.num_keypoints)
        return [pb_utils.Tensor(name, value) for name, value in zip(ENSEMBLE_OUTPUTS, arrays)]
