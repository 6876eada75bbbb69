"""The plan's build record and the refusal to serve it on the wrong TensorRT or GPU."""
import json
import subprocess
import sys
from dataclasses import asdict

import pytest

from rtmo_triton.build.trt import compat
from rtmo_triton.build.trt.compat import (
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
    same_tensorrt,
    write_record,
)

RECORD = EngineRecord(tensorrt_version="10.3.0", gpu_name="NVIDIA L4", compute_capability="8.9",
                      precision="fp16", typing="weak", fp32_layers=92, variant="s", input_size=640, topk=100,
                      min_batch=1, opt_batch=4, max_batch=8, onnx_sha256="ab" * 32,
                      built_at="2026-11-25T00:00:00+00:00", input_dtype="uint8")
SAME = Platform("10.3.0.26", "NVIDIA L4", "8.9")
H100 = Platform("10.8.0.43", "NVIDIA H100 80GB HBM3", "9.0")


@pytest.fixture()
def plan(tmp_path):
    path = tmp_path / "model.plan"
    path.write_bytes(b"plan")
    write_record(path, RECORD)
    return path


def test_record_round_trip(tmp_path):
    plan = tmp_path / "model.plan"
    assert write_record(plan, RECORD) == record_path(plan) == tmp_path / "model.plan.json"
    assert read_record(plan) == RECORD
    assert json.loads(record_path(plan).read_text())["compute_capability"] == "8.9"
    assert [p.name for p in tmp_path.iterdir()] == ["model.plan.json"]


def test_record_tolerates_new_fields_but_not_missing_ones(tmp_path):
    plan = tmp_path / "model.plan"
    data = asdict(RECORD)
    record_path(plan).write_text(json.dumps({**data, "written_by": "a later version"}))
    assert read_record(plan) == RECORD
    del data["typing"]  # a record this build never wrote: refused, the plan rebuilt
    record_path(plan).write_text(json.dumps(data))
    with pytest.raises(EngineMismatch, match="not a valid build record"):
        read_record(plan)


@pytest.mark.parametrize("text", ["{not json", "[]", '{"tensorrt_version": "10.3.0"}'])
def test_broken_record_is_a_refusal_not_a_crash(tmp_path, text):
    plan = tmp_path / "model.plan"
    record_path(plan).write_text(text)
    with pytest.raises(EngineMismatch, match="not a valid build record.*make build-engines ENGINE=trt"):
        read_record(plan)


def test_same_platform_is_fine():
    assert check_compat(RECORD, SAME) == ([], [])


def test_tensorrt_versions_compare_by_major_minor_patch():
    assert same_tensorrt("10.5.0", "10.5.0.18") and same_tensorrt("10.5.0.18", "10.5.0.18")
    assert not same_tensorrt("10.5.0", "10.5.1") and not same_tensorrt("10.5.0", "10.6.0.26")


def test_other_tensorrt_is_refused():
    problems, _ = check_compat(RECORD, Platform("10.8.0.43", "NVIDIA L4", "8.9"))
    assert problems == ["TensorRT 10.3.0 built it, this host has 10.8.0.43"]


def test_other_architecture_is_refused_same_architecture_warns():
    problems, warnings = check_compat(RECORD, Platform("10.3.0", "NVIDIA H100 80GB HBM3", "9.0"))
    assert problems == ["built for compute capability 8.9 (NVIDIA L4), "
                        "this GPU is 9.0 (NVIDIA H100 80GB HBM3)"]
    assert warnings == []
    problems, warnings = check_compat(RECORD, Platform("10.3.0", "NVIDIA RTX 4090", "8.9"))
    assert problems == [] and len(warnings) == 1 and "NVIDIA RTX 4090" in warnings[0]


def test_refusal_says_what_was_built_what_is_here_and_what_to_rebuild(plan):
    with pytest.raises(EngineMismatch) as info:
        require_compat(plan, H100)
    message = str(info.value)
    assert message.startswith(f"{plan}: engine built with TensorRT 10.3.0 on sm 8.9 (NVIDIA L4); "
                              "this server has TensorRT 10.8.0.43 on sm 9.0 (NVIDIA H100 80GB HBM3)")
    rebuild = ("Rebuild it on this host with `make build-engines CHECKPOINT=<your checkpoint> ENGINE=trt "
               "PRECISION=fp16 TOPK=100 MAX_BATCH=8`")
    assert rebuild in message, "the same K and batch, or the rebuild serves another model"
    assert require_compat(plan, SAME) == []


def test_plan_without_record_is_refused(tmp_path):
    plan = tmp_path / "model.plan"
    plan.write_bytes(b"plan")
    with pytest.raises(EngineMismatch, match="no build record"):
        require_compat(plan, SAME)


def test_served_check_is_a_no_op_without_a_plan(tmp_path, monkeypatch):
    """The CPU flavour has no plan: the decode model's start-up check must not even query the GPU."""
    def never():
        raise AssertionError("queried the host without a plan")

    monkeypatch.setattr(compat, "current_platform", never)
    assert check_served(tmp_path / "model.plan") == []
    assert check_served(tmp_path / "model.plan", here=never) == []


