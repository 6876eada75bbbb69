"""``make gpu-check-prepare``: what an offline GPU host lacks for ``make gpu-check``, in ``.gpu-check/``.

The GPU hosts we can test on have CUDA PyTorch, numpy 2, OpenCV, Pillow, onnx and onnxruntime for
Python 3.12, but no tritonserver, no tritonclient, no simplejpeg, and no network. This packs, into
``.gpu-check/packed/``:

- ``tritonserver.tar.xz``: PyPI's pytriton server (a GPU build) trimmed to the binary, the Python
  backend with the stub for the host's Python, and the libraries they load (symbols stripped), laid
  out as in site-packages so the binaries' relative library paths hold;
- ``wheels.tar.xz``: the wheels, stored uncompressed inside so that xz sees their contents (35 MiB
  of wheels become 21, which is what lets the bundle travel in two device calls instead of three):

  - ``wheels/server/``: what the served Python models import and the host lacks (simplejpeg, and
    nvImageCodec with nvJPEG's runtime for the second GPU JPEG decoder, its wheel trimmed to the
    host's Python and the JPEG extensions), installed into the host's interpreter by
    ``perf.gpu.check --bundle``;
  - ``wheels/stub/``: numpy 1, carried by every Python model of the repository the check serves, ahead
    of the host's numpy 2, which Triton 2.51's Python backend cannot exchange arrays with
    (``served.tensor_exchange``);
  - ``wheels/client/``: tritonclient and what its gRPC client needs in the versions this checkout
    runs, put on the check's own ``sys.path`` only.

A device call carries the checkout (tracked files included) and its ``carry`` paths, 64 MiB in all,
which this does not fit into. So it travels in parts, ``.gpu-check/call1``, ``call2``...: each call
copies its part into one folder on the warm machine and the last one runs the check from there. The
calls are printed at the end (docs/gpu.md).
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from importlib import metadata
from pathlib import Path

from rtmo_triton.build.packages import SERVED_PACKAGES, wheel_platforms
from rtmo_triton.serve.tritonserver import PYTRITON_LIBS, STUB, STUBS_DIR
from rtmo_triton.whole_files import writing

DEFAULT_BUNDLE = Path(".gpu-check")
SERVER_ARCHIVE = "tritonserver.tar.xz"
WHEELS_ARCHIVE = "wheels.tar.xz"
WHEELS = "wheels"
"""The folder inside ``WHEELS_ARCHIVE``: ``server/``, ``stub/`` and ``client/`` below it."""
HOST_PYTHON = "3.12"
HOST_LACKS = ("simplejpeg",)
"""What the served models import and the GPU hosts' Python lacks; packed at the served pins."""
STUB_NEEDS = ("numpy",)
"""What the served models must carry ahead of the host's own packages; packed at the served pins."""
GPU_DECODER = "nvidia-nvimgcodec-cu13"
"""Packed in this checkout's version (a dev dependency)."""
NVJPEG = "nvidia-nvjpeg>=13.0,<13.1"
"""nvJPEG's runtime for CUDA 13.0: the GPU hosts' driver (580) and PyTorch's CUDA runtime are 13.0."""
DECODER_KEEPS = ("nvidia/__init__.py", "nvidia/nvimgcodec/__init__.py", "nvidia/nvimgcodec/libnvimgcodec.so",
                 "nvidia/nvimgcodec/extensions/libnvjpeg_ext.so",
                 "nvidia/nvimgcodec/extensions/libjpeg_turbo_ext.so")
"""What the preprocess uses of nvImageCodec's wheel (besides its Python module and metadata): the
JPEG 2000, TIFF, OpenCV, BMP and PNM extensions, headers and tools stay behind (about 50 MB)."""
CLIENT_PACKAGES = ("tritonclient", "python-rapidjson", "protobuf", "grpcio")
LIMIT_BYTES = 64 << 20
MARGIN_BYTES = 1 << 20
"""Room left in each call for files the checkout gains between packing and the call."""
STAGE = "/tmp/gpu-check/bundle"
"""Where the device calls gather the parts."""


def served_pins(names: tuple[str, ...]) -> list[str]:
    """The repository's own pins (``build.packages``) of the named packages."""
    pins = {pin.split("==")[0]: pin for pins in SERVED_PACKAGES.values() for pin in pins}
    return [pins[name] for name in names]


def server_files(root: Path, python: str) -> list[tuple[Path, str]]:
    """(source, path in the archive) of the trimmed server from pytriton's ``tritonserver`` folder."""
    site = root.parents[1]
    stub = root / STUBS_DIR / python / STUB
    if not stub.exists():
        raise SystemExit(f"nvidia-pytriton has no Python backend stub for Python {python}")
    files = [(root / "bin" / "tritonserver", "pytriton/tritonserver/bin/tritonserver"),
             (stub, f"pytriton/tritonserver/backends/python/{STUB}")]
    for name in ("libtriton_python.so", "triton_python_backend_utils.py"):
        files.append((root / "backends" / "python" / name, f"pytriton/tritonserver/backends/python/{name}"))
    for lib in sorted((site / PYTRITON_LIBS).iterdir()):
        if not lib.name.startswith("libpython"):  # the 3.13 stub's own interpreter: not needed here
            files.append((lib, f"{PYTRITON_LIBS}/{lib.name}"))
    return files


