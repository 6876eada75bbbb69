"""What a TensorRT plan was built for, recorded beside it and checked before it is served.

A plan deserializes only under the TensorRT version that built it and runs
only on GPUs of the compute capability it was tuned for. Triton's own error
for a mismatch is a deserialization failure deep in its log; this record
turns it into a sentence that says what to rebuild, before the build is
reused and when the server loads the models.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path


class EngineMismatch(RuntimeError):
    pass


class NoPlatform(RuntimeError):
    """No GPU or no TensorRT here: nothing a plan could run on."""


@dataclass(frozen=True)
class Platform:
    tensorrt_version: str
    gpu_name: str
    compute_capability: str
    """e.g. "8.9"."""


@dataclass(frozen=True)
class EngineRecord:
    tensorrt_version: str
    gpu_name: str
    compute_capability: str
    precision: str
    variant: str
    input_size: int
    topk: int
    min_batch: int
    opt_batch: int
    max_batch: int
    onnx_sha256: str
    built_at: str

    @property
    def platform(self) -> Platform:
        return Platform(self.tensorrt_version, self.gpu_name, self.compute_capability)


def record_path(plan: Path) -> Path:
    """``model.plan`` → ``model.plan.json``."""
    return plan.with_name(plan.name + ".json")


def write_record(plan: Path, record: EngineRecord) -> Path:
    path = record_path(plan)
    path.write_text(json.dumps(asdict(record), indent=2) + "\n")
    return path


def read_record(plan: Path) -> EngineRecord:
    path = record_path(plan)
    if not path.is_file():
        raise EngineMismatch(f"{plan} has no build record ({path.name}); rebuild it with `make build-engines "
                             "ENGINE=trt` so its TensorRT version and GPU are known")
    return EngineRecord(**json.loads(path.read_text()))


def query_gpu() -> tuple[str, str]:
    """(name, compute capability) of GPU 0, from nvidia-smi."""
    smi = shutil.which("nvidia-smi")
    if smi is None:
        raise NoPlatform("no NVIDIA GPU visible (nvidia-smi not found)")
    out = subprocess.run([smi, "--query-gpu=name,compute_cap", "--format=csv,noheader"],
                         capture_output=True, text=True, timeout=30)
    line = out.stdout.strip().splitlines()[0] if out.returncode == 0 and out.stdout.strip() else ""
    if "," not in line:
        raise NoPlatform(f"nvidia-smi found no GPU: {(out.stderr or out.stdout).strip()[:200]}")
    name, cap = (part.strip() for part in line.rsplit(",", 1))
    return name, cap


def tensorrt_version() -> str:
    """The TensorRT of this environment: its Python module, else the version NVIDIA's containers export."""
    try:
        import tensorrt

        return tensorrt.__version__
    except ImportError:
        version = os.environ.get("TRT_VERSION")
        if version:
            return version
        raise NoPlatform("TensorRT not found (no tensorrt Python module, TRT_VERSION unset)") from None


def current_platform(gpu: Callable[[], tuple[str, str]] = query_gpu,
                     trt_version: Callable[[], str] = tensorrt_version) -> Platform:
    name, cap = gpu()
    return Platform(trt_version(), name, cap)


def _major_minor_patch(version: str) -> tuple[str, ...]:
    return tuple(version.split(".")[:3])


def check_compat(record: EngineRecord, here: Platform) -> tuple[list[str], list[str]]:
    """(problems that stop the plan from loading, warnings) for serving ``record`` on ``here``."""
    problems, warnings = [], []
    if _major_minor_patch(record.tensorrt_version) != _major_minor_patch(here.tensorrt_version):
        problems.append(f"TensorRT {record.tensorrt_version} built it, this host has {here.tensorrt_version}")
    if record.compute_capability != here.compute_capability:
        problems.append(f"built for compute capability {record.compute_capability} ({record.gpu_name}), "
                        f"this GPU is {here.compute_capability} ({here.gpu_name})")
    elif record.gpu_name != here.gpu_name:
        warnings.append(f"built on {record.gpu_name}, serving on {here.gpu_name} (same compute capability "
                        f"{here.compute_capability}: it loads, but timings were tuned for the other GPU)")
    return problems, warnings


def require_compat(plan: Path, here: Platform | None = None) -> list[str]:
    """Raise ``EngineMismatch`` naming what to rebuild; return the warnings otherwise."""
    record = read_record(plan)
    here = here or current_platform()
    problems, warnings = check_compat(record, here)
    if problems:
        raise EngineMismatch(
            f"{plan} cannot be served here: {'; '.join(problems)}. Rebuild it on this host: "
            f"`make build-engines CHECKPOINT=<your checkpoint> ENGINE=trt PRECISION={record.precision}`"
        )
    return warnings


def check_served(plan: Path) -> list[str]:
    """For a Triton model's ``initialize``: no-op without a plan (CPU flavour), else ``require_compat``."""
    if not plan.is_file():
        return []
    return require_compat(plan)