def test_served_check_with_a_plan(plan):
    assert check_served(plan, here=lambda: SAME) == []
    assert "RTX 4090" in check_served(plan, here=lambda: Platform("10.3.0", "NVIDIA RTX 4090", "8.9"))[0]
    with pytest.raises(EngineMismatch, match="Rebuild it on this host"):
        check_served(plan, here=lambda: H100)


def test_served_check_on_this_cpu_host_is_a_clear_error(plan, monkeypatch):
    monkeypatch.setattr(compat.shutil, "which", lambda name: None)
    monkeypatch.setattr(compat, "_cuda_driver_gpu", lambda: None)
    with pytest.raises(NoPlatform, match="no NVIDIA GPU visible"):
        check_served(plan)


# --- the host query ------------------------------------------------------------------------


def smi(stdout: str, returncode: int = 0, stderr: str = ""):
    def run(cmd, **kwargs):
        assert cmd[1:] == ["--query-gpu=name,compute_cap", "--format=csv,noheader"]
        return subprocess.CompletedProcess(cmd, returncode, stdout, stderr)
    return run


def test_gpu_from_nvidia_smi(monkeypatch):
    monkeypatch.setattr(compat.shutil, "which", lambda name: "/usr/bin/nvidia-smi")
    assert compat.query_gpu(smi("NVIDIA L4, 8.9\nNVIDIA L4, 8.9\n")) == ("NVIDIA L4", "8.9")
    assert compat.query_gpu(smi("NVIDIA H100 80GB HBM3, 9.0\n")) == ("NVIDIA H100 80GB HBM3", "9.0")


def test_gpu_query_failures(monkeypatch):
    monkeypatch.setattr(compat, "_cuda_driver_gpu", lambda: None)
    monkeypatch.setattr(compat.shutil, "which", lambda name: "/usr/bin/nvidia-smi")
    with pytest.raises(NoPlatform, match="Field \"compute_cap\" is not a valid field"):
        compat.query_gpu(smi("", 2, 'Field "compute_cap" is not a valid field to query.'))
    with pytest.raises(NoPlatform, match="no GPU listed"):
        compat.query_gpu(smi(""))

    def hangs(cmd, **kwargs):
        raise subprocess.TimeoutExpired(cmd, 30)
    with pytest.raises(NoPlatform, match="nvidia-smi failed"):
        compat.query_gpu(hangs)
    monkeypatch.setattr(compat.shutil, "which", lambda name: None)
    with pytest.raises(NoPlatform, match=r"no NVIDIA GPU visible \(nvidia-smi not found\)"):
        compat.query_gpu()


def test_gpu_from_the_cuda_driver_when_nvidia_smi_cannot_tell(monkeypatch):
    monkeypatch.setattr(compat.shutil, "which", lambda name: None)
    monkeypatch.setattr(compat, "_cuda_driver_gpu", lambda: ("Tesla T4", "7.5"))
    assert compat.query_gpu() == ("Tesla T4", "7.5")


def test_tensorrt_versions_module_and_container(monkeypatch):
    monkeypatch.setenv("TRT_VERSION", "10.5.0.18")
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # no Python module: the container's variable tells
    assert compat.tensorrt_version() == compat.served_tensorrt_version() == "10.5.0.18"
    assert current_platform(gpu=lambda: ("NVIDIA A10G", "8.6")) == Platform("10.5.0.18", "NVIDIA A10G", "8.6")
    fake = type(sys)("tensorrt")
    fake.__version__ = "10.8.0.43"
    monkeypatch.setitem(sys.modules, "tensorrt", fake)
    assert compat.tensorrt_version() == "10.8.0.43"  # what builds: the module
    assert compat.served_tensorrt_version() == "10.5.0.18"  # what Triton loads plans with: the container's


def test_no_tensorrt_anywhere(monkeypatch):
    monkeypatch.delenv("TRT_VERSION", raising=False)
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    monkeypatch.setattr(compat.ctypes, "CDLL", lambda name: (_ for _ in ()).throw(OSError(name)))
    with pytest.raises(NoPlatform, match="TensorRT not found"):
        compat.tensorrt_version()
    with pytest.raises(NoPlatform, match="TensorRT not found"):
        compat.served_tensorrt_version()


@pytest.mark.parametrize(("encoded", "version"),
                         [(100500, "10.5.0"), (100803, "10.8.3"), (101300, "10.13.0")])
def test_version_from_libnvinfer(monkeypatch, encoded, version):
    monkeypatch.delenv("TRT_VERSION", raising=False)
    lib = type("Lib", (), {"getInferLibVersion": staticmethod(lambda: encoded)})
    monkeypatch.setattr(compat.ctypes, "CDLL", lambda name: lib)
    assert compat.library_tensorrt_version() == version
