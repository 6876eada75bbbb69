"""`make serve` serves every engine flavour the build wrote: the torch one finds an interpreter with PyTorch.

PyPI's tritonserver runs its stubs with the system interpreter of this Python version, which has no
PyTorch here; the launcher hands the models this virtualenv's (``RTMO_TORCH_PATH``), or refuses to
start, saying what to install, when no interpreter has it. The end-to-end test types what a new user
types: ``make build-engines ENGINE=torch`` then ``make serve``.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from rtmo_triton import spec
from rtmo_triton.build.configs import RepositorySpec, write_configs
from rtmo_triton.serve import cli, tritonserver
from rtmo_triton.serve.local import free_port
from rtmo_triton.served.torch_import import TORCH_PATH_ENV

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "samples" / "synthetic_640x480.jpg"


def configs(repo: Path, flavour: str) -> Path:
    write_configs(repo, RepositorySpec(variant="s", input_size=640, num_keypoints=17, topk=100,
                                       flavour=flavour))
    return repo


@pytest.fixture
def pypi_server():
    """The PyPI server path of ``command()`` (the only one that scrubs the environment)."""
    if os.environ.get("TRITONSERVER") or tritonserver.SYSTEM_SERVER.exists():
        pytest.skip("NVIDIA's or an explicit tritonserver: the environment is passed through unchanged")
    if tritonserver.pytriton_root() is None:
        pytest.skip("nvidia-pytriton not installed (run make setup)")


def test_the_torch_flavour_asks_for_torch_and_the_onnx_one_does_not(tmp_path):
    torch_repo, onnx_repo = configs(tmp_path / "torch", "torch"), configs(tmp_path / "onnx", "onnx")
    assert tritonserver.models_needing_torch([torch_repo]) == [spec.ENGINE_NAME]
    assert tritonserver.models_needing_torch([onnx_repo]) == []
    assert tritonserver.repositories(["--model-repository", "/a", "--model-store=/b", "--model-repository=s3://c",
                                      "--http-port=1"]) == [Path("/a"), Path("/b")]


def test_without_protobuf_the_configs_are_read_alike(tmp_path):
    """The serving images install our package alone: the launcher reads the configs with the standard
    library there, to the same answer, in protobuf's layout and a hand-written one."""
    configs(tmp_path / "built", "torch")
    configs(tmp_path / "onnx", "onnx")
    hand = tmp_path / "hand"
    for name, text in {"one_line": 'parameters: { key: "needs_torch", value: { string_value: "yes" } }',
                       "said_no": 'parameters { key: "needs_torch" value { string_value: "no" } }',
                       "other": 'parameters { key: "precision" value { string_value: "yes" } }'}.items():
        (hand / name).mkdir(parents=True)
        (hand / name / "config.pbtxt").write_text(f'name: "{name}"\nbackend: "python"\n{text}\n')
    code = (f"import sys; sys.path.insert(0, {str(ROOT)!r}); from pathlib import Path; "
            "from rtmo_triton.serve.tritonserver import models_needing_torch as m; "
            f"print([m([Path({str(tmp_path)!r}) / r]) for r in ('built', 'onnx', 'hand')]); "
            "print('google.protobuf' in sys.modules)")
    done = subprocess.run([sys.executable, "-S", "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n")[:2] == [str([[spec.ENGINE_NAME], [], ["one_line"]]), "False"]
    assert tritonserver.models_needing_torch([hand]) == ["one_line"]  # protobuf's parse agrees


def test_a_torch_repository_gets_this_interpreters_torch(tmp_path, pypi_server, monkeypatch):
    import torch

    monkeypatch.delenv(TORCH_PATH_ENV, raising=False)
    monkeypatch.setattr(tritonserver, "imports_torch", lambda *a: pytest.fail("no probe needed"))
    repo = configs(tmp_path / "repo", "torch")
    for flags in (["--model-repository", str(repo)], [f"--model-repository={repo}"]):
        _, env = tritonserver.command(flags)
        assert env[TORCH_PATH_ENV] == str(Path(torch.__file__).parents[1])
        assert ".venv" not in env["PATH"] and "PYTHONPATH" not in env
    _, env = tritonserver.command(["--model-repository", str(configs(tmp_path / "onnx", "onnx"))])
    assert TORCH_PATH_ENV not in env
    monkeypatch.setenv(TORCH_PATH_ENV, "/my/torch")  # the user's choice stands
    assert tritonserver.command(["--model-repository", str(repo)])[1][TORCH_PATH_ENV] == "/my/torch"


def test_the_servers_own_torch_needs_nothing(tmp_path, pypi_server, monkeypatch):
    monkeypatch.delenv(TORCH_PATH_ENV, raising=False)
    monkeypatch.setattr(tritonserver, "own_torch", lambda: None)
    monkeypatch.setattr(tritonserver, "imports_torch", lambda python, env: (True, ""))
    _, env = tritonserver.command(["--model-repository", str(configs(tmp_path / "repo", "torch"))])
    assert TORCH_PATH_ENV not in env


def test_without_torch_anywhere_neither_launcher_starts_a_server(tmp_path, pypi_server, monkeypatch, capsys):
    """This interpreter's torch hidden; the server's interpreter really asked (it has none here)."""
    monkeypatch.delenv(TORCH_PATH_ENV, raising=False)
    monkeypatch.setattr(tritonserver, "own_torch", lambda: None)
    env = tritonserver.prepare(tritonserver.pytriton_root())
    python = tritonserver.server_python(env)
    if python and tritonserver.imports_torch(python, env)[0]:
        pytest.skip(f"{python} has PyTorch")
    repo = configs(tmp_path / "repo", "torch")
    with pytest.raises(tritonserver.TorchNotFound) as refused:
        tritonserver.command(["--model-repository", str(repo)])
    said = str(refused.value)
    assert spec.ENGINE_NAME in said and str(repo) in said and "PyTorch" in said
    assert f"{sys.executable} -m pip install torch" in said and "ENGINE=onnx" in said
    if python:
        assert f"{python} -m pip install torch" in said and "No module named 'torch'" in said

    monkeypatch.setattr(os, "execve", lambda *a: pytest.fail("tritonserver started"))
    monkeypatch.setattr(sys, "argv", ["rtmo-tritonserver", "--model-repository", str(repo)])
    with pytest.raises(SystemExit) as exited:
        tritonserver.main()
    assert exited.value.code == 127 and "ENGINE=onnx" in capsys.readouterr().err

    no_start = SimpleNamespace(Popen=lambda *a, **k: pytest.fail("tritonserver started"))
    monkeypatch.setattr(cli, "subprocess", no_start)
    assert cli.main(["--model-repository", str(repo)]) == 127
    assert "rtmo-serve: " in (err := capsys.readouterr().err) and "pip install torch" in err


def test_the_wrapper_as_tritonserver_does_not_exec_itself(pypi_server, monkeypatch):
    monkeypatch.setenv("TRITONSERVER", str(ROOT / ".venv" / "bin" / tritonserver.WRAPPER))
    argv, _ = tritonserver.command([])
    assert argv[0] == str(tritonserver.pytriton_root() / "bin" / "tritonserver")


def test_served_code_appends_the_launchers_torch_folder():
    """In a stub-like interpreter without PyTorch (no site-packages): the folder is appended, after the
    repository's own packages; without it, the reason and the remedies."""
    import torch

    folder = str(Path(torch.__file__).parents[1])
    code = (f"import sys; sys.path.insert(0, {str(ROOT)!r}); "
            "from rtmo_triton.served.torch_import import import_torch; "
            "torch = import_torch(); print(torch.__file__); print(sys.path[-1])")
    env = {"PATH": "/usr/bin:/bin", TORCH_PATH_ENV: folder}
    argv = [sys.executable, "-S", "-c", code]
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n")[:2] == [torch.__file__, folder]
    del env[TORCH_PATH_ENV]
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode != 0
    assert "No module named 'torch'" in done.stderr and "ENGINE=onnx" in done.stderr


# --- as the user types it ------------------------------------------------------------------------


def make(*args: str, **kwargs) -> subprocess.Popen:
    """``make`` in the checkout, free of the variables of a ``make test`` around this one."""
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL")}
    return subprocess.Popen(["make", *args], cwd=ROOT, env=env, **kwargs)


def http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return r.status == 200
    except OSError:
        return False


@pytest.mark.server
def test_make_serve_serves_the_torch_flavour_make_build_engines_wrote(tmp_path, pypi_server):
    import tritonclient.http as http

    repo = tmp_path / "repo"
    build_log = tmp_path / "build.log"
    with open(build_log, "wb") as log:
        built = make("build-engines", "ENGINE=torch", f"MODEL_REPOSITORY={repo}", stdout=log,
                     stderr=subprocess.STDOUT)
        assert built.wait(timeout=900) == 0, build_log.read_text()[-3000:]
    assert tritonserver.models_needing_torch([repo]) == [spec.ENGINE_NAME]

    ports = {name: free_port() for name in spec.PORTS}
    flags = " ".join(f"--{name}-port {port}" for name, port in ports.items())
    serve_log = tmp_path / "serve.log"
    with open(serve_log, "wb") as log:
        served = make("serve", f"MODEL_REPOSITORY={repo}", f"SERVE_FLAGS={flags}", stdout=log,
                      stderr=subprocess.STDOUT, start_new_session=True)
    try:
        t0, deadline = time.monotonic(), time.monotonic() + 180
        while not http_ok(f"http://127.0.0.1:{ports['health']}/ready"):
            assert served.poll() is None, f"make serve exited with {served.returncode}:\n" \
                                          f"{serve_log.read_text()[-4000:]}"
            assert time.monotonic() < deadline, f"not ready in 180 s:\n{serve_log.read_text()[-4000:]}"
            time.sleep(0.5)
        print(f"\nmake serve ready in {time.monotonic() - t0:.1f} s")

        client = http.InferenceServerClient(f"127.0.0.1:{ports['http']}")
        image = http.InferInput(spec.ENSEMBLE_INPUT, [1, 1], "BYTES")
        image.set_data_from_numpy(np.array([[SAMPLE.read_bytes()]], dtype=object))
        num_people = spec.ENSEMBLE_OUTPUTS[0]
        result = client.infer(spec.ENSEMBLE_NAME, [image], outputs=[http.InferRequestedOutput(num_people)])
        people = result.as_numpy(num_people)
        client.close()
        assert people.shape == (1, 1) and people.dtype == np.int32 and people[0, 0] >= 0
        assert "PyTorch" in serve_log.read_text() and "on cpu, fp32" in serve_log.read_text()

        served.send_signal(signal.SIGTERM)  # make hands it to rtmo-serve, which drains and stops Triton
        served.wait(timeout=60)
        time.sleep(0.5)
        with pytest.raises(ProcessLookupError):  # nothing of the server is left running
            os.killpg(served.pid, 0)
    finally:
        if served.poll() is None:
            served.kill()
        try:
            os.killpg(served.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def test_rtmo_serve_sizes_the_cuda_pool_of_every_visible_gpu(monkeypatch):
    """GPU tensors between Python models travel through Triton's CUDA pool: one flag per GPU, none on a
    CPU host, and the user's own size wins."""
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    assert cli.visible_gpus() == 2
    assert cli.cuda_pool_flags([], 2) == [spec.cuda_pool_flag(0), spec.cuda_pool_flag(1)]
    assert spec.cuda_pool_flag(1) == f"--cuda-memory-pool-byte-size=1:{spec.CUDA_MEMORY_POOL_BYTES}"
    assert cli.cuda_pool_flags(["--cuda-memory-pool-byte-size=0:1024"], 2) == []
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert cli.visible_gpus() == 0
    args = cli.parse_args(["--model-repository", "repo"])
    assert not any(f.startswith(cli.POOL_FLAG) for f in cli.server_flags(args, "key", cli.visible_gpus()))
