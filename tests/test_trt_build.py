"""The TensorRT plan build, driven against a minimal stand-in of the ``tensorrt`` module.

TensorRT cannot exist on a machine without an NVIDIA GPU, so these tests
check what our code asks of TensorRT's API (profile, precision flags and the
layers pinned to FP32, typing, workspace, timing cache, atomic plan, record,
errors); the stand-in parser lays out the parsed network from the ONNX file
itself (``test_trt_precision.Network``). The real build is
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

from .test_trt_precision import Network

HOST = Platform("10.5.0", "NVIDIA L4", "8.9")


def fake_tensorrt(calls: dict, parse_ok: bool = True, build_ok: bool = True, cache_fits: bool = True,
                  fp16_flag: bool = True) -> types.ModuleType:
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

        def clear_flag(self, flag):
            calls.setdefault("cleared", []).append(flag)

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

    class Parsed:
        """Filled by the parser from the ONNX file, as TensorRT's network is."""

        num_outputs = len(spec.ENGINE_OUTPUTS)

        def load(self, proto):
            self.graph = Network(proto)
            self.num_layers, self.num_inputs = self.graph.num_layers, self.graph.num_inputs
            self.get_layer, self.get_input = self.graph.get_layer, self.graph.get_input
            for t in self.graph.inputs:
                t.shape = (-1, 3, 640, 640)

        def get_output(self, i):
            return types.SimpleNamespace(name=spec.ENGINE_OUTPUTS[i], dtype="DataType.FLOAT", shape=(-1, 100))

    class Builder:
        def __init__(self, logger):
            self.logger = logger

        def create_network(self, flags):
            calls["network_flags"] = flags
            calls["network"] = Parsed()
            return calls["network"]

        def create_builder_config(self):
            return Config()

        def create_optimization_profile(self):
            return Profile()

        def build_serialized_network(self, network, config):
            monitor = calls["monitor"] = config.progress_monitor
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
            self.network = network

        def parse_from_file(self, path):
            calls["parsed"] = path
            if parse_ok:
                self.network.load(onnx.load(path))
            return parse_ok

        def get_error(self, i):
            return ParserError()

    trt.ILogger, trt.Builder, trt.OnnxParser = ILogger, Builder, OnnxParser
    trt.IProgressMonitor = IProgressMonitor
    trt.MemoryPoolType = types.SimpleNamespace(WORKSPACE="WORKSPACE")
    flags = {"TF32": "TF32", "OBEY_PRECISION_CONSTRAINTS": "OBEY"} | ({"FP16": "FP16"} if fp16_flag else {})
    trt.BuilderFlag = types.SimpleNamespace(**flags)
    trt.NetworkDefinitionCreationFlag = types.SimpleNamespace(STRONGLY_TYPED=1)
    trt.float32, trt.float16 = "FLOAT", "HALF"
    return trt


def write_graph(path: Path, metadata: dict[str, str], outputs=spec.ENGINE_OUTPUTS) -> Path:
    """A tiny graph with our tensor names, a geometry scope (a Sin in it) and the metadata ``export_onnx``
    writes."""
    h, size = onnx.helper, int(metadata.get("input_size", 640))
    nodes = [h.make_node("Cast", [spec.ENGINE_INPUT], ["x"], to=onnx.TensorProto.FLOAT, name="/Cast"),
             h.make_node("Sin", ["x"], ["/geometry/Sin_output_0"], name="/geometry/Sin")]
    nodes += [h.make_node("Add", ["x", "/geometry/Sin_output_0"], [n], name=f"/Add_{n}") for n in outputs]
    graph = h.make_graph(
        nodes, "g",
        [h.make_tensor_value_info(spec.ENGINE_INPUT, onnx.TensorProto.UINT8, ["batch", 3, size, size])],
        [h.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None) for name in outputs])
    model = h.make_model(graph)
    h.set_model_props(model, metadata)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


GRAPH_META = {"variant": "s", "input_size": "640", "topk": "100", "input_dtype": "uint8", "precision": "fp32"}