def pack_server(out: Path, python: str, log=print) -> Path:
    from rtmo_triton.serve.tritonserver import pytriton_root

    root = pytriton_root()
    if root is None:
        raise SystemExit("nvidia-pytriton is not installed here: run `make setup` first")
    archive = out / SERVER_ARCHIVE
    strip = shutil.which("strip")
    with tempfile.TemporaryDirectory() as tmp:
        for src, rel in server_files(root, python):
            dst = Path(tmp) / rel
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst)
            if strip and not rel.endswith(".py"):
                subprocess.run([strip, "--strip-unneeded", str(dst)], capture_output=True)
        log(f"packing the server (xz, a few minutes){'' if strip else '; no strip found, unstripped'} ...")
        with writing(archive) as partial, tarfile.open(partial, "w:xz", preset=9) as tar:
            for top in ("pytriton", PYTRITON_LIBS):
                tar.add(Path(tmp) / top, arcname=top)
    return archive


def download(specs: list[str], dest: Path, python: str) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check", "--no-deps",
               "--only-binary=:all:", "--implementation", "cp", "--python-version", python,
               *(f"--platform={p}" for p in wheel_platforms()), "-d", str(dest), *specs]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"pip download {' '.join(specs)} failed:\n{done.stderr[-2000:]}")


def trim_wheel(wheel: Path, python: str) -> None:
    """Rewrite nvImageCodec's wheel in place with only what the preprocess loads under CPython ``python``
    (``DECODER_KEEPS``), its RECORD listing what is left."""
    module = f"nvidia/nvimgcodec/nvimgcodec_impl.cpython-{python.replace('.', '')}-"
    with zipfile.ZipFile(wheel) as src:
        names = [n for n in src.namelist() if ".dist-info/" in n or n.startswith(module)
                 or any(n.startswith(keep) for keep in DECODER_KEEPS)]
        if not any(n.startswith(module) for n in names):
            raise SystemExit(f"{wheel.name} has no module for CPython {python}")
        record = next(n for n in names if n.endswith(".dist-info/RECORD"))
        kept = set(names)
        lines = [line for line in src.read(record).decode().splitlines() if line.split(",")[0] in kept]
        with writing(wheel) as partial, zipfile.ZipFile(partial, "w", zipfile.ZIP_DEFLATED) as out:
            for name in names:
                out.writestr(src.getinfo(name), "\n".join(lines) + "\n" if name == record else src.read(name))


def store_wheel(wheel: Path) -> None:
    """Rewrite ``wheel`` in place with its members stored, not deflated: xz cannot compress deflated
    data, and stored members give it the contents. The files and RECORD are unchanged."""
    with zipfile.ZipFile(wheel) as src, writing(wheel) as partial, \
            zipfile.ZipFile(partial, "w", zipfile.ZIP_STORED) as out:
        for info in src.infolist():
            data = src.read(info)
            info.compress_type = zipfile.ZIP_STORED
            out.writestr(info, data)


def archive_wheels(folder: Path, archive: Path) -> None:
    """``folder``'s wheels, each stored (``store_wheel``), into the tar.xz ``archive`` under ``WHEELS``."""
    for wheel in folder.rglob("*.whl"):
        store_wheel(wheel)
    with writing(archive) as partial, tarfile.open(partial, "w:xz") as tar:
        tar.add(folder, arcname=WHEELS)


def unpack_wheels(archive: Path, dest: Path) -> Path:
    """The wheels of ``archive`` unpacked afresh under ``dest``; returns the folder of ``server/``,
    ``stub/`` and ``client/`` (empty where the bundle has no wheels)."""
    folder = dest / WHEELS
    shutil.rmtree(folder, ignore_errors=True)
    if archive.is_file():
        with tarfile.open(archive) as tar:
            tar.extractall(dest, filter="data")
    return folder


