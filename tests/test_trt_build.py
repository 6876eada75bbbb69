"""The TensorRT plan build, driven against a minimal stand-in of the ``tensorrt`` module.

TensorRT cannot exist on a machine without an NVIDIA GPU, so these tests
check what our code asks of TensorRT's API (profile, precision flag,
workspace, timing cache, atomic plan, record, errors); the real build is
``test_real_build_on_a_gpu`` (marked ``gpu``), which skips without one.
"""
from __future__ import annotations

import enum
import json
import os
import subprocess
import sys
import types
from pathlib import Path

import onnx
import pytest

from rtmo_triton import spec
from rtmo_triton.build.trt import build as trt_build
from rtmo_triton.build.trt.build import BuildError, batch_profile, build_plan
from rtmo_triton.build.trt.compat import Platform, read_record, record_path

HOST = Platform("10.5.0", "NVIDIA L4", "8.9")


def fake_tensorrt(calls: dict, parse_ok: bool = True, build_ok: bool = True, cache_fits: bool = True,
                  fp16_flag: bool = True, progress_monitor: bool = True) -> types.ModuleType:
    """Just the API surface ``build_plan`` uses; every call of interest lands in ``calls``."""
    trt = types.ModuleType("tensorrt")
    trt.__version__ = HOST.tensorrt_version

    class ILogger:
        Severity = enum.Enum("Severity", "INTERNAL_ERROR ERROR WARNING INFO VERBOSE")

        def __init__(self):
            pass

    class IProgressMonitor:
        def __init__(self):
            pass

    class Profile:
        def set_shape(self, name, *shapes):
            calls["profile"] = (name, shapes)

    class Cache:
        def __init__(self, data):
            self.data = data

        def serialize(self):
            return self.data + b"+tuned"

    class Config:
        progress_monitor = None

        def set_memory_pool_limit(self, pool, size):
            calls["workspace"] = (pool, size)

        def set_flag(self, flag):
            calls.setdefault("flags", []).append(flag)

        def add_optimization_profile(self, profile):
            calls["profiles"] = calls.get("profiles", 0) + 1

        def create_timing_cache(self, data):
            calls.setdefault("cache_in", []).append(data)
            return Cache(data)

        def set_timing_cache(self, cache, ignore_mismatch):
            if cache.data and not cache_fits:
                return False
            self.cache = cache
            return True

        def get_timing_cache(self):
            return self.cache

    class Tensor:
        def __init__(self, name, dtype, shape):
            self.name, self.dtype, self.shape = name, dtype, shape

    class Network:
        num_inputs, num_outputs = 1, len(spec.ENGINE_OUTPUTS)

        def get_input(self, i):
            return Tensor(spec.ENGINE_INPUT, "DataType.UINT8", (-1, 3, 640, 640))

        def get_output(self, i):
            return Tensor(spec.ENGINE_OUTPUTS[i], "DataType.FLOAT", (-1, 100))

    class Builder:
        def __init__(self, logger):
            self.logger = logger

        def create_network(self, flags):
            calls["network_flags"] = flags
            return Network()

        def create_builder_config(self):
            return Config()

        def create_optimization_profile(self):
            return Profile()

        def build_serialized_network(self, network, config):
            monitor = calls["monitor"] = config.progress_monitor
            if monitor is not None:
                monitor.phase_start("Building engine", None, 2)
                monitor.phase_start("Tactic timing", "Building engine", 40)
                calls["kept_going"] = monitor.step_complete("Building engine", 0)
                monitor.phase_finish("Tactic timing")
                monitor.phase_finish("Building engine")
            self.logger.log(ILogger.Severity.WARNING, "a warning for stderr")
            self.logger.log(ILogger.Severity.VERBOSE, "detail for the log only")
            return b"PLAN-BYTES" if build_ok else None

    class ParserError:
        def node(self):
            return 7

        def node_name(self):
            return "/head/Foo"

        def node_operator(self):
            return "Foo"

        def desc(self):
            return "unsupported operator"

    class OnnxParser:
        num_errors = 0 if parse_ok else 1

        def __init__(self, network, logger):
            pass

        def parse_from_file(self, path):
            calls["parsed"] = path
            return parse_ok

        def get_error(self, i):
            return ParserError()

    trt.ILogger, trt.Builder, trt.OnnxParser = ILogger, Builder, OnnxParser
    if progress_monitor:
        trt.IProgressMonitor = IProgressMonitor
    trt.MemoryPoolType = types.SimpleNamespace(WORKSPACE="WORKSPACE")
    trt.BuilderFlag = types.SimpleNamespace(**({"FP16": "FP16"} if fp16_flag else {}))
    return trt


