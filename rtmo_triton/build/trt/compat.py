"""What a TensorRT plan was built for, recorded beside it and checked before it is served.

A plan deserializes only under the TensorRT version that built it and runs
only on GPUs of the compute capability it was tuned for. Triton's own error
for a mismatch is a deserialization failure deep in its log; this record
turns it into a sentence that says what to rebuild, both before
``make build-engines`` reuses a plan and before a deployment
(``python -m rtmo_triton.build.trt check``, ``check_served``).

Nothing here imports ``tensorrt`` at module import: it runs on CPU hosts.
"""
from __future__ import annotations

import ctypes
import json
import os
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from ...whole_files import write_whole


class EngineMismatch(RuntimeError):
    """The plan cannot be served on this host (or has no build record)."""


class NoPlatform(RuntimeError):
    """No GPU or no TensorRT here: nothing a plan could run on."""


@dataclass(frozen=True)
class Platform:
    tensorrt_version: str
    gpu_name: str
    compute_capability: str
    """e.g. "8.9"."""

    def describe(self) -> str:
        return f"TensorRT {self.tensorrt_version} on sm {self.compute_capability} ({self.gpu_name})"


@dataclass(frozen=True)
class EngineRecord:
    tensorrt_version: str
    gpu_name: str
    compute_capability: str
    precision: str
    typing: str
    """``weak`` (FP16 flag, geometry layers pinned to FP32) or ``strong`` (the graph's own types)."""
    fp32_layers: int
    """Layers pinned to FP32 in a weakly typed FP16 plan (0 otherwise)."""
    variant: str
    input_size: int
    topk: int
    min_batch: int
    opt_batch: int
    max_batch: int
    onnx_sha256: str
    built_at: str
    input_dtype: str
    """The engine input's type as exported (``spec.ENGINE_INPUT_DTYPE`` at export time)."""

    @property
    def platform(self) -> Platform:
        return Platform(self.tensorrt_version, self.gpu_name, self.compute_capability)


def record_path(plan: str | Path) -> Path:
    """``model.plan`` → ``model.plan.json``."""
    plan = Path(plan)
    return plan.with_name(plan.name + ".json")


def write_record(plan: str | Path, record: EngineRecord) -> Path:
    """Write ``<plan>.json`` atomically; returns its path."""
    path = record_path(plan)
    write_whole(path, json.dumps(asdict(record), indent=2) + "\n")
    return path


def read_record(plan: str | Path) -> EngineRecord:
    """The build record of ``plan``; ``EngineMismatch`` when it is missing or unreadable."""
    plan = Path(plan)
    path = record_path(plan)
    rebuild = "rebuild it with `make build-engines ENGINE=trt` so its TensorRT version and GPU are known"
    if not path.is_file():
        raise EngineMismatch(f"{plan} has no build record ({path.name}); {rebuild}")
    try:
        data = json.loads(path.read_text())
        known = {f.name for f in fields(EngineRecord)}
        return EngineRecord(**{k: v for k, v in data.items() if k in known})
    except (ValueError, TypeError, AttributeError) as exc:
        raise EngineMismatch(f"{path} is not a valid build record ({exc}); {rebuild}") from None


# --- this host ------------------------------------------------------------------


def query_gpu(run: Callable[..., subprocess.CompletedProcess] = subprocess.run) -> tuple[str, str]:
    """(name, compute capability) of GPU 0 from nvidia-smi, else from the CUDA driver; ``NoPlatform``."""
    smi = shutil.which("nvidia-smi")
    why = "nvidia-smi not found"
    if smi is not None:
        try:
            out = run([smi, "--query-gpu=name,compute_cap", "--format=csv,noheader"],
                      capture_output=True, text=True, timeout=30)
            lines = [ln for ln in out.stdout.strip().splitlines() if "," in ln] if out.returncode == 0 else []
            if lines:
                name, cap = (part.strip() for part in lines[0].rsplit(",", 1))
                return name, cap
            why = f"nvidia-smi: {(out.stderr or out.stdout).strip()[:200] or 'no GPU listed'}"
        except (OSError, subprocess.TimeoutExpired) as exc:
            why = f"nvidia-smi failed: {exc}"
    found = _cuda_driver_gpu()
    if found is not None:
        return found
    raise NoPlatform(f"no NVIDIA GPU visible ({why})")


def _cuda_driver_gpu() -> tuple[str, str] | None:
    """GPU 0 through libcuda (drivers whose nvidia-smi lacks ``compute_cap``); None without a driver."""
    try:
        cuda = ctypes.CDLL("libcuda.so.1")
    except OSError:
        return None
    dev, major, minor = ctypes.c_int(), ctypes.c_int(), ctypes.c_int()
    name = ctypes.create_string_buffer(256)
    ok = (cuda.cuInit(0) == 0 and cuda.cuDeviceGet(ctypes.byref(dev), 0) == 0
          and cuda.cuDeviceGetAttribute(ctypes.byref(major), 75, dev) == 0  # COMPUTE_CAPABILITY_MAJOR
          and cuda.cuDeviceGetAttribute(ctypes.byref(minor), 76, dev) == 0  # COMPUTE_CAPABILITY_MINOR
          and cuda.cuDeviceGetName(name, len(name), dev) == 0)
    return (name.value.decode(errors="replace"), f"{major.value}.{minor.value}") if ok else None


