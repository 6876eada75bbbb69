"""Triton Python model: engine candidates → people in image pixels (rtmo_triton.postprocess)."""
import json
from pathlib import Path

import triton_python_backend_utils as pb_utils

from rtmo_triton.postprocess import decode_batch, stack_people
from rtmo_triton.serving.heap import keep_freed_buffers
from rtmo_triton.serving.params import read_parameters
from rtmo_triton.spec import AFFINE, ENGINE_NAME, ENGINE_OUTPUTS, ENSEMBLE_OUTPUTS
from rtmo_triton.trt.compat import check_served


class TritonPythonModel:
    def initialize(self, args):
        params = read_parameters(json.loads(args["model_config"]))
        self.score_thr = float(params["score_thr"])
        self.nms_thr = float(params["nms_thr"])
        self.num_keypoints = int(params["num_keypoints"])
        keep_freed_buffers()  # per-request arrays of several MB: no page faults on each request
        # A TensorRT engine beside us must match this host; say what to rebuild if not.
        plan = Path(args["model_repository"]).parent / ENGINE_NAME / "1" / "model.plan"
        for warning in check_served(plan):
            pb_utils.Logger.log_warn(warning)

    def execute(self, requests):
        responses = []
        for request in requests:
            outputs = {n: pb_utils.get_input_tensor_by_name(request, n).as_numpy() for n in ENGINE_OUTPUTS}
            affines = pb_utils.get_input_tensor_by_name(request, AFFINE).as_numpy()
            people = decode_batch(outputs, affines, self.score_thr, self.nms_thr)
            arrays = stack_people(people, self.num_keypoints)
            responses.append(pb_utils.InferenceResponse(
                [pb_utils.Tensor(name, value) for name, value in zip(ENSEMBLE_OUTPUTS, arrays)]))
        return responses
