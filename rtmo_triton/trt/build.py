"""Build a TensorRT plan from the exported ONNX graph with TensorRT's Python API.

One optimization profile over the batch dimension (the only dynamic one),
FP16 or FP32 compute with FP32 input and outputs, a workspace cap, a timing
cache reused across builds (rebuilds take a fraction of the first build),
progress on stdout while TensorRT works, and every TensorRT message in a
build log. The plan is written atomically and its build record
(``compat.EngineRecord``) beside it.

``tensorrt`` is imported inside the functions, so this module imports on
machines without it (CPU CI), where ``build_plan`` fails with a clear error.
"""
from __future__ import annotations

import contextlib
import sys
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from ..spec import ENGINE_INPUT
from .compat import EngineRecord, current_platform, write_record

PRECISIONS = ("fp16", "fp32")
DEFAULT_WORKSPACE_GIB = 4.0


class BuildError(RuntimeError):
    pass


@dataclass(frozen=True)
class BuildResult:
    plan: Path
    record: EngineRecord
    seconds: float
    log: Path


def batch_profile(min_batch: int, opt_batch: int, max_batch: int,
                  input_size: int) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
    """The (min, opt, max) input shapes of the profile; refuses an impossible order."""
    if not 1 <= min_batch <= opt_batch <= max_batch:
        raise BuildError(f"batch profile needs 1 ≤ min ≤ opt ≤ max, got min {min_batch}, opt {opt_batch}, "
                         f"max {max_batch}")
    return tuple((b, 3, input_size, input_size) for b in (min_batch, opt_batch, max_batch))  # type: ignore[return-value]


def import_tensorrt():
    try:
        import tensorrt
    except ImportError:
        raise BuildError("the tensorrt Python module is not installed: build TensorRT plans inside NVIDIA's "
                         "Triton container on a GPU host (docs/tensorrt.md), or use ENGINE=onnx") from None
    return tensorrt


def _logger(trt, log_file):
    sev = trt.ILogger.Severity
    loud = (sev.INTERNAL_ERROR, sev.ERROR, sev.WARNING)

    class Logger(trt.ILogger):
        """Everything to the build log; warnings and errors to stderr too."""

        def __init__(self) -> None:
            trt.ILogger.__init__(self)

        def log(self, severity, msg) -> None:
            log_file.write(f"[{severity.name}] {msg}\n")
            if severity in loud:
                print(f"[tensorrt {severity.name.lower()}] {msg}", file=sys.stderr, flush=True)

    return Logger()


def _progress_monitor(trt):
    """Phase and step lines while the builder runs (TensorRT ≥ 10 has IProgressMonitor)."""
    if not hasattr(trt, "IProgressMonitor"):
        return None

    class Progress(trt.IProgressMonitor):
        def __init__(self) -> None:
            trt.IProgressMonitor.__init__(self)
            self.start = time.perf_counter()

        def phase_start(self, phase_name, parent_phase, num_steps) -> None:
            indent = "  " if parent_phase else ""
            print(f"[trt {time.perf_counter() - self.start:6.0f} s] {indent}{phase_name} ({num_steps} steps)",
                  flush=True)

        def step_complete(self, phase_name, step) -> bool:
            return True  # keep building

        def phase_finish(self, phase_name) -> None:
            pass

    return Progress()


class _Heartbeat:
    """Elapsed-time lines for TensorRT versions without a progress monitor."""

    def __init__(self, every_s: float = 15.0) -> None:
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


def _parse(trt, network, logger, onnx_path: Path) -> None:
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = []
        for i in range(parser.num_errors):
            e = parser.get_error(i)
            errors.append(f"node {e.node()} ({e.node_name()}, {e.node_operator()}): {e.desc()}")
        raise BuildError(f"TensorRT could not parse {onnx_path}:\n  " + "\n  ".join(errors))


def build_plan(onnx_path: str | Path, plan_path: str | Path, precision: str = "fp16", opt_batch: int = 8,
               max_batch: int = 8, min_batch: int = 1, workspace_gib: float = DEFAULT_WORKSPACE_GIB,
               timing_cache: str | Path | None = None, log_path: str | Path | None = None) -> BuildResult:
    """ONNX → serialized plan at ``plan_path`` plus ``<plan>.json``; raises ``BuildError``."""
    from ..export import onnx_metadata, sha256

    onnx_path, plan_path = Path(onnx_path), Path(plan_path)
    if precision not in PRECISIONS:
        raise BuildError(f"precision {precision!r}: choose one of {', '.join(PRECISIONS)}")
    meta = onnx_metadata(onnx_path)
    shapes = batch_profile(min_batch, opt_batch, max_batch, int(meta["input_size"]))
    trt = import_tensorrt()
    platform = current_platform()
    log_path = Path(log_path) if log_path else plan_path.parent.parent / "build.log"
    timing_cache = Path(timing_cache) if timing_cache else plan_path.parent.parent / "timing.cache"
    start = time.perf_counter()
    with log_path.open("w") as log_file:
        logger = _logger(trt, log_file)
        builder = trt.Builder(logger)
        network = builder.create_network(0)  # explicit batch is the only mode in TensorRT 10
        _parse(trt, network, logger, onnx_path)
        config = builder.create_builder_config()
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gib * (1 << 30)))
        if precision == "fp16":
            config.set_flag(trt.BuilderFlag.FP16)
        profile = builder.create_optimization_profile()
        profile.set_shape(ENGINE_INPUT, *shapes)
        config.add_optimization_profile(profile)
        cache = config.create_timing_cache(timing_cache.read_bytes() if timing_cache.is_file() else b"")
        config.set_timing_cache(cache, ignore_mismatch=False)
        monitor = _progress_monitor(trt)
        if monitor is not None:
            config.progress_monitor = monitor
        print(f"[trt] building {precision} plan, batch {min_batch}/{opt_batch}/{max_batch}, workspace "
              f"{workspace_gib:g} GiB, on {platform.gpu_name} (TensorRT {platform.tensorrt_version}); "
              f"log: {log_path}", flush=True)
        with _Heartbeat() if monitor is None else contextlib.nullcontext():
            serialized = builder.build_serialized_network(network, config)
        if serialized is None:
            raise BuildError(f"TensorRT failed to build the plan; see {log_path}")
        timing_cache.write_bytes(bytes(config.get_timing_cache().serialize()))
    partial = plan_path.with_name(plan_path.name + ".partial")
    partial.write_bytes(bytes(serialized))
    partial.replace(plan_path)
    record = EngineRecord(
        tensorrt_version=platform.tensorrt_version, gpu_name=platform.gpu_name,
        compute_capability=platform.compute_capability, precision=precision, variant=meta["variant"],
        input_size=int(meta["input_size"]), topk=int(meta["topk"]), min_batch=min_batch,
        opt_batch=opt_batch, max_batch=max_batch, onnx_sha256=sha256(onnx_path),
        built_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
    )
    write_record(plan_path, record)
    seconds = time.perf_counter() - start
    print(f"[trt] plan written: {plan_path} ({plan_path.stat().st_size / 2**20:.1f} MiB, {seconds:.0f} s)",
          flush=True)
    return BuildResult(plan_path, record, seconds, log_path)

