"""Engine flavour choice: TensorRT where it can run, else PyTorch on CUDA, else onnxruntime on the CPU;
overridable, and a clear refusal of TensorRT where it cannot run."""
import subprocess
import sys

import pytest

from rtmo_triton import spec
from rtmo_triton.build import flavour as flavour_module
from rtmo_triton.build.flavour import (
    FLAVOURS,
    Flavour,
    FlavourError,
    choose_flavour,
    choose_jpeg_decoder,
    choose_preprocess,
)
from rtmo_triton.build.trt.compat import NoPlatform

NO_CUDA = "PyTorch 2.11.0 sees no CUDA device"
NO_GPU = "no NVIDIA GPU visible (nvidia-smi not found)"
NO_TRT = "the tensorrt Python module is not installed"


def present():
    return None


def no_gpu():
    return NO_GPU


def no_trt():
    return NO_TRT


def no_cuda():
    return NO_CUDA


def never():
    raise AssertionError("detector called where it must not be")


def test_flavour_names():
    assert FLAVOURS == ("auto", "trt", "torch", "onnx")


def test_auto_takes_tensorrt_when_gpu_and_tensorrt_exist():
    chosen = choose_flavour("auto", present, present, never)
    assert chosen == Flavour("trt", "NVIDIA GPU and TensorRT found", "cuda")


def test_auto_takes_torch_on_cuda_without_tensorrt():
    chosen = choose_flavour("auto", no_trt, present, present)
    assert chosen == Flavour("torch", f"auto: {NO_TRT}; PyTorch sees CUDA", "cuda")


@pytest.mark.parametrize(("trt", "gpu", "reason"), [
    (no_trt, present, f"auto: {NO_TRT}; {NO_CUDA}; ENGINE=torch serves on this GPU"),
    (present, no_gpu, f"auto: {NO_GPU}; {NO_CUDA}"),
    (no_trt, no_gpu, f"auto: {NO_GPU}; {NO_TRT}; {NO_CUDA}"),
])
def test_auto_falls_back_to_onnx_and_says_why(trt, gpu, reason):
    assert choose_flavour("auto", trt, gpu, no_cuda) == Flavour("onnx", reason)


def test_onnx_is_always_possible_and_checks_nothing():
    assert choose_flavour("onnx", never, never, never).name == "onnx"


def test_torch_runs_on_cuda_where_pytorch_sees_it_and_on_the_cpu_elsewhere():
    on_cuda = choose_flavour("torch", never, never, present)
    assert on_cuda == Flavour("torch", "requested (ENGINE=torch), on CUDA", "cuda")
    on_cpu = choose_flavour("torch", never, no_gpu, no_cuda)
    assert on_cpu == Flavour("torch", f"requested (ENGINE=torch), on the CPU: {NO_CUDA}; {NO_GPU}", "cpu")


def test_torch_runs_on_a_visible_gpu_though_the_build_has_cpu_pytorch():
    """`make setup` installs PyTorch's CPU wheel (it only exports): a GPU host must still get KIND_GPU."""
    chosen = choose_flavour("torch", never, present, no_cuda)
    assert chosen.device == "cuda"
    assert f"an NVIDIA GPU is visible ({NO_CUDA} in this build" in chosen.reason


def test_trt_requested_and_available():
    chosen = choose_flavour("trt", present, present, never)
    assert chosen == Flavour("trt", "NVIDIA GPU and TensorRT found (requested)", "cuda")


@pytest.mark.parametrize(("trt", "gpu", "missing"), [
    (no_trt, present, "the tensorrt Python module is not installed"),
    (present, no_gpu, r"no NVIDIA GPU visible \(nvidia-smi not found\)"),
])
def test_trt_is_refused_with_what_is_missing_and_the_alternatives(trt, gpu, missing):
    with pytest.raises(FlavourError, match=f"ENGINE=trt needs an NVIDIA GPU with TensorRT: {missing}.*"
                                           r"ENGINE=torch \(PyTorch.*ENGINE=onnx"):
        choose_flavour("trt", trt, gpu, never)


def test_unknown_engine():
    with pytest.raises(FlavourError, match="unknown engine 'tflite': choose one of auto, trt, torch, onnx"):
        choose_flavour("tflite")


def test_detectors(monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    assert flavour_module.tensorrt_missing() == "the tensorrt Python module is not installed"
    monkeypatch.setattr(flavour_module, "query_gpu", lambda: ("NVIDIA L4", "8.9"))
    assert flavour_module.gpu_missing() is None

    def none():
        raise NoPlatform("no NVIDIA GPU visible (nvidia-smi not found)")
    monkeypatch.setattr(flavour_module, "query_gpu", none)
    assert flavour_module.gpu_missing() == "no NVIDIA GPU visible (nvidia-smi not found)"
    monkeypatch.setitem(sys.modules, "torch", None)
    assert flavour_module.torch_cuda_missing() == "PyTorch is not installed"


def test_torch_detector_here():
    import torch

    missing = flavour_module.torch_cuda_missing()
    assert (missing is None) == torch.cuda.is_available()
    if missing:
        assert missing == f"PyTorch {torch.__version__} sees no CUDA device"


def test_build_engines_with_trt_fails_fast_on_this_machine():
    """The real detectors: on a CPU machine `make build-engines ENGINE=trt` stops before any work."""
    if choose_flavour("auto").name == "trt":
        pytest.skip("this machine has a GPU and TensorRT")
    out = subprocess.run([sys.executable, "-m", "rtmo_triton.build", "--engine", "trt",
                          "--model-repository", "/nonexistent/never-written"], capture_output=True, text=True)
    assert out.returncode == 2
    assert "ENGINE=trt needs an NVIDIA GPU with TensorRT" in out.stderr and "Traceback" not in out.stderr


@pytest.mark.parametrize(("requested", "device", "chosen"), [
    ("auto", "cuda", "gpu"), ("auto", "cpu", "cpu"), ("gpu", "cpu", "gpu"), ("cpu", "cuda", "cpu"),
    ("gpu", "cuda", "gpu")])
def test_preprocess_follows_the_engine_unless_asked(requested, device, chosen):
    flavour = Flavour("torch", "test", device=device)
    assert choose_preprocess(requested, flavour) == chosen


def test_unknown_preprocess():
    with pytest.raises(FlavourError, match="unknown preprocess"):
        choose_preprocess("fpga", Flavour("onnx", "test"))


def test_the_jpeg_decoder_defaults_and_belongs_to_the_gpu_preprocess():
    assert choose_jpeg_decoder(None, "gpu") == spec.DEFAULT_JPEG_DECODER
    assert choose_jpeg_decoder("nvimgcodec", "gpu") == "nvimgcodec"
    assert choose_jpeg_decoder(None, "cpu") == spec.DEFAULT_JPEG_DECODER  # unused there, never written
    with pytest.raises(FlavourError, match="add PREPROCESS=gpu"):
        choose_jpeg_decoder("nvimgcodec", "cpu")
