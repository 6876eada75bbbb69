"""Which engine the repository gets: a TensorRT plan where it can run, else our PyTorch deploy graph on
CUDA, else the ONNX graph in onnxruntime on the CPU.

The serving config renderer maps ``trt`` to the ``tensorrt_plan`` platform with ``model.plan``,
``torch`` to the Python-backend model running ``model.pt`` in PyTorch (``KIND_GPU`` when the flavour's
device is ``cuda``) and ``onnx`` to the Python-backend model running ``model.onnx``; the ensemble,
preprocess and decode models are the same for all three.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from .. import spec
from .trt.compat import NoPlatform, query_gpu

FLAVOURS = ("auto", "trt", "torch", "onnx")
"""What may be requested (``ENGINE=`` of ``make build-engines``); a chosen ``Flavour`` is one of the rest."""


class FlavourError(RuntimeError):
    pass


@dataclass(frozen=True)
class Flavour:
    name: str
    """``trt``, ``torch`` or ``onnx``."""
    reason: str
    device: str = "cpu"
    """Where the torch flavour runs: ``cuda`` or ``cpu`` (the others: ``cuda`` for trt, ``cpu`` for onnx)."""


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


def torch_cuda_missing() -> str | None:
    """Why PyTorch cannot run on a GPU here, or None. (The repository never carries PyTorch: the
    server's interpreter must have it, as the build's does.)"""
    try:
        import torch
    except ImportError:
        return "PyTorch is not installed"
    if not torch.cuda.is_available():
        return f"PyTorch {torch.__version__} sees no CUDA device"
    return None


def choose_flavour(requested: str = "auto", tensorrt_check: Callable[[], str | None] = tensorrt_missing,
                   gpu_check: Callable[[], str | None] = gpu_missing,
                   torch_cuda_check: Callable[[], str | None] = torch_cuda_missing) -> Flavour:
    """``auto`` takes TensorRT when it and a GPU are present, else PyTorch on CUDA, else onnxruntime on
    the CPU; ``trt`` insists and names what is missing; ``torch`` runs on CUDA where the build's PyTorch
    sees it or an NVIDIA GPU is visible (the build's PyTorch only exports; the server's runs it), on the
    CPU elsewhere; ``onnx`` is always possible. The checks return why something is missing,
    or None."""
    if requested not in FLAVOURS:
        raise FlavourError(f"unknown engine {requested!r}: choose one of {', '.join(FLAVOURS)}")
    if requested == "onnx":
        return Flavour("onnx", "requested (ENGINE=onnx)")
    if requested == "torch":
        no_cuda = torch_cuda_check()
        if no_cuda is None:
            return Flavour("torch", "requested (ENGINE=torch), on CUDA", device="cuda")
        no_gpu = gpu_check()
        if no_gpu is None:  # the build's PyTorch is the CPU wheel `make setup` installs: it only exports
            return Flavour("torch", f"requested (ENGINE=torch), on CUDA: an NVIDIA GPU is visible "
                                    f"({no_cuda} in this build; the server's PyTorch must be a CUDA build)",
                           device="cuda")
        return Flavour("torch", f"requested (ENGINE=torch), on the CPU: {no_cuda}; {no_gpu}")
    no_gpu = gpu_check()
    missing = [m for m in (no_gpu, tensorrt_check()) if m]
    if not missing:
        found = "NVIDIA GPU and TensorRT found"
        return Flavour("trt", found + (" (requested)" if requested == "trt" else ""), device="cuda")
    if requested == "trt":
        raise FlavourError(f"ENGINE=trt needs an NVIDIA GPU with TensorRT: {'; '.join(missing)}. "
                           "Build inside NVIDIA's Triton container on a GPU host (docs/gpu.md), "
                           "or use ENGINE=torch (PyTorch, on CUDA where a GPU is visible) or ENGINE=onnx "
                           "(onnxruntime on the CPU).")
    no_cuda = torch_cuda_check()
    if no_cuda is None:
        return Flavour("torch", f"auto: {'; '.join(missing)}; PyTorch sees CUDA", device="cuda")
    hint = [] if no_gpu else ["ENGINE=torch serves on this GPU"]
    return Flavour("onnx", f"auto: {'; '.join([*missing, no_cuda, *hint])}")


PREPROCESS_PLACES = ("gpu", "cpu")
"""Where a built repository's preprocess and decode models run (``RepositorySpec.preprocess``)."""
PREPROCESS_FORMS = ("auto", *PREPROCESS_PLACES)
"""``PREPROCESS=``: where the preprocess and decode models run. ``gpu``: PyTorch on the engine's device
(``served.gpu``: JPEG decode, letterbox, NMS and DCC decoding there, tensors passed on the device);
``cpu``: numpy and OpenCV on the host; ``auto``: ``gpu`` where the engine is on a GPU."""


def choose_preprocess(requested: str, flavour: Flavour) -> str:
    """``gpu`` or ``cpu`` for an engine ``flavour``. ``gpu`` beside a CPU engine runs the same torch
    stages on the CPU (how CI serves them); ``auto`` keeps the CPU's numpy stages there."""
    if requested not in PREPROCESS_FORMS:
        raise FlavourError(f"unknown preprocess {requested!r}: choose one of {', '.join(PREPROCESS_FORMS)}")
    if requested == "auto":
        return "gpu" if flavour.device == "cuda" else "cpu"
    return requested


def choose_jpeg_decoder(requested: str | None, preprocess: str) -> str:
    """The GPU preprocess's JPEG decoder; naming one for the CPU preprocess is a mistake worth a stop."""
    if requested is not None and preprocess != "gpu":
        raise FlavourError(f"JPEG_DECODER={requested} picks the GPU preprocess's decoder, and this build's "
                           f"preprocess is {preprocess}: add PREPROCESS=gpu, or leave JPEG_DECODER out")
    return requested or spec.DEFAULT_JPEG_DECODER
