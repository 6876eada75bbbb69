"""``rtmo-tritonserver``: NVIDIA's ``tritonserver`` where it is installed, else PyPI's CPU build.

NVIDIA's container has ``/opt/tritonserver/bin/tritonserver`` (every backend, GPU): it is used as it
is. Elsewhere the binary bundled in PyPI's nvidia-pytriton (Python backend only) needs three things
its own launcher would normally supply: the Python backend stub beside the backend library, the
wheel's private shared libraries on ``LD_LIBRARY_PATH``, and ``--backend-directory``. This wrapper
supplies them in an environment stripped of this virtualenv (the repository brings its own packages)
and replaces itself with the real server, so signals, exit codes and every flag behave as with
``tritonserver`` itself. ``TRITONSERVER=/path/to/tritonserver`` picks a binary explicitly.

The repository never carries PyTorch. When one of its models needs it (``needs_torch: yes`` in its
config: the torch engine flavour), the stubs' interpreter must have it: if this interpreter (the
same Python version, the one ``make setup`` gave PyTorch) has it, its folder is handed to the models
in ``RTMO_TORCH_PATH`` (``served.torch_import``, used only where the server's own interpreter has
none); else the server's interpreter is asked, and without PyTorch anywhere the server is not
started, with what to install. NVIDIA's server or an explicit one gets the environment unchanged.
"""
from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from ..served.bundle import CACHE_ENV, running_python
from ..served.torch_import import TORCH_PATH_ENV
from ..spec import YES, Param

SYSTEM_SERVER = Path("/opt/tritonserver/bin/tritonserver")
WRAPPER = "rtmo-tritonserver"
STUB = "triton_python_backend_stub"
"""The Python backend's stub: one process per model instance, named so in ``ps``."""
STUBS_DIR = "python_backend_stubs"
"""nvidia-pytriton's folder of stubs, one per Python version."""
PYTRITON_LIBS = "nvidia_pytriton.libs"
"""nvidia-pytriton's private shared libraries, beside its package in site-packages."""
KEPT_VARIABLES = ("HOME", "USER", "LANG", "LC_ALL", "TZ", "TMPDIR", CACHE_ENV, TORCH_PATH_ENV)
REPOSITORY_FLAGS = ("--model-repository", "--model-store")
PROBE_TIMEOUT_S = 300
"""How long the server's interpreter may take to ``import torch`` (a cold disk, a big CUDA build)."""


class ServerNotFound(RuntimeError):
    pass


class TorchNotFound(ServerNotFound):
    """The repository needs PyTorch and no interpreter the server can use has it."""


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
    if explicit and Path(explicit).name == WRAPPER:  # this very launcher: it would exec itself forever
        explicit = None
    if explicit or SYSTEM_SERVER.exists():
        return [explicit or str(SYSTEM_SERVER), *args], dict(os.environ)
    root = pytriton_root()
    if root is None:
        raise ServerNotFound("no Triton server: run `make setup` (CPU) "
                             "or use NVIDIA's tritonserver container")
    env = prepare(root)
    provide_torch(args, env)
    if not any(a.startswith("--backend-directory") for a in args):
        args = [f"--backend-directory={root / 'backends'}", *args]
    return [str(root / "bin" / "tritonserver"), *args], env


def repositories(args: list[str]) -> list[Path]:
    """The local model repositories among tritonserver's flags (``--flag=value`` or ``--flag value``);
    cloud ones (``s3://``, ``gs://``, ``as://``) are left out."""
    found = []
    for i, arg in enumerate(args):
        flag, sep, value = arg.partition("=")
        if flag not in REPOSITORY_FLAGS:
            continue
        if not sep:
            value = args[i + 1] if i + 1 < len(args) else ""
        if value and "://" not in value:
            found.append(Path(value))
    return found


_NEEDS_TORCH = re.compile(r'key\s*:\s*"' + re.escape(Param.NEEDS_TORCH)
                          + r'"\s*[,;]?\s*value\s*:?\s*\{\s*string_value\s*:\s*"([^"]*)"')


