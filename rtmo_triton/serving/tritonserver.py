"""``tritonserver`` on a CPU machine: the binary bundled in PyPI's nvidia-pytriton, made runnable.

The wheel's server needs three things its own launcher would normally
supply: the Python backend stub beside the backend library, the wheel's
private shared libraries on ``LD_LIBRARY_PATH``, and ``--backend-directory``.
This wrapper supplies them and then replaces itself with the real server, so
signals, exit codes and every flag behave as with ``tritonserver`` itself.
Where the wheel is absent (NVIDIA's container) it runs the system server.
"""
from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

SYSTEM_SERVER = Path("/opt/tritonserver/bin/tritonserver")
STUB = "triton_python_backend_stub"


class ServerNotFound(RuntimeError):
    pass


def pytriton_root() -> Path | None:
    try:
        import pytriton
    except ImportError:
        return None
    return Path(pytriton.__file__).parent / "tritonserver"


def prepare(root: Path) -> dict[str, str]:
    """Install the stub for this Python once; the environment the binary needs."""
    python_dir = root / "backends" / "python"
    stub = python_dir / STUB
    if not stub.exists():
        version = f"{sys.version_info.major}.{sys.version_info.minor}"
        source = root / "python_backend_stubs" / version / STUB
        if not source.exists():
            raise ServerNotFound(f"nvidia-pytriton has no Python backend stub for Python {version}")
        shutil.copy2(source, stub)
    env = dict(os.environ)
    libs = root.parents[1] / "nvidia_pytriton.libs"
    env["LD_LIBRARY_PATH"] = os.pathsep.join(filter(None, [str(libs), env.get("LD_LIBRARY_PATH")]))
    # Python models import the venv's packages only when it is the active environment.
    venv = Path(sys.prefix)
    env["VIRTUAL_ENV"] = str(venv)
    env["PATH"] = os.pathsep.join([str(venv / "bin"), env.get("PATH", "")])
    return env


def command(args: list[str]) -> tuple[list[str], dict[str, str]]:
    """The real server's argv and environment for the given tritonserver flags."""
    root = pytriton_root()
    if root is None:
        if SYSTEM_SERVER.exists():
            return [str(SYSTEM_SERVER), *args], dict(os.environ)
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
    print(f"tritonserver ready to run: {root / 'bin' / 'tritonserver'} (via {Path(sys.prefix) / 'bin'})")


def main() -> None:
    try:
        argv, env = command(sys.argv[1:])
    except ServerNotFound as exc:
        print(f"tritonserver: {exc}", file=sys.stderr)
        sys.exit(127)
    os.execve(argv[0], argv, env)


if __name__ == "__main__":
    main()
