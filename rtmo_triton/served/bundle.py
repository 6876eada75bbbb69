"""The third-party packages a Python model brings with it, put on ``sys.path`` when Triton loads it.

A Python model runs in Triton's stub under the *server's* interpreter (3.10 in NVIDIA's 24.10
container, whatever the stub was built for elsewhere), which has none of our packages. The build
packs, per model and per Python version, the pinned wheels it imports into
``<version folder>/packages/py<X.Y>.tar.gz``; here the archive for the running interpreter is
unpacked once per content into a cache folder shared by every model, instance and restart, then put
first on ``sys.path``. The server's own interpreter and standard library are used as they are, so the
repository leans on nothing of the machine that built it.

Why not the Python backend's ``EXECUTION_ENV_PATH``: it runs the stub inside a packed interpreter
(conda-pack) of the stub's exact Python version, which cannot be made from PyPI wheels alone; this
carries packages only and works on every Triton release unchanged.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import sys
import tarfile
import tempfile
import time
from pathlib import Path

from ..digest import file_sha256

PACKAGES_DIR = "packages"
"""Folder beside ``model.py`` holding one archive per Python version."""
CACHE_ENV = "RTMO_PACKAGES_CACHE"
"""Where archives are unpacked (default: ``<tmp>/rtmo-triton-packages``); must be writable."""
STALE_UNPACK_S = 600
"""An unpacking folder this old belongs to no loader still running: it is removed."""


def archive_name(python: str) -> str:
    """``py3.10.tar.gz`` for ``"3.10"``: the build writes and the server reads this one name."""
    return f"py{python}.tar.gz"


def running_python() -> str:
    return f"{sys.version_info.major}.{sys.version_info.minor}"


def use_bundled_packages(version_dir: str | Path) -> Path | None:
    """Put the packages carried for this interpreter first on ``sys.path``; returns their folder.

    A repository built without packages (``PYTHONS=none``) relies on the server's interpreter having
    them and returns None. One that carries packages, but none for this interpreter, is refused with
    the versions it does carry.
    """
    folder = Path(version_dir) / PACKAGES_DIR
    if not folder.is_dir():
        return None
    archive = folder / archive_name(running_python())
    if not archive.is_file():
        carried = sorted(p.name.removeprefix("py").removesuffix(".tar.gz") for p in folder.glob("py*.tar.gz"))
        raise RuntimeError(
            f"{version_dir} carries packages for Python {', '.join(carried) or 'no version'}, but this "
            f"tritonserver runs Python {running_python()}: rebuild with "
            f"`make build-engines PYTHONS=\"{' '.join([*carried, running_python()])}\"`")
    target = _unpacked(archive)
    sys.path.insert(0, str(target))
    return target


def _unpacked(archive: Path) -> Path:
    """Unpack once per archive content; concurrent loaders race to an atomic rename, the loser cleans up."""
    cache = Path(os.environ.get(CACHE_ENV) or Path(tempfile.gettempdir()) / "rtmo-triton-packages")
    target = cache / f"{archive.name.removesuffix('.tar.gz')}-{file_sha256(archive)[:16]}"
    if target.is_dir():
        return target
    cache.mkdir(parents=True, exist_ok=True)
    for stale in cache.glob(f"{target.name}.*"):  # left by a loader killed while unpacking
        with contextlib.suppress(OSError):
            if time.time() - stale.stat().st_mtime > STALE_UNPACK_S:
                shutil.rmtree(stale, ignore_errors=True)
    partial = Path(tempfile.mkdtemp(prefix=target.name + ".", dir=cache))
    try:
        with tarfile.open(archive) as tar:
            # The archive is as trusted as model.py beside it; the filter only silences 3.12+'s warning
            # (it is missing from interpreters older than 3.10.12 / 3.11.4).
            tar.extractall(partial, **({"filter": "data"} if hasattr(tarfile, "data_filter") else {}))
        partial.rename(target)
    except OSError:
        if not target.is_dir():  # not a lost race: a real failure
            raise
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return target