def module_tensorrt_version() -> str | None:
    """Version of the ``tensorrt`` Python module (the builder), or None."""
    try:
        import tensorrt
    except Exception:  # absent, or present with its libraries missing
        return None
    return str(tensorrt.__version__)


def library_tensorrt_version() -> str | None:
    """Version of the TensorRT runtime the server uses: NVIDIA's containers export ``TRT_VERSION``;
    otherwise ask ``libnvinfer`` itself. None when neither is there."""
    version = os.environ.get("TRT_VERSION", "").strip()
    if version:
        return version
    for lib in ("libnvinfer.so.10", "libnvinfer.so"):
        try:
            encoded = int(ctypes.CDLL(lib).getInferLibVersion())  # major·10000 + minor·100 + patch
        except (OSError, AttributeError):
            continue
        return f"{encoded // 10000}.{encoded // 100 % 100}.{encoded % 100}"
    return None


def tensorrt_version() -> str:
    """The TensorRT that builds here: the Python module, else the runtime library."""
    version = module_tensorrt_version() or library_tensorrt_version()
    if version is None:
        raise NoPlatform("TensorRT not found (no tensorrt Python module, TRT_VERSION unset, no libnvinfer)")
    return version


def served_tensorrt_version() -> str:
    """The TensorRT that Triton's tensorrt_plan backend loads plans with: the runtime library first
    (a pip-installed module of another version must not hide it), else the module."""
    version = library_tensorrt_version() or module_tensorrt_version()
    if version is None:
        raise NoPlatform("TensorRT not found (TRT_VERSION unset, no libnvinfer, no tensorrt Python module)")
    return version


def current_platform(gpu: Callable[[], tuple[str, str]] = query_gpu,
                     trt_version: Callable[[], str] = tensorrt_version) -> Platform:
    """TensorRT version, GPU name and compute capability here; ``NoPlatform`` without GPU or TensorRT."""
    name, cap = gpu()
    return Platform(trt_version(), name, cap)


# --- the comparison ---------------------------------------------------------------


def same_tensorrt(a: str, b: str) -> bool:
    """Plans follow major.minor.patch; the fourth (build) number differs between the pip wheel and
    the container's libraries of one release (10.5.0 vs 10.5.0.18)."""
    return a.split(".")[:3] == b.split(".")[:3]


def check_compat(record: EngineRecord, here: Platform) -> tuple[list[str], list[str]]:
    """(problems that stop the plan from loading, warnings) for serving ``record`` on ``here``."""
    problems, warnings = [], []
    if not same_tensorrt(record.tensorrt_version, here.tensorrt_version):
        problems.append(f"TensorRT {record.tensorrt_version} built it, this host has {here.tensorrt_version}")
    if record.compute_capability != here.compute_capability:
        problems.append(f"built for compute capability {record.compute_capability} ({record.gpu_name}), "
                        f"this GPU is {here.compute_capability} ({here.gpu_name})")
    elif record.gpu_name != here.gpu_name:
        warnings.append(f"built on {record.gpu_name}, serving on {here.gpu_name} (same compute capability "
                        f"{here.compute_capability}: it loads, but its kernels were timed on the other GPU)")
    return problems, warnings


def rebuild_command(record: EngineRecord) -> str:
    return (f"make build-engines CHECKPOINT=<your checkpoint> ENGINE=trt PRECISION={record.precision} "
            f"TOPK={record.topk} MAX_BATCH={record.max_batch}")


def mismatch_message(plan: str | Path, record: EngineRecord, here: Platform, problems: list[str]) -> str:
    return (f"{plan}: engine built with {record.platform.describe()}; this server has {here.describe()} "
            f"({'; '.join(problems)}). Rebuild it on this host with `{rebuild_command(record)}` (MAX_BATCH: "
            "the plan's; a tuned file, if the first build had one, goes with TUNED= as before)")


def require_compat(plan: str | Path, here: Platform | None = None) -> list[str]:
    """Raise ``EngineMismatch`` naming what to rebuild; return the warnings otherwise."""
    record = read_record(plan)
    here = here or current_platform()
    problems, warnings = check_compat(record, here)
    if problems:
        raise EngineMismatch(mismatch_message(plan, record, here, problems))
    return warnings


def check_served(plan: str | Path, here: Callable[[], Platform] | None = None) -> list[str]:
    """The pre-deploy check (``python -m rtmo_triton.build.trt check``): a no-op (``[]``) without a
    plan (the ONNX and torch flavours); with one, compare its record with this host's TensorRT
    runtime and GPU and raise ``EngineMismatch`` (or ``NoPlatform``) with what to rebuild. Returns
    the warnings."""
    plan = Path(plan)
    if not plan.is_file():
        return []
    read_record(plan)  # a missing or broken record is the first thing to say, GPU or not
    platform = here() if here else current_platform(trt_version=served_tensorrt_version)
    return require_compat(plan, platform)
