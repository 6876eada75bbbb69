"""The benchmark tools' own logic: input encoding, response checks, result selection, stage times."""
import base64
import json
import struct

import numpy as np

from perf.analyze import choose
from perf.contract import contract_problem
from perf.inputs import bytes_element
from perf.report import stage_times
from rtmo_triton import spec


def test_bytes_input_is_tritons_serialized_form():
    """perf_analyzer sends b64 content of BYTES tensors as-is: a uint32 length must lead the bytes."""
    raw = base64.b64decode(bytes_element(b"\xff\xd8jpeg")["b64"])
    assert raw == struct.pack("<I", 6) + b"\xff\xd8jpeg"


def response(n_people=2, scores=(0.9, 0.5), j=spec.NUM_KEYPOINTS):
    arrays = {
        "NUM_PEOPLE": np.array([[n_people]], np.int32), "BOXES": np.zeros((1, 2, 4), np.float32),
        "SCORES": np.array([scores], np.float32), "KEYPOINTS": np.zeros((1, 2, j, 2), np.float32),
        "KEYPOINT_SCORES": np.zeros((1, 2, j), np.float32),
    }
    return arrays


def test_contract_accepts_a_good_response_and_names_bad_ones():
    assert contract_problem(response().get) is None
    assert "descending" in contract_problem(response(scores=(0.5, 0.9)).get)
    bad = response()
    bad["BOXES"][0, 0, 0] = np.nan
    assert contract_problem(bad.get) == "non-finite values"
    missing = response()
    del missing["SCORES"]
    assert "SCORES" in contract_problem(missing.get)
    assert "keypoints" in contract_problem(response(j=14).get)


def test_choice_prefers_fewer_instances_when_nearly_as_fast():
    rows = [
        {"model": "m", "instances": 2, "max_queue_delay_us": 0, "max_batch": 8, "throughput": 10.0},
        {"model": "m", "instances": 1, "max_queue_delay_us": 500, "max_batch": 8, "throughput": 9.8},
        {"model": "m", "instances": 1, "max_queue_delay_us": 0, "max_batch": 8, "throughput": 7.0},
        {"model": "rtmo", "instances": 1, "max_queue_delay_us": 0, "max_batch": 8, "throughput": 99.0},
    ]
    assert choose(rows) == {"m": {"instances": 1, "max_queue_delay_us": 500, "max_batch": 8}}
    rows[1]["throughput"] = 9.0  # no longer within 3 %
    assert choose(rows)["m"]["instances"] == 2


def test_stage_times_from_server_statistics(tmp_path):
    def stats(count, queue_ns, infer_ns):
        phase = {"queue": queue_ns, "compute_input": 0, "compute_infer": infer_ns, "compute_output": 0}
        return {"model_stats": [{"name": spec.ENGINE_NAME, "inference_stats": {
            "success": {"count": count}, **{k: {"ns": v} for k, v in phase.items()}}}]}

    path = tmp_path / "run.stats.json"
    path.write_text(json.dumps({"before": stats(10, 0, 1_000_000_000), "after": stats(30, 40_000_000,
                                                                                       5_000_000_000)}))
    times = stage_times(path)[spec.ENGINE_NAME]
    assert times["queue"] == 2.0 and times["compute_infer"] == 200.0