def config_needs_torch(text: str) -> bool:
    """Whether a ``config.pbtxt`` has ``needs_torch: yes``: protobuf's parse where tritonclient is
    installed, else (the serving images install our package alone) a pattern for the same text."""
    try:
        from google.protobuf import text_format
        from tritonclient.grpc import model_config_pb2
    except ImportError:
        config = None
    else:
        try:
            config = text_format.Parse(text, model_config_pb2.ModelConfig())
        except text_format.ParseError:  # Triton will say what is wrong with it; a newer field, maybe
            config = None
    if config is None:
        values = _NEEDS_TORCH.findall(text)
    elif Param.NEEDS_TORCH in config.parameters:
        values = [config.parameters[Param.NEEDS_TORCH].string_value]
    else:
        values = []
    return any(v.strip().lower() == YES for v in values)


def models_needing_torch(repos: list[Path]) -> list[str]:
    """Every model of the repositories whose config says it needs PyTorch."""
    names = []
    for repo in repos:
        for config in sorted(repo.glob("*/config.pbtxt")):
            try:
                text = config.read_text(errors="replace")
            except OSError:
                continue
            if config_needs_torch(text):
                names.append(config.parent.name)
    return names


def own_torch() -> Path | None:
    """The folder holding this interpreter's ``torch`` package (its site-packages), found without
    importing it."""
    found = importlib.util.find_spec("torch")
    if found is None:
        return None
    if found.origin and found.has_location:
        return Path(found.origin).parents[1]
    locations = list(found.submodule_search_locations or ())
    return Path(locations[0]).parent if locations else None


def server_python(env: dict[str, str]) -> str | None:
    """The interpreter the stubs run: the stub embeds this Python version's libpython, which takes
    its prefix (standard library, site-packages) from the interpreter found on the server's PATH."""
    return shutil.which(f"python{running_python()}", path=env.get("PATH"))


def imports_torch(python: str, env: dict[str, str]) -> tuple[bool, str]:
    """Whether ``python`` imports torch in the server's environment; else the last line it said."""
    try:
        done = subprocess.run([python, "-c", "import torch"], env=env, capture_output=True, text=True,
                              timeout=PROBE_TIMEOUT_S)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return False, str(exc)
    said = done.stderr.strip().splitlines()
    return done.returncode == 0, said[-1] if said else f"exit status {done.returncode}"


def provide_torch(args: list[str], env: dict[str, str]) -> None:
    """Where the repository needs PyTorch: hand the models this interpreter's (``RTMO_TORCH_PATH``), or
    make sure the server's own interpreter has it; else TorchNotFound, before the server starts. A
    ``RTMO_TORCH_PATH`` set by the user is kept as it is."""
    repos = repositories(args)
    needing = models_needing_torch(repos)
    if not needing or env.get(TORCH_PATH_ENV):
        return
    folder = own_torch()
    if folder is not None:
        env[TORCH_PATH_ENV] = str(folder)
        return
    version = running_python()
    python = server_python(env)
    if python is None:
        server, why = f"python{version}", f"not found on {env.get('PATH')}"
    else:
        ok, why = imports_torch(python, env)
        if ok:
            return
        server = python
    raise TorchNotFound(
        f"{', '.join(map(str, repos))}: {', '.join(needing)} need{'s' if len(needing) == 1 else ''} PyTorch "
        f"({Param.NEEDS_TORCH}: {YES}), which the repository never carries, and no interpreter the server "
        f"can use has it: not this one ({sys.executable}), not the server's Python {version} ({server}: "
        f"{why}). Install it here (`{sys.executable} -m pip install torch`) or for the server's Python "
        f"(`{server} -m pip install torch`), or rebuild the repository with "
        f"`make build-engines ENGINE=onnx PREPROCESS=cpu`")


def install() -> None:
    """``make setup``: put the stub in place once, so the first server start needs nothing."""
    root = pytriton_root()
    if root is None:
        raise SystemExit("nvidia-pytriton is not installed")
    prepare(root)
    print(f"tritonserver ready to run: {Path(sys.prefix) / 'bin' / WRAPPER} "
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
