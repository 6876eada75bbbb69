"""The benchmark tools' own logic: input encoding, response checks, result selection, stage times."""
import base64
import csv
import json
import struct
import subprocess
import sys

import numpy as np
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from perf.analyze import choose, measurements, summary
from perf.bench_stages import TARGET_MS
from perf.contract import contract_problem, served_keypoints
from perf.inputs import CHECKOUT, bytes_element
from perf.report import stage_times
from perf.served_vs_bare import served_threads
from rtmo_triton import spec
from rtmo_triton.served.cpus import engine_threads


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
    coco = spec.NUM_KEYPOINTS
    assert contract_problem(response().get, coco) is None
    assert "descending" in contract_problem(response(scores=(0.5, 0.9)).get, coco)
    bad = response()
    bad["BOXES"][0, 0, 0] = np.nan
    assert contract_problem(bad.get, coco) == "non-finite values"
    missing = response()
    del missing["SCORES"]
    assert "SCORES" in contract_problem(missing.get, coco)
    assert "keypoints" in contract_problem(response(j=14).get, coco)


def test_contract_takes_the_keypoint_count_from_the_served_config():
    """A CrowdPose model (14 keypoints) keeps the contract; its count comes from the config's names,
    or from the KEYPOINTS output's dims when the names are absent."""
    crowdpose = spec.KEYPOINT_SETS[14]
    http = {"parameters": {"keypoint_names": {"string_value": ",".join(crowdpose.names)}}}
    assert served_keypoints(http) == 14
    assert contract_problem(response(j=14).get, served_keypoints(http)) is None
    assert "keypoints" in contract_problem(response().get, served_keypoints(http))
    dims_only = {"output": [{"name": "BOXES", "dims": [-1, 4]},
                            {"name": "KEYPOINTS", "dims": ["-1", "17", "2"]}]}
    assert served_keypoints(dims_only) == 17


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


def write_config(folder, name, count, batch, delay_us=0, threads=None):
    config = mc.ModelConfig(name=name, max_batch_size=batch)
    config.instance_group.add(count=count, kind=mc.ModelInstanceGroup.KIND_CPU)
    if delay_us:
        config.dynamic_batching.max_queue_delay_microseconds = delay_us
    if threads is not None:
        config.parameters["intra_op_threads"].string_value = threads
    (folder / name).mkdir(parents=True, exist_ok=True)
    (folder / name / "config.pbtxt").write_text(text_format.MessageToString(config))


def test_results_rows_carry_each_configs_settings_and_each_composing_setting(tmp_path):
    """model-analyzer's exported CSV names the configs; their settings come from its output repository."""
    configs = tmp_path / "output_models"
    write_config(configs, "rtmo_engine_config_0", 2, 8, threads="1")
    write_config(configs, "rtmo_engine_config_1", 1, 8, delay_us=20000, threads="0")
    write_config(configs, "rtmo_preprocess_config_0", 2, 8, delay_us=2000)
    write_config(configs, "rtmo_decode_config_0", 1, 2)
    write_config(configs, "rtmo_config_default", 1, 8)
    write_config(configs, "rtmo_config_3", 1, 2)
    csv_path = tmp_path / "metrics-model-inference.csv"
    composing = "rtmo_preprocess_config_0, rtmo_engine_config_1, rtmo_decode_config_0"
    csv_path.write_text(
        "Model,Batch,Concurrency,Model Config Path,Instance Group,Max Batch Size,Satisfies Constraints,"
        "Throughput (infer/sec),p99 Latency (ms)\n"
        "rtmo_engine,1,2,rtmo_engine_config_0,2:CPU,8,Yes,5.4,415.9\n"
        "rtmo_engine,1,2,rtmo_engine_config_1,1:CPU,8,Yes,4.8,461.9\n"
        f'rtmo,1,4,"rtmo_config_default: {composing}","2:CPU,1:CPU,1:CPU","8,8,2",Yes,6.4,900\n'
        f'rtmo,1,4,"rtmo_config_3: {composing}","2:CPU,1:CPU,1:CPU","8,8,2",Yes,3.5,900\n')
    rows = measurements(csv_path, configs)
    assert [r["max_batch"] for r in rows] == [8, 8, 8, 2]
    assert {k: rows[0][k] for k in ("instances", "max_queue_delay_us", "intra_op_threads")} == \
        {"instances": 2, "max_queue_delay_us": 0, "intra_op_threads": 1}
    engine = rows[3]["composing"]["rtmo_engine_config_1"]
    assert engine == {"instances": 1, "max_batch": 8, "max_queue_delay_us": 20000, "intra_op_threads": 0}
    assert rows[2]["composing"]["rtmo_preprocess_config_0"]["max_queue_delay_us"] == 2000
    engine_choice = {"instances": 2, "max_queue_delay_us": 0, "max_batch": 8, "intra_op_threads": 1}
    assert choose(rows) == {spec.ENGINE_NAME: engine_choice}, "ensemble trials are not tuned settings"
    text = summary([r for r in rows if r["model"] == spec.ENSEMBLE_NAME], "ensemble")
    assert "engine 1×b8 0 thr 20000µs" in text and "Best trial: rtmo_config_default at 6.40" in text


def test_bare_engine_threads_follow_the_served_config(tmp_path):
    """``auto`` resolves as the served engine resolves it; a TensorRT engine config has no threads."""
    for threads, expected in (("auto", engine_threads(2)), ("3", 3), (None, 0)):
        write_config(tmp_path, spec.ENGINE_NAME, 2, 8, threads=threads)
        assert served_threads(tmp_path) == expected


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


def test_bench_stages_writes_every_stage_with_its_target(tmp_path):
    """``make bench-stages`` as typed, at one repeat: every stage is timed and lands in the CSV, the
    targets beside the rows they judge (the tool runs nowhere else in CI, so this keeps it working)."""
    out = tmp_path / "stages.csv"
    subprocess.run([sys.executable, "-m", "perf.bench_stages", "--repeat", "1", "--nms-crowds", "1",
                    "--csv", str(out)], check=True, capture_output=True, cwd=CHECKOUT, timeout=300)
    with out.open() as f:
        rows = list(csv.DictReader(f))
    stages = {r["stage"].strip().split()[0] for r in rows}
    assert stages == {"preprocess", "header", "decode", "letterbox", "nms"}
    assert all(float(r["p50_ms"]) > 0 for r in rows)
    assert {r["stage"]: float(r["target_ms"]) for r in rows if r["target_ms"]} == TARGET_MS
    assert (tmp_path / "engine_bytes.csv").is_file()