def travelling_bytes(repo: Path, exclude: Path) -> int:
    """Tracked and untracked-not-ignored files of the checkout (what a device call sends besides carry)."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=repo,
                            capture_output=True, check=True).stdout.split(b"\0")
    total = 0
    for name in filter(None, listed):
        path = repo / name.decode()
        if path.is_file() and exclude not in path.parents:
            total += path.stat().st_size
    return total


def ignore_locally(repo: Path, folder: Path) -> None:
    """The bundle must not be tracked, only carried: list it in .git/info/exclude."""
    exclude = repo / ".git" / "info" / "exclude"
    entry = f"/{folder.name}/"
    if not (repo / ".git").is_dir():
        return
    exclude.parent.mkdir(exist_ok=True)
    if entry not in (exclude.read_text().split() if exclude.is_file() else []):
        with exclude.open("a") as f:
            f.write(f"\n{entry}\n")


def size_mib(n: int) -> str:
    return f"{n / 2**20:.1f} MiB"


def split(files: list[tuple[Path, int]], room: int) -> list[list[Path]]:
    """Files into as few parts of at most ``room`` bytes as first-fit, largest first, gives."""
    parts: list[tuple[int, list[Path]]] = []
    for path, size in sorted(files, key=lambda f: -f[1]):
        if size > room:
            raise SystemExit(f"{path.name} ({size_mib(size)}) alone is over what a device call has room for "
                             f"({size_mib(room)}): ignore or remove untracked files (git status) and retry")
        for i, (used, members) in enumerate(parts):
            if used + size <= room:
                parts[i] = (used + size, [*members, path])
                break
        else:
            parts.append((size, [path]))
    return [members for _, members in parts]


def device_calls(out: Path, count: int, repo: Path) -> list[str]:
    """The ``run`` calls that stage each part and then run the check (docs/gpu.md)."""
    rel = out.relative_to(repo)
    check = (f"PYTHONUNBUFFERED=1 python3 -m perf.gpu.check --bundle {STAGE} --out $OUT"
             f" --work {Path(STAGE).parent} --deadline-s 400 --label <commit> 2>&1 | tee $OUT/gpu_check.log")
    calls = []
    for k in range(1, count + 1):
        stage = f"mkdir -p {STAGE} && cp -r {rel}/call{k}/. {STAGE}/"
        if k < count:  # staging only
            calls.append(f'run(command="{stage} && ls -R {STAGE}", carry=["{rel}/call{k}"], timeout_s=60)')
        else:
            calls.append(f'run(command="set -o pipefail; {stage} && {check}", carry=["{rel}/call{k}"], '
                         "timeout_s=540)")
    return calls


def pack(packed: Path, python: str) -> None:
    """The whole bundle for CPython ``python`` into ``packed``; a server packed for it before is kept."""
    packed.mkdir(parents=True, exist_ok=True)
    archive, stub_python = packed / SERVER_ARCHIVE, packed / "stub-python.txt"
    if archive.is_file() and stub_python.is_file() and stub_python.read_text() == python:
        print(f"server archive kept: {archive} ({size_mib(archive.stat().st_size)}); delete it to repack")
    else:
        pack_server(packed, python)
        stub_python.write_text(python)
    shutil.rmtree(packed / WHEELS, ignore_errors=True)  # loose wheels a bundle packed before the archive left
    with tempfile.TemporaryDirectory() as tmp:
        wheels = Path(tmp) / WHEELS
        server = wheels / "server"
        download(served_pins(HOST_LACKS), server, python)
        download([f"{GPU_DECODER}=={metadata.version(GPU_DECODER)}", NVJPEG], server, python)
        for wheel in server.glob(f"{GPU_DECODER.replace('-', '_')}-*.whl"):
            trim_wheel(wheel, python)
        download(served_pins(STUB_NEEDS), wheels / "stub", python)
        download([f"{name}=={metadata.version(name)}" for name in CLIENT_PACKAGES], wheels / "client",
                 python)
        print(f"packing the wheels into {WHEELS_ARCHIVE} (xz, about a minute) ...", flush=True)
        archive_wheels(wheels, packed / WHEELS_ARCHIVE)


def lay_out_parts(out: Path, packed: Path, repo: Path) -> int:
    """Hard-link the packed files into ``out/call<k>`` folders that each fit a device call; returns k."""
    tree = travelling_bytes(repo, out)
    parts = split([(f, f.stat().st_size) for f in sorted(packed.rglob("*")) if f.is_file()],
                  LIMIT_BYTES - tree - MARGIN_BYTES)
    for old in out.glob("call*"):
        shutil.rmtree(old)
    for k, members in enumerate(parts, 1):
        print(f"call {k}: {size_mib(sum(f.stat().st_size for f in members))} + checkout {size_mib(tree)} "
              f"(limit {size_mib(LIMIT_BYTES)})")
        for f in members:
            dst = out / f"call{k}" / f.relative_to(packed)
            dst.parent.mkdir(parents=True, exist_ok=True)
            os.link(f, dst)
            print(f"  {size_mib(f.stat().st_size):>10}  {f.relative_to(packed)}")
    return len(parts)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m perf.gpu.bundle",
                                description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, default=DEFAULT_BUNDLE)
    p.add_argument("--python", default=HOST_PYTHON,
                   help="the host's CPython version (another one rehearses the check on a CPU machine)")
    args = p.parse_args(argv)
    repo, out = Path.cwd().resolve(), args.out.resolve()
    pack(out / "packed", args.python)
    if repo not in out.parents:
        print(f"{out} is outside the checkout, which is what a device call carries: use "
              f"`python -m perf.gpu.check --bundle {out / 'packed'}` on this machine")
        return 0
    ignore_locally(repo, out)
    count = lay_out_parts(out, out / "packed", repo)
    print(f"\n{count} device calls, one right after the other (a machine left idle is given back):")
    for call in device_calls(out, count, repo):
        print(f"  {call}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
