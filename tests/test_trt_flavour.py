"""Engine flavour choice: automatic, overridable, and a clear refusal of TensorRT where it cannot run."""
import subprocess
import sys

import pytest

from rtmo_triton.trt.flavour import FlavourError, choose_flavour


def present():
    return None


def no_gpu():
    return "no NVIDIA GPU visible (nvidia-smi not found)"


def no_trt():
    return "the tensorrt Python module is not installed"


def test_auto_takes_tensorrt_when_gpu_and_tensorrt_exist():
    assert choose_flavour("auto", present, present).name == "trt"


@pytest.mark.parametrize(("trt", "gpu", "missing"), [(no_trt, present, "tensorrt"), (present, no_gpu, "GPU"),
                                                     (no_trt, no_gpu, "GPU")])
def test_auto_falls_back_to_onnx_and_says_why(trt, gpu, missing):
    flavour = choose_flavour("auto", trt, gpu)
    assert flavour.name == "onnx" and missing in flavour.reason


def test_onnx_is_always_possible():
    assert choose_flavour("onnx", no_trt, no_gpu).name == "onnx"


def test_trt_is_refused_with_what_is_missing_and_the_alternative():
    with pytest.raises(FlavourError, match="tensorrt Python module is not installed.*ENGINE=onnx"):
        choose_flavour("trt", no_trt, present)


def test_unknown_engine():
    with pytest.raises(FlavourError, match="auto, trt, onnx"):
        choose_flavour("tflite")


def test_build_engines_with_trt_fails_fast_on_this_machine():
    """The real detectors: on a CPU machine `make build-engines ENGINE=trt` stops before any work."""
    if choose_flavour("auto").name == "trt":
        pytest.skip("this machine has a GPU and TensorRT")
    out = subprocess.run([sys.executable, "-m", "rtmo_triton.serving.build", "--engine", "trt",
                          "--model-repository", "/nonexistent/never-written"], capture_output=True, text=True)
    assert out.returncode == 2
    assert "ENGINE=trt needs an NVIDIA GPU with TensorRT" in out.stderr and "Traceback" not in out.stderr
