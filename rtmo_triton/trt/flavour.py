"""Which engine the repository gets: a TensorRT plan where it can run, the ONNX graph elsewhere."""
from __future__ import annotations

import importlib.util
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass

FLAVOURS = ("auto", "trt", "onnx")


class FlavourError(RuntimeError):
    pass


@dataclass(frozen=True)
class Flavour:
    name: str
    """``trt`` or ``onnx``."""
    reason: str


def tensorrt_missing() -> str | None:
    """Why TensorRT's Python API cannot be used here, or None."""
    if importlib.util.find_spec("tensorrt") is None:
        return "the tensorrt Python module is not installed"
    return None


def gpu_missing() -> str | None:
    """Why no NVIDIA GPU is usable here, or None."""
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return "no NVIDIA GPU visible (nvidia-smi not found)"
    try:
        out = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"nvidia-smi failed: {exc}"
    if out.returncode != 0 or "GPU" not in out.stdout:
        return f"no NVIDIA GPU visible (nvidia-smi: {(out.stderr or out.stdout).strip()[:200]})"
    return None


def choose_flavour(requested: str = "auto", tensorrt_check: Callable[[], str | None] = tensorrt_missing,
                   gpu_check: Callable[[], str | None] = gpu_missing) -> Flavour:
    """``auto`` takes TensorRT when it and a GPU are present; ``trt`` insists and names what is missing."""
    if requested not in FLAVOURS:
        raise FlavourError(f"unknown engine {requested!r}: choose one of {', '.join(FLAVOURS)}")
    if requested == "onnx":
        return Flavour("onnx", "requested (ENGINE=onnx)")
    missing = [m for m in (gpu_check(), tensorrt_check()) if m]
    if not missing:
        found = "NVIDIA GPU and TensorRT found"
        return Flavour("trt", found + (" (requested)" if requested == "trt" else ""))
    if requested == "trt":
        raise FlavourError(f"ENGINE=trt needs an NVIDIA GPU with TensorRT: {'; '.join(missing)}. "
                           "Build inside NVIDIA's Triton container on a GPU host (docs/tensorrt.md), "
                           "or use ENGINE=onnx, which runs on CPU.")
    return Flavour("onnx", f"auto: {'; '.join(missing)}")