@pytest.fixture()
def onnx_file(tmp_path):
    path = write_graph(tmp_path / "rtmo_engine" / "model.onnx", GRAPH_META)
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
    # fp16: FP16 kernels, the geometry pinned to FP32 and TensorRT bound to it; fp32: no TF32 either
    assert calls.get("flags", []) == (["FP16", "OBEY"] if precision == "fp16" else [])
    assert calls.get("cleared", []) == ([] if precision == "fp16" else ["TF32"])
    pinned = {layer.name for layer in calls["network"].graph.layers if layer.precision == "FLOAT"}
    assert pinned == ({"/geometry/Sin"} if precision == "fp16" else set())
    assert plan.read_bytes() == b"PLAN-BYTES"
    assert sorted(p.name for p in plan.parent.iterdir()) == ["model.plan", "model.plan.json"]  # no leftovers
    record = read_record(plan)
    assert (record.precision, record.min_batch, record.opt_batch, record.max_batch) == (precision, 1, 4, 8)
    assert (record.typing, record.fp32_layers) == ("weak", len(pinned))
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
    assert "network I/O (kept as exported): input" in log
    assert ("1 layers pinned to FP32 (geometry): /geometry/Sin" in log) == (precision == "fp16")


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


def test_the_opt_shape_is_the_typical_batch_unless_told(with_fake, onnx_file):
    calls = with_fake()
    record = build_plan(onnx_file, onnx_file.parent / "1" / "model.plan", max_batch=16).record
    assert calls["profile"][1][1][0] == record.opt_batch == trt_build.TYPICAL_BATCH
    assert trt_build.typical_batch(2) == 2 and trt_build.typical_batch(64) == trt_build.TYPICAL_BATCH


def test_strongly_typed_follows_the_fp16_graph_without_precision_flags(with_fake, tmp_path):
    calls = with_fake()
    fp16 = write_graph(tmp_path / "fp16.onnx", GRAPH_META | {"precision": "fp16"})
    record = build_plan(fp16, tmp_path / "1" / "model.plan", strongly_typed=True).record
    assert calls["network_flags"] == 1 << 1  # STRONGLY_TYPED
    assert "flags" not in calls and "cleared" not in calls
    assert (record.typing, record.fp32_layers, record.precision) == ("strong", 0, "fp16")


def test_the_graph_must_fit_the_typing(with_fake, onnx_file, tmp_path):
    with_fake()
    plan = tmp_path / "1" / "model.plan"
    with pytest.raises(BuildError, match="fp32 graph, but a strongly typed fp16 plan.*--precision fp16"):
        build_plan(onnx_file, plan, strongly_typed=True)
    fp16 = write_graph(tmp_path / "fp16.onnx", GRAPH_META | {"precision": "fp16"})
    with pytest.raises(BuildError, match="fp16 graph, which only a strongly typed build reads"):
        build_plan(fp16, plan)


def test_a_graph_without_the_geometry_scope_is_refused(with_fake, tmp_path):
    with_fake()
    h = onnx.helper
    outputs, f32 = spec.ENGINE_OUTPUTS, onnx.TensorProto.FLOAT
    nodes = [h.make_node("Cast", [spec.ENGINE_INPUT], [n], to=f32) for n in outputs]
    image = h.make_tensor_value_info(spec.ENGINE_INPUT, onnx.TensorProto.UINT8, ["b", 3, 640, 640])
    graph = h.make_graph(nodes, "g", [image], [h.make_tensor_value_info(n, f32, None) for n in outputs])
    model = h.make_model(graph)
    h.set_model_props(model, GRAPH_META)
    onnx.save(model, str(tmp_path / "old.onnx"))
    with pytest.raises(BuildError, match="no nodes under '/geometry/'"):
        build_plan(tmp_path / "old.onnx", tmp_path / "1" / "model.plan")


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


def test_tensorrt_without_fp16_flag_points_to_the_strongly_typed_form(with_fake, onnx_file):
    with_fake(fp16_flag=False)
    with pytest.raises(BuildError, match="no FP16 builder flag: build the strongly typed form"):
        build_plan(onnx_file, onnx_file.parent / "1" / "model.plan")


def test_graph_not_from_our_export_is_refused(with_fake, tmp_path):
    with_fake()
    bare = write_graph(tmp_path / "bare.onnx", {"variant": "s"})
    with pytest.raises(BuildError, match="lacks the metadata input_size, topk, input_dtype, precision"):
        build_plan(bare, tmp_path / "1" / "model.plan")
    other = write_graph(tmp_path / "other.onnx", GRAPH_META, outputs=("scores",))
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
    env = {**os.environ, "PATH": "/nonexistent", "CUDA_VISIBLE_DEVICES": ""}  # no nvidia-smi nor libcuda GPU
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
        "precision": "fp16", "typing": "weak", "fp32_layers": 90, "input_dtype": "uint8",
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
                       GRAPH_META | {"variant": "t", "input_size": "416"})
    plan = tmp_path / "rtmo_engine" / "1" / "model.plan"
    result = build_plan(path, plan, precision="fp16", opt_batch=2, max_batch=4, workspace_gib=1)
    assert plan.stat().st_size > 0 and result.timing_cache.is_file()
    assert require_compat(plan) == []
