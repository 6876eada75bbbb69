"""Triton Python model: encoded images → letterboxed UINT8 input + affine (rtmo_triton.preprocess)."""
import json

import cv2
import triton_python_backend_utils as pb_utils

from rtmo_triton.image_io import ImageError
from rtmo_triton.preprocess import preprocess_batch
from rtmo_triton.serving.heap import keep_freed_buffers
from rtmo_triton.serving.params import read_parameters
from rtmo_triton.spec import AFFINE, ENGINE_INPUT, ENSEMBLE_INPUT


class TritonPythonModel:
    def initialize(self, args):
        params = read_parameters(json.loads(args["model_config"]))
        self.input_size = int(params["input_size"])
        self.max_pixels = int(params["max_pixels"])
        cv2.setNumThreads(1)  # instances run in parallel; OpenCV's own threads would fight them
        keep_freed_buffers()  # per-request arrays of several MB: no page faults on each request

    def execute(self, requests):
        responses = []
        for request in requests:
            images = pb_utils.get_input_tensor_by_name(request, ENSEMBLE_INPUT).as_numpy().reshape(-1)
            try:
                inputs, affines = preprocess_batch(images.tolist(), self.input_size, self.max_pixels)
            except ImageError as exc:
                responses.append(pb_utils.InferenceResponse(error=pb_utils.TritonError(str(exc))))
                continue
            responses.append(pb_utils.InferenceResponse(
                [pb_utils.Tensor(ENGINE_INPUT, inputs), pb_utils.Tensor(AFFINE, affines)]))
        return responses