def write_graph(path: Path, metadata: dict[str, str], outputs=spec.ENGINE_OUTPUTS) -> Path:
    """A tiny graph with our tensor names and the metadata ``export_onnx`` writes."""
    h, size = onnx.helper, int(metadata.get("input_size", 640))
    graph = h.make_graph(
        [h.make_node("Cast", [spec.ENGINE_INPUT], [n], to=onnx.TensorProto.FLOAT) for n in outputs], "g",
        [h.make_tensor_value_info(spec.ENGINE_INPUT, onnx.TensorProto.UINT8, ["batch", 3, size, size])],
        [h.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None) for name in outputs])
    model = h.make_model(graph)
    h.set_model_props(model, metadata)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


@pytest.fixture()
def onnx_file(tmp_path):
    path = write_graph(tmp_path / "rtmo_engine" / "model.onnx",
                       {"variant": "s", "input_size": "640", "topk": "100", "input_dtype": "uint8"})
    (tmp_path / "rtmo_engine" / "1").mkdir()
    return path


@pytest.fixture()
def with_fake(monkeypatch):
    monkeypatch.delenv("TRT_VERSION", raising=False)
    monkeypatch.setattr(trt_build, "library_tensorrt_version", lambda: None)

    def install(**kwargs):
        calls: dict = {}
        monkeypatch.setitem(sys.modules, "tensorrt", fake_tensorrt(calls, **kwargs))
        monkeypatch.setattr(trt_build, "current_platform", lambda: HOST)
        return calls
    return install


# --- the batch profile -------------------------------------------------------------


def test_profile_shapes():
    assert batch_profile(1, 4, 8, 640) == ((1, 3, 640, 640), (4, 3, 640, 640), (8, 3, 640, 640))
    assert batch_profile(1, 1, 1, 416)[2] == (1, 3, 416, 416)


@pytest.mark.parametrize(("args", "message"), [
    ((0, 1, 1, 640), "min_batch must be at least 1"),
    ((2, 1, 8, 640), r"opt_batch \(1\) is below min_batch \(2\)"),
    ((1, 9, 8, 640), r"max_batch \(8\) is below opt_batch \(9\)"),
    ((1, 4.0, 8, 640), "opt_batch must be an integer"),
    ((1, True, 8, 640), "opt_batch must be an integer"),
    ((1, 4, 8, 650), "input size 650 is not a positive multiple of 32"),
])
def test_profile_refuses(args, message):
    with pytest.raises(BuildError, match=message):
        batch_profile(*args)


# --- the build against the stand-in ----------------------------------------------------


@pytest.mark.parametrize("precision", ["fp16", "fp32"])
def test_build_asks_tensorrt_for_the_right_engine(with_fake, onnx_file, precision, capsys):
    calls = with_fake()
    plan = onnx_file.parent / "1" / "model.plan"
    result = build_plan(onnx_file, plan, precision=precision, opt_batch=4, max_batch=8, workspace_gib=2)
    assert calls["parsed"] == str(onnx_file) and calls["network_flags"] == 0  # explicit batch (TensorRT 10)
    assert calls["profile"] == (spec.ENGINE_INPUT, ((1, 3, 640, 640), (4, 3, 640, 640), (8, 3, 640, 640)))
    assert calls["profiles"] == 1
    assert calls["workspace"] == ("WORKSPACE", 2 << 30)
    assert calls.get("flags", []) == (["FP16"] if precision == "fp16" else [])
    assert plan.read_bytes() == b"PLAN-BYTES"
    assert sorted(p.name for p in plan.parent.iterdir()) == ["model.plan", "model.plan.json"]  # no leftovers
    record = read_record(plan)
    assert (record.precision, record.min_batch, record.opt_batch, record.max_batch) == (precision, 1, 4, 8)
    assert (record.variant, record.input_size, record.topk, record.input_dtype) == ("s", 640, 100, "uint8")
    assert record.platform == HOST and record == result.record
    assert record.onnx_sha256 == __import__("hashlib").sha256(onnx_file.read_bytes()).hexdigest()
    out = capsys.readouterr()
    assert "Building engine (2 steps)" in out.out and "Tactic timing (40 steps)" in out.out
    assert "Building engine: step 1/2" in out.out and calls["kept_going"] is True
    assert "a warning for stderr" in out.err and "detail for the log only" not in out.err
    log = result.log.read_text()
    assert result.log == onnx_file.parent / "build.log"
    assert "detail for the log only" in log and "a warning for stderr" in log
    assert "network I/O (kept as exported): input DataType.UINT8" in log


