"""Triton Python model ``rtmo_preprocess``: encoded images → letterboxed UINT8 input + affine."""
import cv2
import triton_python_backend_utils as pb_utils

from ...spec import AFFINE, ENGINE_INPUT, ENSEMBLE_INPUT, Param
from ..heap import keep_freed_buffers
from ..letterbox import opencv_difference
from ..params import read_parameters
from ..preprocess import preprocess_batch
from ..respond import respond_each
from ..tensor_exchange import check_tensor_exchange


class TritonPythonModel:
    def initialize(self, args: dict[str, str]) -> None:
        check_tensor_exchange(pb_utils)
        params = read_parameters(args["model_config"])
        self.input_size = int(params[Param.INPUT_SIZE])
        self.max_pixels = int(params[Param.MAX_PIXELS])
        cv2.setNumThreads(1)  # instances run in parallel; OpenCV's own threads would fight them
        if difference := opencv_difference():
            pb_utils.Logger.log_warn(f"{args['model_name']}: {difference}")
        keep_freed_buffers()  # per-request arrays of several MB: no page faults on each request

    def execute(self, requests: list) -> list:
        return respond_each(requests, self._preprocess, pb_utils)

    def _preprocess(self, request) -> list:
        images = pb_utils.get_input_tensor_by_name(request, ENSEMBLE_INPUT).as_numpy().reshape(-1)
        inputs, affines = preprocess_batch(images.tolist(), self.input_size, self.max_pixels)
        return [pb_utils.Tensor(ENGINE_INPUT, inputs), pb_utils.Tensor(AFFINE, affines)]
