"""Build a TensorRT plan from the exported ONNX graph with TensorRT 10's Python API.

One optimization profile over the batch dimension (the only dynamic one),
FP16 or FP32 compute with the network's input and outputs kept as exported
(FP32 outputs; the input type is ``spec.ENGINE_INPUT_DTYPE``), a workspace
cap, a timing cache reused across builds (rebuilds take a fraction of the
first build), progress on stdout while TensorRT works, and every TensorRT
message in a build log. The plan is written atomically and its build record
(``compat.EngineRecord``) beside it.

``tensorrt`` is imported inside the functions, so this module imports on
machines without it (CPU CI), where ``build_plan`` fails with a clear error.
"""
from __future__ import annotations

import contextlib
import hashlib
import sys
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TextIO

from ..spec import ENGINE_INPUT, ENGINE_OUTPUTS, FEATMAP_STRIDES
from .compat import (
    EngineRecord,
    current_platform,
    library_tensorrt_version,
    record_path,
    same_tensorrt,
    write_record,
)

PRECISIONS = ("fp16", "fp32")
DEFAULT_WORKSPACE_GIB = 4.0
HEARTBEAT_S = 15.0


class BuildError(RuntimeError):
    pass


@dataclass(frozen=True)
class BuildResult:
    plan: Path
    record: EngineRecord
    seconds: float
    log: Path
    timing_cache: Path


Shape = tuple[int, int, int, int]


def batch_profile(min_batch: int, opt_batch: int, max_batch: int,
                  input_size: int) -> tuple[Shape, Shape, Shape]:
    """The (min, opt, max) shapes ``(b, 3, S, S)`` of the input's optimization profile.

    Refuses non-integers, batches below 1, an order other than min ≤ opt ≤ max,
    and an input size the two head levels (strides 16 and 32) cannot tile.
    """
    named = {"min_batch": min_batch, "opt_batch": opt_batch, "max_batch": max_batch, "input_size": input_size}
    for name, value in named.items():
        if isinstance(value, bool) or not isinstance(value, int):
            raise BuildError(f"{name} must be an integer, got {value!r}")
    if min_batch < 1:
        raise BuildError(f"min_batch must be at least 1, got {min_batch}")
    if opt_batch < min_batch:
        raise BuildError(f"opt_batch ({opt_batch}) is below min_batch ({min_batch}): need min ≤ opt ≤ max")
    if max_batch < opt_batch:
        raise BuildError(f"max_batch ({max_batch}) is below opt_batch ({opt_batch}): need min ≤ opt ≤ max")
    stride = max(FEATMAP_STRIDES)
    if input_size < stride or input_size % stride:
        raise BuildError(f"input size {input_size} is not a positive multiple of {stride}")
    return tuple((b, 3, input_size, input_size) for b in (min_batch, opt_batch, max_batch))  # type: ignore[return-value]


def import_tensorrt():
    """The ``tensorrt`` module, or a ``BuildError`` that says where plans can be built."""
    try:
        import tensorrt
    except ImportError:
        raise BuildError("the tensorrt Python module is not installed: build TensorRT plans inside NVIDIA's "
                         "Triton container on a GPU host (docs/tensorrt.md), or use ENGINE=onnx") from None
    except Exception as exc:  # the wheel is there but its libraries (libnvinfer, CUDA) are not
        raise BuildError(f"the tensorrt Python module does not load ({type(exc).__name__}: {exc}); "
                         "build inside NVIDIA's Triton container on a GPU host (docs/tensorrt.md)") from None
    return tensorrt


@dataclass(frozen=True)
class OnnxInfo:
    variant: str
    input_size: int
    topk: int
    input_dtype: str
    sha256: str


def read_onnx(path: Path) -> OnnxInfo:
    """What the build needs from our exported graph, checked (it must be ``rtmo_triton.export``'s)."""
    if not path.is_file():
        raise BuildError(f"ONNX file not found: {path}")
    try:
        import onnx
    except ImportError:
        raise BuildError("reading the graph's metadata needs the onnx package: pip install onnx") from None
    proto = onnx.load(str(path), load_external_data=False)
    meta = {p.key: p.value for p in proto.metadata_props}
    missing = [k for k in ("variant", "input_size", "topk") if k not in meta]
    if missing:
        raise BuildError(f"{path} lacks the metadata {', '.join(missing)}: export it with rtmo_triton.export "
                         "(make build-engines does)")
    initializers = {t.name for t in proto.graph.initializer}
    inputs = [i.name for i in proto.graph.input if i.name not in initializers]
    outputs = {o.name for o in proto.graph.output}
    if inputs != [ENGINE_INPUT] or not set(ENGINE_OUTPUTS) <= outputs:
        raise BuildError(f"{path} has inputs {inputs} and outputs {sorted(outputs)}; expected "
                         f"[{ENGINE_INPUT!r}] and {list(ENGINE_OUTPUTS)}")
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return OnnxInfo(meta["variant"], int(meta["input_size"]), int(meta["topk"]),
                    meta.get("input_dtype", "float32"), digest.hexdigest())


