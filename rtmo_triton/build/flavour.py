"""Which engine the repository gets: a TensorRT plan where it can run, the ONNX graph elsewhere.

The serving config renderer maps ``trt`` to the ``tensorrt_plan`` platform with
``model.plan`` and ``onnx`` to the Python-backend model running ``model.onnx``;
the ensemble, preprocess and decode models are the same for both.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from .compat import NoPlatform, query_gpu

FLAVOURS = ("auto", "trt", "onnx")
"""What may be requested (``ENGINE=`` of ``make build-engines``); a chosen ``Flavour`` is trt or onnx."""


class FlavourError(RuntimeError):
    pass


@dataclass(frozen=True)
class Flavour:
    name: str
    """``trt`` or ``onnx``."""
    reason: str


def tensorrt_missing() -> str | None:
    """Why TensorRT's Python API cannot be used here, or None."""
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        return "the tensorrt Python module is not installed"
    except Exception as exc:  # installed, but its libraries do not load
        return f"the tensorrt Python module does not load ({type(exc).__name__}: {exc})"
    return None


def gpu_missing() -> str | None:
    """Why no NVIDIA GPU is usable here, or None."""
    try:
        query_gpu()
    except NoPlatform as exc:
        return str(exc)
    return None


def choose_flavour(requested: str = "auto", tensorrt_check: Callable[[], str | None] = tensorrt_missing,
                   gpu_check: Callable[[], str | None] = gpu_missing) -> Flavour:
    """``auto`` takes TensorRT when it and a GPU are present; ``trt`` insists and names what is missing;
    ``onnx`` is always possible. The checks return why something is missing, or None."""
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
