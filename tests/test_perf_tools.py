"""The benchmark tools' own logic: input encoding, response checks, result selection, stage times."""
import base64
import json
import struct

import numpy as np

from perf.analyze import choose, ensemble_summary, measurements
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


def test_ensemble_search_rows_carry_each_composing_setting(tmp_path):
    def config(name, count, batch, **extra):
        return {"name": name, "instanceGroup": [{"count": count, "kind": "KIND_CPU"}], "maxBatchSize": batch,
                **extra}

    def trial(ensemble_batch, engine_count, throughput):
        delay = {"maxQueueDelayMicroseconds": "2000"}
        threads = {"intra_op_threads": {"stringValue": "1"}}
        composing = [config(spec.PREPROCESS_NAME, 2, 8, dynamicBatching=delay),
                     config(spec.ENGINE_NAME, engine_count, 4, parameters=threads),
                     config(spec.DECODE_NAME, 1, 2)]
        run = {"_model_run_configs": [{
            "_model_config_variant": {"model_config": {"name": "rtmo", "maxBatchSize": ensemble_batch}},
            "_composing_config_variants": [{"model_config": c} for c in composing]}]}
        measured = {"_model_config_measurements": [{
            "_model_specific_pa_params": {"concurrency-range": 4},
            "_non_gpu_data": [["perf_throughput", {"_value": throughput}],
                              ["perf_latency_p99", {"_value": 900}]]}]}
        return [run, {"cmd": measured}]

    ckpt = tmp_path / "0.ckpt"
    ckpt.write_text(json.dumps({"ResultManager.results": {"_results": {spec.ENSEMBLE_NAME: {
        "rtmo_config_default": trial(8, 2, 6.4), "rtmo_config_3": trial(2, 1, 3.5)}}}}))
    rows = measurements(ckpt)
    assert [r["max_batch"] for r in rows] == [8, 2]
    engine = rows[1]["composing"][spec.ENGINE_NAME]
    assert engine == {"instances": 1, "max_batch": 4, "max_queue_delay_us": 0, "intra_op_threads": 1}
    assert rows[0]["composing"][spec.PREPROCESS_NAME]["max_queue_delay_us"] == 2000
    assert choose(rows) == {}, "ensemble trials must not become a composing model's tuned setting"
    text = ensemble_summary(rows)
    assert "engine 1×b4 1 thr" in text and "Best trial: rtmo_config_default at 6.40" in text


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
