"""What each Python model carries into the server: our served code and its pinned third-party wheels.

The wheels are installed per model and per CPython version with ``pip install --target`` for the
serving platform (no interpreter of that version is needed here), packed into one archive each and
kept in the build workspace keyed by their pins, Python and platform: a later build, a new checkpoint
or another engine reuses them instead of packing again. ``served.bundle`` unpacks them in the server.
"""
from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

from .. import spec
from ..served.bundle import PACKAGES_DIR, archive_name
from ..whole_files import writing

TORCH_ENGINE = "rtmo_engine_torch"
"""Module of the torch flavour's engine (served/models/), installed as the ``rtmo_engine`` model."""
GPU_MODULES = {spec.PREPROCESS_NAME: "rtmo_preprocess_gpu", spec.DECODE_NAME: "rtmo_decode_gpu"}
"""Modules of the GPU-resident preprocess and decode (``PREPROCESS=gpu``), installed under the models'
names: the ensemble is the same for both forms."""
TRITON_CONTAINER = "nvcr.io/nvidia/tritonserver:24.10-py3"
"""NVIDIA's serving image (deploy/docker/gpu.Dockerfile): Triton 2.51, as PyPI's server here."""
CONTAINER_PYTHON = "3.10"
"""Its interpreter, which runs the Python models' stubs there."""

_NUMPY, _OPENCV = "numpy==1.26.4", "opencv-python-headless==4.11.0.86"
_IMAGES = (_NUMPY, _OPENCV, "pillow==12.1.1", "simplejpeg==1.9.0")
SERVED_PACKAGES: dict[str, tuple[str, ...]] = {
    spec.PREPROCESS_NAME: _IMAGES,
    spec.ENGINE_NAME: (_NUMPY, "onnxruntime==1.32.0"),
    spec.DECODE_NAME: (_NUMPY, _OPENCV),  # OpenCV's NMS
    TORCH_ENGINE: (_NUMPY,),
    GPU_MODULES[spec.PREPROCESS_NAME]: _IMAGES,
    GPU_MODULES[spec.DECODE_NAME]: (_NUMPY,),
}
"""Pinned, the versions the tests run with, and only what the model imports
(onnxruntime's other requirements serve its tools, not ``InferenceSession``). The GPU preprocess
carries the CPU preprocess's packages for the images its GPU decoder cannot take. The torch models carry
numpy only (Triton's own ``triton_python_backend_utils`` imports it, and ``pip install torch`` does not
bring it); PyTorch itself, GBs, must be in the server's interpreter."""

LAST_RELEASE_FOR: dict[str, dict[str, str]] = {"3.10": {"onnxruntime": "1.23.2"}}
"""Where a pinned package has dropped an interpreter, the last release with its wheels. onnxruntime
1.23.2 ran the RTMO-s graph 29 % slower than 1.32.0 here (653 vs 507 ms per image, one thread), so
only the container's 3.10 gets it."""


def pins_for(model: str, python: str) -> tuple[str, ...]:
    """``SERVED_PACKAGES[model]`` for CPython ``python``."""
    older = LAST_RELEASE_FOR.get(python, {})
    return tuple(f"{name}=={older[name]}" if (name := pin.split("==")[0]) in older else pin
                 for pin in SERVED_PACKAGES[model])


CODE = ("__init__.py", "spec.py", "people.py", "digest.py", "served")
"""The parts of ``rtmo_triton`` that run inside the server; nothing else of the package is vendored."""
EXTRA_CODE = {TORCH_ENGINE: ("model",)}
"""More of the package for one model: the torch engine rebuilds our PyTorch deploy graph."""
PACKAGE_ROOT = Path(__file__).resolve().parents[1]

MODEL_PY = '''"""Triton Python model `{name}`: code in rtmo_triton/served/models/{name}.py, vendored here."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from rtmo_triton.served.models.{name} import TritonPythonModel  # noqa: E402,F401
'''


class PackagingError(RuntimeError):
    pass


def default_pythons() -> tuple[str, ...]:
    """The container's interpreter and this one (which the CPU server here runs its stubs with)."""
    here = f"{sys.version_info.major}.{sys.version_info.minor}"
    return tuple(sorted({CONTAINER_PYTHON, here}, key=lambda v: tuple(map(int, v.split(".")))))


