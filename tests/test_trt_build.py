"""The TensorRT plan build, driven against a minimal stand-in of the ``tensorrt`` module.

TensorRT cannot exist on a machine without an NVIDIA GPU, so these tests
check what our code asks of TensorRT's API (profile, precision flag,
workspace, timing cache, atomic plan, record, errors); the real build runs
on a GPU host (README, "Verified where").
"""
from __future__ import annotations

import enum
import subprocess
import sys
import types

import onnx
import pytest

from rtmo_triton import spec
from rtmo_triton.trt import build as trt_build
from rtmo_triton.trt.build import BuildError, batch_profile, build_plan
from rtmo_triton.trt.compat import Platform, read_record

HOST = Platform("10.5.0.18", "NVIDIA L4", "8.9")


def fake_tensorrt(calls: dict, parse_ok: bool = True, build_ok: bool = True) -> types.ModuleType:
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
            calls["cache_in"] = data
            return Cache(data)

        def set_timing_cache(self, cache, ignore_mismatch):
            self.cache = cache

        def get_timing_cache(self):
            return self.cache

    class Builder:
        def __init__(self, logger):
            self.logger = logger

        def create_network(self, flags):
            return object()

        def create_builder_config(self):
            return Config()

        def create_optimization_profile(self):
            return Profile()

        def build_serialized_network(self, network, config):
            calls["monitor"] = config.progress_monitor
            config.progress_monitor.phase_start("Building engine", None, 3)
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

    trt.ILogger, trt.IProgressMonitor = ILogger, IProgressMonitor
    trt.Builder, trt.OnnxParser = Builder, OnnxParser
    trt.MemoryPoolType = types.SimpleNamespace(WORKSPACE="WORKSPACE")
    trt.BuilderFlag = types.SimpleNamespace(FP16="FP16")
    return trt


@pytest.fixture()
def onnx_file(tmp_path):
    """A tiny stand-in graph carrying the metadata our export writes."""
    h, f32 = onnx.helper, onnx.TensorProto.FLOAT
    graph = h.make_graph([h.make_node("Identity", ["input"], ["scores"])], "g",
                         [h.make_tensor_value_info("input", f32, None)],
                         [h.make_tensor_value_info("scores", f32, None)])
    model = onnx.helper.make_model(graph)
    onnx.helper.set_model_props(model, {"variant": "s", "input_size": "640", "topk": "100"})
    path = tmp_path / "rtmo_engine" / "model.onnx"
    path.parent.mkdir()
    onnx.save(model, str(path))
    (tmp_path / "rtmo_engine" / "1").mkdir()
    return path


@pytest.fixture()
def with_fake(monkeypatch):
    def install(**kwargs):
        calls: dict = {}
        monkeypatch.setitem(sys.modules, "tensorrt", fake_tensorrt(calls, **kwargs))
        monkeypatch.setattr(trt_build, "current_platform", lambda: HOST)
        return calls
    return install


def test_profile_shapes_and_order():
    assert batch_profile(1, 4, 8, 640) == ((1, 3, 640, 640), (4, 3, 640, 640), (8, 3, 640, 640))
    for bad in ((0, 1, 1), (2, 1, 8), (1, 9, 8)):
        with pytest.raises(BuildError, match="1 ≤ min ≤ opt ≤ max"):
            batch_profile(*bad, 640)


@pytest.mark.parametrize("precision", ["fp16", "fp32"])
def test_build_asks_tensorrt_for_the_right_engine(with_fake, onnx_file, precision, capsys):
    calls = with_fake()
    plan = onnx_file.parent / "1" / "model.plan"
    result = build_plan(onnx_file, plan, precision=precision, opt_batch=4, max_batch=8, workspace_gib=2)
    assert calls["profile"] == (spec.ENGINE_INPUT, ((1, 3, 640, 640), (4, 3, 640, 640), (8, 3, 640, 640)))
    assert calls["profiles"] == 1
    assert calls["workspace"] == ("WORKSPACE", 2 << 30)
    assert calls.get("flags", []) == (["FP16"] if precision == "fp16" else [])
    assert plan.read_bytes() == b"PLAN-BYTES" and not list(plan.parent.glob("*.partial"))
    record = read_record(plan)
    assert (record.precision, record.max_batch, record.opt_batch, record.topk) == (precision, 8, 4, 100)
    assert record.platform == HOST and record == result.record
    out = capsys.readouterr()
    assert "Building engine" in out.out and "a warning for stderr" in out.err
    log = result.log.read_text()
    assert "detail for the log only" in log and "detail for the log only" not in out.err


def test_timing_cache_is_kept_between_builds(with_fake, onnx_file):
    plan = onnx_file.parent / "1" / "model.plan"
    calls = with_fake()
    build_plan(onnx_file, plan)
    assert calls["cache_in"] == b""
    cache = onnx_file.parent / "timing.cache"
    assert cache.read_bytes() == b"+tuned"
    calls = with_fake()
    build_plan(onnx_file, plan)
    assert calls["cache_in"] == b"+tuned"


def test_parse_errors_name_the_node(with_fake, onnx_file):
    with_fake(parse_ok=False)
    with pytest.raises(BuildError, match=r"node 7 \(/head/Foo, Foo\): unsupported operator"):
        build_plan(onnx_file, onnx_file.parent / "1" / "model.plan")


def test_failed_build_leaves_the_old_plan(with_fake, onnx_file):
    plan = onnx_file.parent / "1" / "model.plan"
    plan.write_bytes(b"OLD")
    with_fake(build_ok=False)
    with pytest.raises(BuildError, match="failed to build"):
        build_plan(onnx_file, plan)
    assert plan.read_bytes() == b"OLD"


def test_without_tensorrt_the_error_says_where_to_build(monkeypatch, onnx_file):
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    with pytest.raises(BuildError, match="not installed.*NVIDIA's Triton container.*ENGINE=onnx"):
        build_plan(onnx_file, onnx_file.parent / "1" / "model.plan")


def run_cli(*args: str) -> subprocess.CompletedProcess:
    """The CLI in a fresh interpreter where ``import tensorrt`` fails, whatever is installed."""
    code = ("import sys; sys.modules['tensorrt'] = None; "
            "from rtmo_triton.trt.__main__ import main; sys.exit(main())")
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True)


def test_cli_build_without_tensorrt_exits_2_without_traceback(onnx_file):
    out = run_cli("build", "--onnx", str(onnx_file), "--plan", str(onnx_file.parent / "1" / "model.plan"))
    assert out.returncode == 2 and "tensorrt Python module is not installed" in out.stderr
    assert "Traceback" not in out.stderr


def test_cli_argument_errors(onnx_file):
    assert run_cli("build", "--onnx", str(onnx_file), "--plan", "x", "--precision", "int4").returncode == 2
    missing = run_cli("build", "--onnx", "/nonexistent.onnx", "--plan", "x")
    assert missing.returncode == 2 and "ONNX file not found" in missing.stderr
    assert run_cli("check", "--plan", "/nonexistent.plan").returncode == 2
