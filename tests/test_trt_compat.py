"""The plan's build record and the refusal to serve it on the wrong TensorRT or GPU."""
import pytest

from rtmo_triton.trt import compat
from rtmo_triton.trt.compat import (
    EngineMismatch,
    EngineRecord,
    NoPlatform,
    Platform,
    check_compat,
    check_served,
    current_platform,
    read_record,
    record_path,
    require_compat,
    write_record,
)

RECORD = EngineRecord(tensorrt_version="10.3.0.26", gpu_name="NVIDIA L4", compute_capability="8.9",
                      precision="fp16", variant="s", input_size=640, topk=100, min_batch=1, opt_batch=8,
                      max_batch=8, onnx_sha256="ab" * 32, built_at="2026-11-25T00:00:00+00:00")
SAME = Platform("10.3.0.26", "NVIDIA L4", "8.9")


def test_record_round_trip(tmp_path):
    plan = tmp_path / "model.plan"
    assert write_record(plan, RECORD) == record_path(plan) == tmp_path / "model.plan.json"
    assert read_record(plan) == RECORD


def test_same_platform_is_fine():
    assert check_compat(RECORD, SAME) == ([], [])


def test_other_tensorrt_is_refused():
    problems, _ = check_compat(RECORD, Platform("10.8.0.43", "NVIDIA L4", "8.9"))
    assert problems == ["TensorRT 10.3.0.26 built it, this host has 10.8.0.43"]


def test_tensorrt_build_number_does_not_matter():
    assert check_compat(RECORD, Platform("10.3.0.30", "NVIDIA L4", "8.9"))[0] == []


def test_other_architecture_is_refused_same_architecture_warns():
    problems, _ = check_compat(RECORD, Platform("10.3.0.26", "NVIDIA H100 80GB HBM3", "9.0"))
    assert problems and "compute capability 8.9 (NVIDIA L4)" in problems[0] and "9.0" in problems[0]
    problems, warnings = check_compat(RECORD, Platform("10.3.0.26", "NVIDIA RTX 4090", "8.9"))
    assert problems == [] and "NVIDIA RTX 4090" in warnings[0]


def test_refusal_says_what_to_rebuild(tmp_path):
    plan = tmp_path / "model.plan"
    plan.write_bytes(b"plan")
    write_record(plan, RECORD)
    with pytest.raises(EngineMismatch, match=r"make build-engines CHECKPOINT=.* ENGINE=trt PRECISION=fp16"):
        require_compat(plan, Platform("10.8.0.43", "NVIDIA H100", "9.0"))
    assert require_compat(plan, SAME) == []


def test_plan_without_record_is_refused(tmp_path):
    plan = tmp_path / "model.plan"
    plan.write_bytes(b"plan")
    with pytest.raises(EngineMismatch, match="no build record"):
        require_compat(plan, SAME)


def test_served_check_is_a_no_op_without_a_plan(tmp_path):
    """The CPU flavour has no plan: the decode model's start-up check must not touch the GPU query."""
    assert check_served(tmp_path / "model.plan") == []


def test_platform_query_from_nvidia_smi_and_container_env(monkeypatch):
    monkeypatch.setenv("TRT_VERSION", "10.5.0.18")
    monkeypatch.setitem(__import__("sys").modules, "tensorrt", None)  # no Python module: the env var tells
    assert compat.tensorrt_version() == "10.5.0.18"
    here = current_platform(gpu=lambda: ("NVIDIA A10G", "8.6"))
    assert here == Platform("10.5.0.18", "NVIDIA A10G", "8.6")


def test_no_tensorrt_anywhere(monkeypatch):
    monkeypatch.delenv("TRT_VERSION", raising=False)
    monkeypatch.setitem(__import__("sys").modules, "tensorrt", None)
    with pytest.raises(NoPlatform, match="TensorRT not found"):
        compat.tensorrt_version()


def test_no_gpu(monkeypatch):
    monkeypatch.setattr(compat.shutil, "which", lambda name: None)
    with pytest.raises(NoPlatform, match="nvidia-smi not found"):
        compat.query_gpu()
