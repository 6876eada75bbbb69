"""``rtmo-tritonserver``: NVIDIA's ``tritonserver`` where it is installed, else PyPI's CPU build.

NVIDIA's container has ``/opt/tritonserver/bin/tritonserver`` (every backend, GPU): it is used as it
is. Elsewhere the binary bundled in PyPI's nvidia-pytriton (Python backend only) needs three things
its own launcher would normally supply: the Python backend stub beside the backend library, the
wheel's private shared libraries on ``LD_LIBRARY_PATH``, and ``--backend-directory``. This wrapper
supplies them in an environment stripped of this virtualenv (the repository brings its own packages)
and replaces itself with the real server, so signals, exit codes and every flag behave as with
``tritonserver`` itself. ``TRITONSERVER=/path/to/tritonserver`` picks a binary explicitly.
"""
from __future__ import annotations

import importlib.util
import os
import shutil
import sys
from pathlib import Path

from ..served.bundle import CACHE_ENV

SYSTEM_SERVER = Path("/opt/tritonserver/bin/tritonserver")
STUB = "triton_python_backend_stub"
"""The Python backend's stub: one process per model instance, named so in ``ps``."""
STUBS_DIR = "python_backend_stubs"
"""nvidia-pytriton's folder of stubs, one per Python version."""
PYTRITON_LIBS = "nvidia_pytriton.libs"
"""nvidia-pytriton's private shared libraries, beside its package in site-packages."""
KEPT_VARIABLES = ("HOME", "USER", "LANG", "LC_ALL", "TZ", "TMPDIR", CACHE_ENV)


class ServerNotFound(RuntimeError):
    pass


def pytriton_root() -> Path | None:
    """The server inside nvidia-pytriton, found without importing the package (whose own Python
    dependencies a server-only install leaves out)."""
    found = importlib.util.find_spec("pytriton")
    if found is None or not found.submodule_search_locations:
        return None
    return Path(next(iter(found.submodule_search_locations))) / "tritonserver"


def prepare(root: Path) -> dict[str, str]:
    """Install the stub for this Python once; the environment the binary needs."""
    python_dir = root / "backends" / "python"
    stub = python_dir / STUB
    if not stub.exists():
        version = f"{sys.version_info.major}.{sys.version_info.minor}"
        source = root / STUBS_DIR / version / STUB
        if not source.exists():
            raise ServerNotFound(f"nvidia-pytriton has no Python backend stub for Python {version}")
        shutil.copy2(source, stub)
    return scrubbed_env(root.parents[1] / PYTRITON_LIBS)


def scrubbed_env(libs: Path) -> dict[str, str]:
    """What a server outside this checkout would have: no virtualenv, no PYTHONPATH, system PATH."""
    keep = {k: v for k, v in os.environ.items() if k in KEPT_VARIABLES}
    return {**keep, "PATH": "/usr/local/bin:/usr/bin:/bin", "LD_LIBRARY_PATH": str(libs)}


def command(args: list[str]) -> tuple[list[str], dict[str, str]]:
    """The real server's argv and environment for the given tritonserver flags."""
    explicit = os.environ.get("TRITONSERVER")
    if explicit or SYSTEM_SERVER.exists():
        return [explicit or str(SYSTEM_SERVER), *args], dict(os.environ)
    root = pytriton_root()
    if root is None:
        raise ServerNotFound("no Triton server: run `make setup` (CPU) "
                             "or use NVIDIA's tritonserver container")
    env = prepare(root)
    if not any(a.startswith("--backend-directory") for a in args):
        args = [f"--backend-directory={root / 'backends'}", *args]
    return [str(root / "bin" / "tritonserver"), *args], env


def install() -> None:
    """``make setup``: put the stub in place once, so the first server start needs nothing."""
    root = pytriton_root()
    if root is None:
        raise SystemExit("nvidia-pytriton is not installed")
    prepare(root)
    print(f"tritonserver ready to run: {Path(sys.prefix) / 'bin' / 'rtmo-tritonserver'} "
          f"({root / 'bin' / 'tritonserver'})")


def main() -> None:
    try:
        argv, env = command(sys.argv[1:])
    except ServerNotFound as exc:
        print(f"tritonserver: {exc}", file=sys.stderr)
        sys.exit(127)
    os.execve(argv[0], argv, env)


if __name__ == "__main__":
    main()
