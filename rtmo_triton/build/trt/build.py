"""Build a TensorRT plan from the exported ONNX graph with TensorRT 10's Python API.

One optimization profile over the batch dimension (the only dynamic one) whose
opt shape is the batch the dynamic batcher typically forms, FP16 or FP32
compute with the network's input and outputs kept as exported (FP32 outputs;
the input type is ``spec.ENGINE_INPUT_DTYPE``), a workspace cap, a timing cache
reused across builds (rebuilds take a fraction of the first build), progress on
stdout while TensorRT works, and every TensorRT message in a build log. The
plan is written atomically and its build record (``compat.EngineRecord``)
beside it.

Precision. ``fp32`` is FP32: TensorRT's TF32 default is switched off. ``fp16``
keeps the pixel arithmetic FP32 (``precision``: box decoding and the DCC's
sin/cos bin code) in one of two forms:

- weakly typed (default): the FP32 graph, the FP16 builder flag, those layers
  pinned to FP32 and ``OBEY_PRECISION_CONSTRAINTS``;
- strongly typed (``strongly_typed=True``): the FP16 graph of
  ``export_onnx(precision="fp16")``, whose explicit Casts say where FP32 holds,
  built as a STRONGLY_TYPED network: no precision flag involved, the form that
  holds where TensorRT drops them.

``tensorrt`` is imported inside the functions, so this module imports on
machines without it (CPU CI), where ``build_plan`` fails with a clear error.
"""
from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TextIO

from ...digest import file_sha256
from ...spec import ENGINE_INPUT, ENGINE_OUTPUTS, FEATMAP_STRIDES, PRECISIONS, OnnxMeta
from ...whole_files import write_whole
from . import precision as fp32_region
from .compat import (
    EngineRecord,
    current_platform,
    library_tensorrt_version,
    record_path,
    same_tensorrt,
    write_record,
)

DEFAULT_WORKSPACE_GIB = 4.0
TIMING_CACHE, BUILD_LOG = "timing.cache", "build.log"
"""Written beside the plan's version folder, where Triton ignores them."""
TYPICAL_BATCH = 4
"""The profile's opt batch unless told: what Triton's dynamic batcher forms from a few concurrent
clients, not the maximum it may form (TensorRT tunes its kernels for the opt shape). A guess until
``make gpu-check`` measures the engine's mean batch under load (its served section)."""


def typical_batch(max_batch: int) -> int:
    return max(1, min(max_batch, TYPICAL_BATCH))


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
    precision: str
    """``fp32``, or ``fp16`` for the strongly typed form."""
    sha256: str
    region: fp32_region.GeometryRegion


def read_onnx(path: Path) -> OnnxInfo:
    """What the build needs from our exported graph, checked (it must be ``rtmo_triton.build.export``'s)."""
    if not path.is_file():
        raise BuildError(f"ONNX file not found: {path}")
    try:
        import onnx
    except ImportError:
        raise BuildError("reading the graph's metadata needs the onnx package: pip install onnx") from None
    proto = onnx.load(str(path), load_external_data=False)
    meta = {p.key: p.value for p in proto.metadata_props}
    m = OnnxMeta
    missing = [k for k in (m.VARIANT, m.INPUT_SIZE, m.TOPK, m.INPUT_DTYPE, m.PRECISION) if k not in meta]
    if missing:
        raise BuildError(f"{path} lacks the metadata {', '.join(missing)}: export it with "
                         "`python -m rtmo_triton.build.export` (make build-engines does)")
    initializers = {t.name for t in proto.graph.initializer}
    inputs = [i.name for i in proto.graph.input if i.name not in initializers]
    outputs = {o.name for o in proto.graph.output}
    if inputs != [ENGINE_INPUT] or not set(ENGINE_OUTPUTS) <= outputs:
        raise BuildError(f"{path} has inputs {inputs} and outputs {sorted(outputs)}; expected "
                         f"[{ENGINE_INPUT!r}] and {list(ENGINE_OUTPUTS)}")
    try:
        region = fp32_region.geometry_region(proto)
    except ValueError as exc:
        raise BuildError(f"{path}: {exc}") from None
    return OnnxInfo(meta[m.VARIANT], int(meta[m.INPUT_SIZE]), int(meta[m.TOPK]), meta[m.INPUT_DTYPE],
                    meta[m.PRECISION], file_sha256(path), region)


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
    """Phase and step lines while the builder runs. Ctrl-C during the build cancels it cleanly
    (the monitor answers "stop")."""

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


def _typing(trt, info: OnnxInfo, precision: str, strongly_typed: bool, onnx_path: Path) -> int:
    """Network creation flags, after checking that the graph fits the requested form."""
    if strongly_typed:
        if info.precision != precision:
            raise BuildError(f"{onnx_path} is the {info.precision} graph, but a strongly typed {precision} "
                             f"plan follows the graph's types: export it with `python -m "
                             f"rtmo_triton.build.export --precision {precision}`")
        return 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    if info.precision != "fp32":
        raise BuildError(f"{onnx_path} is the {info.precision} graph, which only a strongly typed build "
                         "reads as meant (--strongly-typed); the weakly typed build starts from the FP32 "
                         "graph")
    if precision == "fp16" and not hasattr(trt.BuilderFlag, "FP16"):
        raise BuildError(f"TensorRT {trt.__version__} has no FP16 builder flag: build the strongly typed "
                         "form (the FP16 graph of `python -m rtmo_triton.build.export --precision fp16`, "
                         "then `build --strongly-typed`)")
    return 0