def wheel_platforms() -> list[str]:
    """manylinux tags for this machine's architecture, newest first (pip does not widen them itself)."""
    arch = platform.machine()
    return [f"manylinux_2_28_{arch}", f"manylinux_2_17_{arch}", f"manylinux2014_{arch}"]


def packed_archive(model: str, python: str, workspace: Path, log=print) -> Path:
    """The archive of ``model``'s pinned wheels for CPython ``python``, packed once and then reused."""
    pins = pins_for(model, python)
    platforms = wheel_platforms()
    key = hashlib.sha256(json.dumps([pins, python, platforms]).encode()).hexdigest()[:16]
    archive = workspace / "packages" / f"{model}-py{python}-{key}.tar.gz"
    if archive.is_file():
        log(f"packages of {model} for Python {python}: reused {archive}")
        return archive
    start = time.perf_counter()
    _install_and_pack(["--only-binary=:all:", "--implementation", "cp", "--python-version", python,
                       *(f"--platform={p}" for p in platforms), *pins], archive,
                      what=f"{' '.join(pins)} for Python {python} ({', '.join(platforms)})")
    log(f"packages of {model} for Python {python}: packed {archive.stat().st_size / 2**20:.0f} MiB "
        f"in {time.perf_counter() - start:.1f} s ({archive})")
    return archive


def archive_of_wheels(wheels: list[Path], archive: Path) -> Path:
    """The same kind of archive from wheel files at hand, for this interpreter (offline hosts)."""
    _install_and_pack(["--no-index", *map(str, wheels)], archive, what=", ".join(w.name for w in wheels))
    return archive


def _install_and_pack(pip_args: list[str], archive: Path, *, what: str) -> None:
    """``pip install --target`` then one tar.gz of the result, written atomically."""
    archive.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=archive.parent) as tmp:
        target = Path(tmp) / "site-packages"
        command = [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                   "--no-deps", "--no-compile", "--target", str(target), *pip_args]
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode != 0:
            raise PackagingError(f"pip could not install {what}:\n{done.stderr.strip()[-2000:]}")
        with writing(archive) as partial, tarfile.open(partial, "w:gz", compresslevel=6) as tar:
            for path in sorted(target.iterdir()):
                tar.add(path, arcname=path.name,
                        filter=lambda info: None if "__pycache__" in info.name else info)


def vendor_code(version_dir: Path, extra: tuple[str, ...] = ()) -> None:
    """Copy the served part of ``rtmo_triton`` (and ``extra`` parts) beside ``model.py``, replacing an
    older copy."""
    dst = version_dir / PACKAGE_ROOT.name
    shutil.rmtree(dst, ignore_errors=True)
    dst.mkdir(parents=True)
    for part in (*CODE, *extra):
        src = PACKAGE_ROOT / part
        if src.is_dir():
            shutil.copytree(src, dst / part, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copyfile(src, dst / part)


def _link_or_copy(src: Path, dst: Path) -> None:
    """Hard links keep repeated builds on one disk free; elsewhere (or across devices) copy."""
    dst.unlink(missing_ok=True)
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)


def install_python_model(repo: Path, model: str, *, pythons: tuple[str, ...], workspace: Path,
                         log=print, module: str | None = None) -> None:
    """``<repo>/<model>/1``: the generated ``model.py``, our vendored code and one archive per Python.
    ``module``: the served module, when it is not named as the model (the torch engine)."""
    module = module or model
    version_dir = repo / model / spec.MODEL_VERSION
    version_dir.mkdir(parents=True, exist_ok=True)
    (version_dir / "model.py").write_text(MODEL_PY.format(name=module))
    vendor_code(version_dir, EXTRA_CODE.get(module, ()))
    shutil.rmtree(version_dir / PACKAGES_DIR, ignore_errors=True)
    if pythons:
        (version_dir / PACKAGES_DIR).mkdir()
        for python in pythons:
            archive = packed_archive(module, python, workspace, log)
            _link_or_copy(archive, version_dir / PACKAGES_DIR / archive_name(python))