def test_timing_cache_is_kept_between_builds(with_fake, onnx_file):
    plan = onnx_file.parent / "1" / "model.plan"
    calls = with_fake()
    build_plan(onnx_file, plan)
    assert calls["cache_in"] == [b""]
    cache = onnx_file.parent / "timing.cache"
    assert cache.read_bytes() == b"+tuned"
    calls = with_fake()
    build_plan(onnx_file, plan)
    assert calls["cache_in"] == [b"+tuned"]
    assert cache.read_bytes() == b"+tuned+tuned"


def test_a_foreign_timing_cache_is_replaced_not_fatal(with_fake, onnx_file, capsys):
    cache = onnx_file.parent / "elsewhere.cache"
    cache.write_bytes(b"from-another-gpu")
    calls = with_fake(cache_fits=False)
    build_plan(onnx_file, onnx_file.parent / "1" / "model.plan", timing_cache=cache)
    assert calls["cache_in"] == [b"from-another-gpu", b""]
    assert "from another TensorRT or GPU" in capsys.readouterr().err
    assert cache.read_bytes() == b"+tuned"


def test_parse_errors_name_the_node(with_fake, onnx_file):
    with_fake(parse_ok=False)
    with pytest.raises(BuildError, match=r"node 7 \(/head/Foo, Foo\): unsupported operator"):
        build_plan(onnx_file, onnx_file.parent / "1" / "model.plan")


def test_failed_build_leaves_the_old_plan_and_record(with_fake, onnx_file):
    plan = onnx_file.parent / "1" / "model.plan"
    plan.write_bytes(b"OLD")
    record_path(plan).write_text("{}")
    with_fake(build_ok=False)
    with pytest.raises(BuildError, match="failed to build"):
        build_plan(onnx_file, plan)
    assert plan.read_bytes() == b"OLD" and record_path(plan).read_text() == "{}"
    assert sorted(p.name for p in plan.parent.iterdir()) == ["model.plan", "model.plan.json"]


def test_without_a_progress_monitor_a_heartbeat_runs(with_fake, onnx_file):
    calls = with_fake(progress_monitor=False)
    build_plan(onnx_file, onnx_file.parent / "1" / "model.plan")
    assert calls["monitor"] is None


def test_bad_arguments_fail_before_tensorrt_is_touched(with_fake, onnx_file):
    calls = with_fake()
    plan = onnx_file.parent / "1" / "model.plan"
    with pytest.raises(BuildError, match=r"max_batch \(4\) is below opt_batch \(8\)"):
        build_plan(onnx_file, plan, opt_batch=8, max_batch=4)
    with pytest.raises(BuildError, match="precision 'int8'"):
        build_plan(onnx_file, plan, precision="int8")
    with pytest.raises(BuildError, match="workspace_gib must be positive"):
        build_plan(onnx_file, plan, workspace_gib=0)
    assert calls == {}


def test_tensorrt_without_fp16_flag_refuses_fp16(with_fake, onnx_file):
    with_fake(fp16_flag=False)
    with pytest.raises(BuildError, match="no FP16 builder flag.*PRECISION=fp32"):
        build_plan(onnx_file, onnx_file.parent / "1" / "model.plan")


def test_graph_not_from_our_export_is_refused(with_fake, tmp_path):
    with_fake()
    bare = write_graph(tmp_path / "bare.onnx", {"variant": "s"})
    with pytest.raises(BuildError, match="lacks the metadata input_size, topk"):
        build_plan(bare, tmp_path / "1" / "model.plan")
    other = write_graph(tmp_path / "other.onnx", {"variant": "s", "input_size": "640", "topk": "100"},
                        outputs=("scores",))
    with pytest.raises(BuildError, match="expected"):
        build_plan(other, tmp_path / "1" / "model.plan")
    with pytest.raises(BuildError, match="ONNX file not found"):
        build_plan(tmp_path / "missing.onnx", tmp_path / "1" / "model.plan")


def test_without_tensorrt_the_error_says_where_to_build(monkeypatch, onnx_file):
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    with pytest.raises(BuildError, match="not installed.*NVIDIA's Triton container.*ENGINE=onnx"):
        build_plan(onnx_file, onnx_file.parent / "1" / "model.plan")