def _precision_flags(trt, config, network, info: OnnxInfo, precision: str, strongly_typed: bool) -> list[str]:
    """FP32 without TF32, or FP16 with the geometry pinned to FP32; returns the pinned layers' names."""
    if precision == "fp32":
        config.clear_flag(trt.BuilderFlag.TF32)  # TensorRT's default would make "fp32" TF32
        return []
    if strongly_typed:
        return []  # the graph's Casts decide
    config.set_flag(trt.BuilderFlag.FP16)  # compute only: network inputs/outputs keep their types
    config.set_flag(trt.BuilderFlag.OBEY_PRECISION_CONSTRAINTS)
    try:
        pinned = fp32_region.constrain(trt, network, info.region)
    except ValueError as exc:
        raise BuildError(f"cannot keep the pixel arithmetic in FP32: {exc}") from None
    if not pinned:
        raise BuildError("no layer of the parsed network belongs to the geometry scope: an FP16 plan "
                         "would compute the DCC's bin code in FP16")
    return pinned


def build_plan(onnx_path: str | Path, plan_path: str | Path, precision: str = "fp16",
               opt_batch: int = TYPICAL_BATCH, max_batch: int = 8, min_batch: int = 1,
               workspace_gib: float = DEFAULT_WORKSPACE_GIB, timing_cache: str | Path | None = None,
               log_path: str | Path | None = None, *,
               strongly_typed: bool = False) -> BuildResult:
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
    info = read_onnx(onnx_path)
    flags = _typing(trt, info, precision, strongly_typed, onnx_path)
    shapes = batch_profile(min_batch, opt_batch, max_batch, info.input_size)
    platform = current_platform()
    server_trt = library_tensorrt_version()
    if server_trt and not same_tensorrt(server_trt, platform.tensorrt_version):
        print(f"[trt] warning: building with the tensorrt module {platform.tensorrt_version}, but this "
              f"host's TensorRT runtime is {server_trt}: a Triton server here will refuse the plan",
              file=sys.stderr, flush=True)
    plan_path.parent.mkdir(parents=True, exist_ok=True)
    log_path = Path(log_path) if log_path else plan_path.parent.parent / BUILD_LOG
    timing_cache = Path(timing_cache) if timing_cache else plan_path.parent.parent / TIMING_CACHE
    log_path.parent.mkdir(parents=True, exist_ok=True)
    timing_cache.parent.mkdir(parents=True, exist_ok=True)
    typing = "strong" if strongly_typed else "weak"

    start = time.perf_counter()
    with log_path.open("w") as log_file:
        logger = _logger(trt, log_file)
        builder = trt.Builder(logger)
        network = builder.create_network(flags)
        _parse(trt, network, logger, onnx_path)
        io = _describe_io(network)
        log_file.write("[rtmo] network I/O (kept as exported): " + "; ".join(io) + "\n")
        config = builder.create_builder_config()
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gib * (1 << 30)))
        pinned = _precision_flags(trt, config, network, info, precision, strongly_typed)
        if pinned:
            log_file.write(f"[rtmo] {len(pinned)} layers pinned to FP32 (geometry): {', '.join(pinned)}\n")
        profile = builder.create_optimization_profile()
        profile.set_shape(ENGINE_INPUT, *shapes)
        config.add_optimization_profile(profile)
        _timing_cache(config, timing_cache)
        monitor = _progress_monitor(trt)
        config.progress_monitor = monitor
        print(f"[trt] building the {precision} plan ({typing}ly typed"
              + (f", {len(pinned)} geometry layers FP32" if pinned else "") + f") of RTMO-{info.variant} "
              f"{info.input_size}px K={info.topk}, batch {min_batch}/{opt_batch}/{max_batch}, workspace "
              f"{workspace_gib:g} GiB, on {platform.describe()}; log: {log_path}", flush=True)
        serialized = builder.build_serialized_network(network, config)
        if serialized is None:
            if monitor.cancelled:
                raise BuildError("build cancelled; the previous plan, if any, is untouched")
            raise BuildError(f"TensorRT failed to build the plan; the errors are above and in {log_path}")
        write_whole(timing_cache, bytes(config.get_timing_cache().serialize()))
        # The old record goes first: a plan without a record is refused, never mistaken for the old one.
        record_path(plan_path).unlink(missing_ok=True)
        write_whole(plan_path, bytes(serialized))
    record = EngineRecord(
        tensorrt_version=platform.tensorrt_version, gpu_name=platform.gpu_name,
        compute_capability=platform.compute_capability, precision=precision, typing=typing,
        fp32_layers=len(pinned), variant=info.variant, input_size=info.input_size, topk=info.topk,
        min_batch=min_batch, opt_batch=opt_batch, max_batch=max_batch, onnx_sha256=info.sha256,
        built_at=datetime.now(timezone.utc).isoformat(timespec="seconds"), input_dtype=info.input_dtype,
    )
    write_record(plan_path, record)
    seconds = time.perf_counter() - start
    print(f"[trt] plan written: {plan_path} ({plan_path.stat().st_size / 2**20:.1f} MiB, {seconds:.0f} s)",
          flush=True)
    return BuildResult(plan_path, record, seconds, log_path, timing_cache)
