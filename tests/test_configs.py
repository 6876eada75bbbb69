"""The rendered configs: one source for both engine flavours, every setting reaching its model."""
import json
from dataclasses import replace

import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from rtmo_triton import spec
from rtmo_triton.build.configs import RepositorySpec, Scheduling, load_scheduling, render_all, write_configs
from rtmo_triton.served.params import read_parameters

BASE = RepositorySpec(variant="s", input_size=640, num_keypoints=17, topk=100, max_batch=8,
                      score_thr=0.2, nms_thr=0.5, max_pixels=1234, provenance={"random_weights": "true"})


def parsed(s: RepositorySpec) -> dict[str, mc.ModelConfig]:
    return {name: text_format.Parse(text, mc.ModelConfig()) for name, text in render_all(s).items()}


def params(config: mc.ModelConfig) -> dict[str, str]:
    return {k: v.string_value for k, v in config.parameters.items()}


def test_flavours_differ_only_in_the_engine():
    onnx, trt = parsed(BASE), parsed(replace(BASE, flavour="trt"))
    for name in (spec.ENSEMBLE_NAME, spec.PREPROCESS_NAME, spec.DECODE_NAME):
        if name == spec.ENSEMBLE_NAME:
            for c in (onnx[name], trt[name]):
                del c.parameters["engine_flavour"]
        assert onnx[name] == trt[name], name
    e_onnx, e_trt = onnx[spec.ENGINE_NAME], trt[spec.ENGINE_NAME]
    assert e_onnx.backend == "python" and not e_onnx.platform
    assert e_trt.platform == "tensorrt_plan" and e_trt.default_model_filename == "model.plan"
    assert e_trt.instance_group[0].kind == mc.ModelInstanceGroup.KIND_GPU
    assert list(e_onnx.input) == list(e_trt.input) and list(e_onnx.output) == list(e_trt.output)


def test_public_contract_of_the_ensemble():
    c = parsed(BASE)[spec.ENSEMBLE_NAME]
    assert c.platform == "ensemble" and c.max_batch_size >= 8
    assert [(i.name, i.data_type, list(i.dims)) for i in c.input] == [("IMAGE", mc.TYPE_STRING, [1])]
    assert [(o.name, o.data_type, list(o.dims)) for o in c.output] == [
        ("NUM_PEOPLE", mc.TYPE_INT32, [1]), ("BOXES", mc.TYPE_FP32, [-1, 4]), ("SCORES", mc.TYPE_FP32, [-1]),
        ("KEYPOINTS", mc.TYPE_FP32, [-1, 17, 2]), ("KEYPOINT_SCORES", mc.TYPE_FP32, [-1, 17])]
    p = params(c)
    assert p["keypoint_names"].split(",") == list(spec.COCO.names)
    assert p["skeleton"] == ",".join(f"{a}-{b}" for a, b in spec.COCO.skeleton)
    assert p["random_weights"] == "true" and p["topk"] == "100"


def test_steps_connect_every_tensor():
    configs = parsed(BASE)
    produced = {spec.ENSEMBLE_INPUT}
    for step in configs[spec.ENSEMBLE_NAME].ensemble_scheduling.step:
        model = configs[step.model_name]
        assert set(step.input_map) == {i.name for i in model.input}, step.model_name
        assert set(step.input_map.values()) <= produced, step.model_name
        assert set(step.output_map) <= {o.name for o in model.output}, step.model_name
        produced |= set(step.output_map.values())
    assert set(spec.ENSEMBLE_OUTPUTS) <= produced


def test_settings_reach_their_models():
    c = parsed(BASE)
    assert params(c[spec.DECODE_NAME]) == {"score_thr": "0.2", "nms_thr": "0.5", "num_keypoints": "17"}
    assert params(c[spec.PREPROCESS_NAME]) == {"input_size": "640", "max_pixels": "1234"}
    engine_out = {o.name: list(o.dims) for o in c[spec.ENGINE_NAME].output}
    assert engine_out == {"scores": [100], "boxes": [100, 4], "kpt_vis": [100, 17],
                          "x_logits": [100, 17, 192], "y_logits": [100, 17, 256]}
    assert all(m.max_batch_size == 8 for m in c.values())


def test_crowdpose_checkpoints_serve_14_keypoints():
    c = parsed(replace(BASE, num_keypoints=14))
    kpts = next(o for o in c[spec.ENSEMBLE_NAME].output if o.name == "KEYPOINTS")
    assert list(kpts.dims) == [-1, 14, 2]
    assert params(c[spec.ENSEMBLE_NAME])["keypoint_dataset"] == "crowdpose"