def _network_flags(trt) -> int:
    """Explicit batch: the only mode of TensorRT ≥ 10 (flag 0); an explicit flag before."""
    major = int(str(trt.__version__).split(".")[0])
    if major >= 10 or not hasattr(trt, "NetworkDefinitionCreationFlag"):
        return 0
    return 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)


def _logger(trt, log_file: TextIO):
    sev = trt.ILogger.Severity
    loud = (sev.INTERNAL_ERROR, sev.ERROR, sev.WARNING)

    class Logger(trt.ILogger):
        """Everything to the build log; warnings and errors to stderr too."""

        def __init__(self) -> None:
            trt.ILogger.__init__(self)

        def log(self, severity, msg) -> None:
            if not log_file.closed:  # TensorRT objects may log while being freed, after the build
                log_file.write(f"[{severity.name}] {msg}\n")
            if severity in loud:
                print(f"[tensorrt {severity.name.lower()}] {msg}", file=sys.stderr, flush=True)

    return Logger()


def _progress_monitor(trt):
    """Phase and step lines while the builder runs (TensorRT ≥ 10 has IProgressMonitor); None before.
    Ctrl-C during the build cancels it cleanly (the monitor answers "stop")."""
    if not hasattr(trt, "IProgressMonitor"):
        return None

    class Progress(trt.IProgressMonitor):
        def __init__(self) -> None:
            trt.IProgressMonitor.__init__(self)
            self.start = time.perf_counter()
            self.depth: dict[str, int] = {}
            self.steps: dict[str, int] = {}
            self.cancelled = False

        def _line(self, depth: int, text: str) -> None:
            print(f"[trt {time.perf_counter() - self.start:6.0f} s] {'  ' * depth}{text}", flush=True)

        def phase_start(self, phase_name, parent_phase, num_steps) -> None:
            depth = self.depth.get(parent_phase, -1) + 1 if parent_phase else 0
            self.depth[phase_name], self.steps[phase_name] = depth, num_steps
            if depth <= 1:
                self._line(depth, f"{phase_name} ({num_steps} steps)")

        def step_complete(self, phase_name, step) -> bool:
            try:
                if self.depth.get(phase_name) == 0:
                    self._line(0, f"{phase_name}: step {step + 1}/{self.steps.get(phase_name, '?')}")
            except KeyboardInterrupt:
                self.cancelled = True
            return not self.cancelled

        def phase_finish(self, phase_name) -> None:
            if self.depth.get(phase_name) == 0:
                self._line(0, f"{phase_name} done")

    return Progress()


class _Heartbeat:
    """Elapsed-time lines for TensorRT versions without a progress monitor."""

    def __init__(self, every_s: float = HEARTBEAT_S) -> None:
        self.every_s, self.stop = every_s, threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        start = time.perf_counter()
        while not self.stop.wait(self.every_s):
            print(f"[trt] still building ({time.perf_counter() - start:.0f} s)", flush=True)

    def __enter__(self) -> _Heartbeat:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join()


def _parse(trt, network, logger, onnx_path: Path) -> None:
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = []
        for i in range(parser.num_errors):
            e = parser.get_error(i)
            errors.append(f"node {e.node()} ({e.node_name()}, {e.node_operator()}): {e.desc()}")
        details = "\n  ".join(errors or ["(no details)"])
        raise BuildError(f"TensorRT could not parse {onnx_path}:\n  {details}")


def _describe_io(network) -> list[str]:
    tensors = [network.get_input(i) for i in range(network.num_inputs)]
    tensors += [network.get_output(i) for i in range(network.num_outputs)]
    return [f"{t.name} {t.dtype} {tuple(t.shape)}" for t in tensors]


def _timing_cache(config, path: Path):
    """The cache from ``path`` when it exists and fits this TensorRT and GPU, else a fresh one."""
    data = path.read_bytes() if path.is_file() else b""
    if data:
        try:
            cache = config.create_timing_cache(data)
            if cache is not None and config.set_timing_cache(cache, ignore_mismatch=False):
                print(f"[trt] timing cache loaded: {path}", flush=True)
                return
        except Exception as exc:  # a corrupt or foreign cache only costs time
            print(f"[trt] warning: timing cache {path} not usable ({exc})", file=sys.stderr, flush=True)
        else:
            print(f"[trt] warning: timing cache {path} is from another TensorRT or GPU; starting a new one",
                  file=sys.stderr, flush=True)
    config.set_timing_cache(config.create_timing_cache(b""), ignore_mismatch=False)


def _write_atomically(path: Path, data: bytes) -> None:
    partial = path.with_name(path.name + ".partial")
    try:
        partial.write_bytes(data)
        partial.replace(path)
    finally:
        partial.unlink(missing_ok=True)


