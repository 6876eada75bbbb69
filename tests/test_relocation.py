"""The built repository is the deployable artifact: copied elsewhere, original deleted, served by
the Triton binary itself in a scrubbed environment, it gives the reference's people.

The server binary, its backend and libraries are copied out of the virtualenv too, and it runs
with no PATH entry, PYTHONPATH or VIRTUAL_ENV of ours, from another working directory, with a fresh
package cache: what the Python models import can only come from the repository and the server's
own interpreter.
"""
from __future__ import annotations

import shutil
import sys
from pathlib import Path

import cv2
import pytest

from rtmo_triton.client import infer
from rtmo_triton.serve.local import TritonServer
from rtmo_triton.serve.tritonserver import STUB, pytriton_root
from rtmo_triton.served.bundle import CACHE_ENV

from .golden import OUTPUT_FILES, assert_people_match, load_output
from .served import build_fixture_repository, require_server

pytestmark = pytest.mark.server


def copied_server(root: Path, dst: Path) -> tuple[list[str], dict[str, str]]:
    """pytriton's tritonserver, backend and libraries copied to ``dst``; its argv and bare environment."""
    shutil.copytree(root / "bin", dst / "bin")
    shutil.copytree(root / "backends", dst / "backends")
    shutil.copytree(root.parents[1] / "nvidia_pytriton.libs", dst / "libs")
    assert (dst / "backends" / "python" / STUB).exists(), "make setup installs the stub"
    env = {"PATH": "/usr/bin:/bin", "LD_LIBRARY_PATH": str(dst / "libs"), "HOME": str(dst),
           CACHE_ENV: str(dst / "package-cache")}
    return [str(dst / "bin" / "tritonserver"), f"--backend-directory={dst / 'backends'}"], env


def test_a_copied_repository_serves_the_reference_people_without_our_environment(tmp_path):
    require_server()
    built = build_fixture_repository(tmp_path / "built")
    elsewhere = tmp_path / "elsewhere" / "models"
    shutil.copytree(built, elsewhere)
    shutil.rmtree(built)
    for config in elsewhere.glob("*/config.pbtxt"):
        text = config.read_text()
        for local in (str(tmp_path), sys.prefix, str(Path(__file__).resolve().parents[1])):
            assert local not in text, f"{config} names a path of the build machine: {local}"
    launch = copied_server(pytriton_root(), tmp_path / "server")
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    refs = [load_output(p) for p in OUTPUT_FILES]
    images = [cv2.imencode(".png", r["img_bgr"])[1].tobytes() for r in refs]
    with TritonServer(elsewhere, log_path=tmp_path / "server.log", launch=launch, cwd=cwd) as server:
        people = infer(server.grpc_url, "grpc", images, concurrency=2)
    for p, ref in zip(people, refs, strict=True):
        assert p.ok, p.error
        assert_people_match(*p.arrays, ref)
    unpacked = {p.name.split("-")[0] for p in (tmp_path / "server" / "package-cache").iterdir()}
    assert unpacked == {f"py{sys.version_info.major}.{sys.version_info.minor}"}, unpacked


def test_a_loader_killed_while_unpacking_leaves_nothing_for_long(tmp_path, monkeypatch):
    """Unpacking goes through a temporary folder renamed into place; one left by a killed loader is
    removed by the next loader once it is old, while a young one (a loader at work) is left alone."""
    import io
    import os
    import tarfile
    import time

    from rtmo_triton.served import bundle

    version_dir = tmp_path / "model" / "1"
    (version_dir / bundle.PACKAGES_DIR).mkdir(parents=True)
    archive = version_dir / bundle.PACKAGES_DIR / bundle.archive_name(bundle.running_python())
    with tarfile.open(archive, "w:gz") as tar:
        info = tarfile.TarInfo("carried_module.py")
        info.size = len(b"VALUE = 1\n")
        tar.addfile(info, io.BytesIO(b"VALUE = 1\n"))
    cache = tmp_path / "cache"
    monkeypatch.setenv(bundle.CACHE_ENV, str(cache))
    monkeypatch.setattr(sys, "path", list(sys.path))
    first = bundle.use_bundled_packages(version_dir)
    assert (first / "carried_module.py").is_file() and sys.path[0] == str(first)
    shutil.rmtree(first)  # as if never unpacked: the next loader unpacks again
    old, young = cache / f"{first.name}.killed", cache / f"{first.name}.working"
    for folder in (old, young):
        folder.mkdir()
    long_ago = time.time() - bundle.STALE_UNPACK_S - 60
    os.utime(old, (long_ago, long_ago))
    assert bundle.use_bundled_packages(version_dir) == first and (first / "carried_module.py").is_file()
    assert not old.exists() and young.is_dir()