def test_tuned_file_overrides_defaults(tmp_path):
    tuned = tmp_path / "tuned.json"
    engine = {"instances": 3, "max_queue_delay_us": 700, "max_batch": 16}
    tuned.write_text(json.dumps({spec.ENGINE_NAME: engine, "not_a_model": {"instances": 9}}))
    sched = load_scheduling(tuned)
    assert sched[spec.ENGINE_NAME] == Scheduling(instances=3, max_queue_delay_us=700, max_batch=16)
    c = parsed(replace(BASE, scheduling=sched))[spec.ENGINE_NAME]
    assert c.max_batch_size == 16 and c.instance_group[0].count == 3
    assert c.dynamic_batching.max_queue_delay_microseconds == 700
    assert "not_a_model" not in sched


def test_engine_threads_come_from_the_tuned_file_unless_given(tmp_path):
    tuned = tmp_path / "tuned.json"
    tuned.write_text(json.dumps({spec.ENGINE_NAME: {"instances": 2, "intra_op_threads": 1}}))
    sched = load_scheduling(tuned)
    threads = {t: params(parsed(replace(BASE, scheduling=sched, engine_threads=t))[spec.ENGINE_NAME])
               ["intra_op_threads"] for t in (None, 0, 3)}
    assert threads == {None: "1", 0: "0", 3: "3"}
    untuned = params(parsed(BASE)[spec.ENGINE_NAME])["intra_op_threads"]
    assert untuned == spec.AUTO_THREADS


def test_misspelt_tuned_setting_is_an_error(tmp_path):
    tuned = tmp_path / "tuned.json"
    tuned.write_text(json.dumps({spec.ENGINE_NAME: {"instance": 2}}))
    with pytest.raises(ValueError, match="unknown setting.*instance"):
        load_scheduling(tuned)


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="flavour"):
        replace(BASE, flavour="tensorflow")
    with pytest.raises(ValueError, match="max batch"):
        replace(BASE, max_batch=0)
    with pytest.raises(ValueError, match="thresholds"):
        replace(BASE, score_thr=1.5)


def test_written_files_and_python_side_parameters(tmp_path):
    written = write_configs(tmp_path, BASE)
    assert {p.parent.name for p in written} == {spec.ENSEMBLE_NAME, spec.PREPROCESS_NAME, spec.ENGINE_NAME,
                                                spec.DECODE_NAME}
    as_json = json.dumps({"parameters": {"score_thr": {"string_value": "0.2"}}})  # what initialize() gets
    assert read_parameters(as_json) == {"score_thr": "0.2"}


def test_gpu_preprocess_models_run_beside_the_engine_and_take_device_tensors():
    """``PREPROCESS=gpu``: the same tensors and ensemble; the preprocess and decode models run where the
    engine does, take their inputs without a host copy and say they need PyTorch."""
    for flavour, device, kind in (("trt", "cuda", mc.ModelInstanceGroup.KIND_GPU),
                                  ("torch", "cuda", mc.ModelInstanceGroup.KIND_GPU),
                                  ("onnx", "cpu", mc.ModelInstanceGroup.KIND_CPU)):
        cpu = parsed(replace(BASE, flavour=flavour, engine_device=device))
        gpu = parsed(replace(BASE, flavour=flavour, engine_device=device, preprocess="gpu"))
        assert params(gpu[spec.ENSEMBLE_NAME])[spec.Param.PREPROCESS] == "gpu"
        assert params(cpu[spec.ENSEMBLE_NAME])[spec.Param.PREPROCESS] == "cpu"
        for name in (spec.PREPROCESS_NAME, spec.DECODE_NAME):
            got, was = gpu[name], cpu[name]
            assert got.instance_group[0].kind == kind, (flavour, name)
            assert was.instance_group[0].kind == mc.ModelInstanceGroup.KIND_CPU
            assert params(got)[spec.Param.NEEDS_TORCH] == spec.YES
            assert spec.Param.NEEDS_TORCH not in params(was)
            assert params(got)["FORCE_CPU_ONLY_INPUT_TENSORS"] == spec.NO
            assert spec.Param.JPEG_DECODER not in params(was)
            assert list(got.input) == list(was.input) and list(got.output) == list(was.output)
        assert gpu[spec.ENGINE_NAME] == cpu[spec.ENGINE_NAME]
        assert params(gpu[spec.PREPROCESS_NAME])[spec.Param.JPEG_DECODER] == spec.DEFAULT_JPEG_DECODER
    picked = parsed(replace(BASE, preprocess="gpu", jpeg_decoder="nvimgcodec"))
    assert params(picked[spec.PREPROCESS_NAME])[spec.Param.JPEG_DECODER] == "nvimgcodec"
    with pytest.raises(ValueError, match="preprocess"):
        replace(BASE, preprocess="tpu")
    with pytest.raises(ValueError, match="JPEG decoder"):
        replace(BASE, preprocess="gpu", jpeg_decoder="libjpeg")