def build_plan(onnx_path: str | Path, plan_path: str | Path, precision: str = "fp16", opt_batch: int = 8,
               max_batch: int = 8, min_batch: int = 1, workspace_gib: float = DEFAULT_WORKSPACE_GIB,
               timing_cache: str | Path | None = None, log_path: str | Path | None = None) -> BuildResult:
    """ONNX → serialized plan at ``plan_path`` plus its record ``<plan>.json``; raises ``BuildError``.

    Defaults put the log (``build.log``) and the timing cache (``timing.cache``) in the folder above the
    plan's, i.e. ``model_repository/rtmo_engine/`` for ``.../rtmo_engine/1/model.plan``.
    """
    onnx_path, plan_path = Path(onnx_path), Path(plan_path)
    if precision not in PRECISIONS:
        raise BuildError(f"precision {precision!r}: choose one of {', '.join(PRECISIONS)}")
    if not workspace_gib > 0:
        raise BuildError(f"workspace_gib must be positive, got {workspace_gib}")
    batch_profile(min_batch, opt_batch, max_batch, max(FEATMAP_STRIDES))  # batch checks before anything slow
    trt = import_tensorrt()
    if precision == "fp16" and not hasattr(trt.BuilderFlag, "FP16"):
        raise BuildError(f"TensorRT {trt.__version__} has no FP16 builder flag (TensorRT 11 requires "
                         "strongly typed FP16 graphs, which this project does not export): use "
                         "PRECISION=fp32, or a Triton container with TensorRT 10")
    info = read_onnx(onnx_path)
    shapes = batch_profile(min_batch, opt_batch, max_batch, info.input_size)
    platform = current_platform()
    server_trt = library_tensorrt_version()
    if server_trt and not same_tensorrt(server_trt, platform.tensorrt_version):
        print(f"[trt] warning: building with the tensorrt module {platform.tensorrt_version}, but this "
              f"host's TensorRT runtime is {server_trt}: a Triton server here will refuse the plan",
              file=sys.stderr, flush=True)
    plan_path.parent.mkdir(parents=True, exist_ok=True)
    log_path = Path(log_path) if log_path else plan_path.parent.parent / "build.log"
    timing_cache = Path(timing_cache) if timing_cache else plan_path.parent.parent / "timing.cache"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    timing_cache.parent.mkdir(parents=True, exist_ok=True)

    start = time.perf_counter()
    with log_path.open("w") as log_file:
        logger = _logger(trt, log_file)
        builder = trt.Builder(logger)
        network = builder.create_network(_network_flags(trt))
        _parse(trt, network, logger, onnx_path)
        io = _describe_io(network)
        log_file.write("[rtmo] network I/O (kept as exported): " + "; ".join(io) + "\n")
        config = builder.create_builder_config()
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gib * (1 << 30)))
        if precision == "fp16":
            config.set_flag(trt.BuilderFlag.FP16)  # compute only: network inputs/outputs keep their types
        profile = builder.create_optimization_profile()
        profile.set_shape(ENGINE_INPUT, *shapes)
        config.add_optimization_profile(profile)
        _timing_cache(config, timing_cache)
        monitor = _progress_monitor(trt)
        if monitor is not None:
            config.progress_monitor = monitor
        print(f"[trt] building the {precision} plan of RTMO-{info.variant} {info.input_size}px "
              f"K={info.topk}, "
              f"batch {min_batch}/{opt_batch}/{max_batch}, workspace {workspace_gib:g} GiB, on "
              f"{platform.describe()}; log: {log_path}", flush=True)
        with _Heartbeat() if monitor is None else contextlib.nullcontext():
            serialized = builder.build_serialized_network(network, config)
        if serialized is None:
            if monitor is not None and monitor.cancelled:
                raise BuildError("build cancelled; the previous plan, if any, is untouched")
            raise BuildError(f"TensorRT failed to build the plan; the errors are above and in {log_path}")
        _write_atomically(timing_cache, bytes(config.get_timing_cache().serialize()))
        # The old record goes first: a plan without a record is refused, never mistaken for the old one.
        record_path(plan_path).unlink(missing_ok=True)
        _write_atomically(plan_path, bytes(serialized))
    record = EngineRecord(
        tensorrt_version=platform.tensorrt_version, gpu_name=platform.gpu_name,
        compute_capability=platform.compute_capability, precision=precision, variant=info.variant,
        input_size=info.input_size, topk=info.topk, min_batch=min_batch, opt_batch=opt_batch,
        max_batch=max_batch, onnx_sha256=info.sha256,
        built_at=datetime.now(timezone.utc).isoformat(timespec="seconds"), input_dtype=info.input_dtype,
    )
    write_record(plan_path, record)
    seconds = time.perf_counter() - start
    print(f"[trt] plan written: {plan_path} ({plan_path.stat().st_size / 2**20:.1f} MiB, {seconds:.0f} s)",
          flush=True)
    return BuildResult(plan_path, record, seconds, log_path, timing_cache)
