"""Engine flavour choice: automatic, overridable, and a clear refusal of TensorRT where it cannot run."""
import subprocess
import sys

import pytest

from rtmo_triton.build import flavour as flavour_module
from rtmo_triton.build.flavour import FLAVOURS, FlavourError, choose_flavour
from rtmo_triton.build.trt.compat import NoPlatform


def present():
    return None


def no_gpu():
    return "no NVIDIA GPU visible (nvidia-smi not found)"


def no_trt():
    return "the tensorrt Python module is not installed"


def test_flavour_names():
    assert FLAVOURS == ("auto", "trt", "onnx")


def test_auto_takes_tensorrt_when_gpu_and_tensorrt_exist():
    chosen = choose_flavour("auto", present, present)
    assert chosen.name == "trt" and chosen.reason == "NVIDIA GPU and TensorRT found"


@pytest.mark.parametrize(("trt", "gpu", "reason"), [
    (no_trt, present, "auto: the tensorrt Python module is not installed"),
    (present, no_gpu, "auto: no NVIDIA GPU visible (nvidia-smi not found)"),
    (no_trt, no_gpu, "auto: no NVIDIA GPU visible (nvidia-smi not found); "
                     "the tensorrt Python module is not installed"),
])
def test_auto_falls_back_to_onnx_and_says_why(trt, gpu, reason):
    assert choose_flavour("auto", trt, gpu) == flavour_module.Flavour("onnx", reason)


def test_onnx_is_always_possible_and_checks_nothing():
    def never():
        raise AssertionError("detector called for ENGINE=onnx")

    assert choose_flavour("onnx", never, never).name == "onnx"


def test_trt_requested_and_available():
    assert choose_flavour("trt", present, present).reason == "NVIDIA GPU and TensorRT found (requested)"


@pytest.mark.parametrize(("trt", "gpu", "missing"), [
    (no_trt, present, "the tensorrt Python module is not installed"),
    (present, no_gpu, r"no NVIDIA GPU visible \(nvidia-smi not found\)"),
])
def test_trt_is_refused_with_what_is_missing_and_the_alternative(trt, gpu, missing):
    with pytest.raises(FlavourError, match=f"ENGINE=trt needs an NVIDIA GPU with TensorRT: {missing}.*"
                                           "ENGINE=onnx, which runs on CPU"):
        choose_flavour("trt", trt, gpu)


def test_unknown_engine():
    with pytest.raises(FlavourError, match="unknown engine 'tflite': choose one of auto, trt, onnx"):
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


def test_build_engines_with_trt_fails_fast_on_this_machine():
    """The real detectors: on a CPU machine `make build-engines ENGINE=trt` stops before any work."""
    if choose_flavour("auto").name == "trt":
        pytest.skip("this machine has a GPU and TensorRT")
    out = subprocess.run([sys.executable, "-m", "rtmo_triton.build", "--engine", "trt",
                          "--model-repository", "/nonexistent/never-written"], capture_output=True, text=True)
    assert out.returncode == 2
    assert "ENGINE=trt needs an NVIDIA GPU with TensorRT" in out.stderr and "Traceback" not in out.stderr