# --- the CLI, in a fresh interpreter where ``import tensorrt`` fails whatever is installed --------


def run_cli(*args: str) -> subprocess.CompletedProcess:
    code = ("import sys; sys.modules['tensorrt'] = None; "
            "from rtmo_triton.build.trt.__main__ import main; sys.exit(main())")
    env = {**os.environ, "PATH": "/nonexistent"}  # no nvidia-smi either
    env.pop("TRT_VERSION", None)
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, env=env,
                          timeout=120)


def test_cli_build_without_tensorrt_exits_2_with_one_line(onnx_file):
    out = run_cli("build", "--onnx", str(onnx_file), "--plan", str(onnx_file.parent / "1" / "model.plan"))
    assert out.returncode == 2, out.stderr
    assert "tensorrt Python module is not installed" in out.stderr and "ENGINE=onnx" in out.stderr
    assert "Traceback" not in out.stderr and len(out.stderr.strip().splitlines()) == 1
    assert not (onnx_file.parent / "1" / "model.plan").exists()


def test_cli_argument_errors(onnx_file):
    plan = str(onnx_file.parent / "1" / "model.plan")
    bads = (["--precision", "int4"], ["--max-batch", "0"], ["--opt-batch", "x"], ["--workspace-gib", "-1"])
    for bad in bads:
        out = run_cli("build", "--onnx", str(onnx_file), "--plan", plan, *bad)
        assert out.returncode == 2 and "usage:" in out.stderr and "Traceback" not in out.stderr, bad
    missing = run_cli("build", "--onnx", "/nonexistent.onnx", "--plan", "x")
    assert missing.returncode == 2 and "ONNX file not found" in missing.stderr
    assert run_cli("check", "--plan", "/nonexistent.plan").returncode == 2
    assert run_cli("flavour", "--engine", "tflite").returncode == 2


def test_cli_check_without_gpu(tmp_path):
    plan = tmp_path / "model.plan"
    plan.write_bytes(b"plan")
    out = run_cli("check", "--plan", str(plan))
    assert out.returncode == 1 and "no build record" in out.stderr  # refused before any GPU query
    record_path(plan).write_text(json.dumps({
        "tensorrt_version": "10.5.0", "gpu_name": "NVIDIA L4", "compute_capability": "8.9",
        "precision": "fp16",
        "variant": "s", "input_size": 640, "topk": 100, "min_batch": 1, "opt_batch": 8, "max_batch": 8,
        "onnx_sha256": "0" * 64, "built_at": "2026-11-25T00:00:00+00:00"}))
    out = run_cli("check", "--plan", str(plan))
    assert out.returncode == 2 and "no NVIDIA GPU visible" in out.stderr and "Traceback" not in out.stderr


def test_cli_flavour_without_gpu():
    out = run_cli("flavour")
    assert out.returncode == 0 and out.stdout.startswith("onnx: auto: no NVIDIA GPU visible")
    out = run_cli("flavour", "--engine", "trt")
    assert out.returncode == 2 and "ENGINE=trt needs an NVIDIA GPU with TensorRT" in out.stderr
    assert "ENGINE=onnx" in out.stderr and "Traceback" not in out.stderr
    assert run_cli("flavour", "--engine", "onnx").stdout.strip() == "onnx: requested (ENGINE=onnx)"


# --- on a GPU host --------------------------------------------------------------------------


def _gpu_with_tensorrt() -> str | None:
    from rtmo_triton.build.flavour import gpu_missing, tensorrt_missing

    return gpu_missing() or tensorrt_missing()


@pytest.mark.gpu
def test_real_build_on_a_gpu(tmp_path):
    """A real plan from a tiny graph with our tensor names; then the host check accepts it."""
    missing = _gpu_with_tensorrt()
    if missing:
        pytest.skip(f"needs an NVIDIA GPU with TensorRT: {missing}")
    from rtmo_triton.build.trt.compat import require_compat

    path = write_graph(tmp_path / "rtmo_engine" / "model.onnx",
                       {"variant": "t", "input_size": "416", "topk": "100", "input_dtype": "uint8"})
    plan = tmp_path / "rtmo_engine" / "1" / "model.plan"
    result = build_plan(path, plan, precision="fp16", opt_batch=2, max_batch=4, workspace_gib=1)
    assert plan.stat().st_size > 0 and result.timing_cache.is_file()
    assert require_compat(plan) == []
