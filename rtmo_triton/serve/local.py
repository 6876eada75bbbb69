"""A real tritonserver as a context manager, on free loopback ports: for tests, perf and the demo.

The server is always stopped on exit (terminate, then kill), so a failing
test or an interrupted benchmark never leaves one running.
"""
from __future__ import annotations

import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from .. import spec
from .tritonserver import command


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def exit_on_sigterm() -> None:
    """Let ``kill``/CI timeouts unwind ``with TritonServer(...)`` blocks like Ctrl-C does."""
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))


class ServerFailed(RuntimeError):
    pass


def failure_summary(log: str, *, errors: int = 5, tail: int = 2000) -> str:
    """Triton's error lines first (a model's load failure is one, often far above the log's end, behind
    the option tables printed on the way out), then the log's tail."""
    said = list(dict.fromkeys(line[:1000] for line in log.splitlines() if re.match(r"E\d{4} ", line)))
    head = "\n".join(said[:errors])
    return f"{head}\n...\n{log[-tail:]}" if head else log[-tail:]


class TritonServer:
    def __init__(self, repo: str | Path, log_path: str | Path | None = None, extra_args: list[str] = (),
                 ready_timeout_s: float = 120.0, ready_model: str = spec.ENSEMBLE_NAME, *,
                 launch: tuple[list[str], dict[str, str]] | None = None,
                 cwd: str | Path | None = None) -> None:
        """``launch``: the server's argv prefix and environment (default: ``tritonserver.command``);
        ``cwd``: its working directory."""
        self.repo = Path(repo)
        self.launch = launch
        self.cwd = cwd
        self.ports = {"http": free_port(), "grpc": free_port(), "metrics": free_port()}
        self.log_path = Path(log_path) if log_path else None
        self.extra_args = list(extra_args)
        self.ready_timeout_s = ready_timeout_s
        self.ready_model = ready_model
        self.process: subprocess.Popen | None = None
        self.start_seconds = float("nan")

    @property
    def http_url(self) -> str:
        return f"127.0.0.1:{self.ports['http']}"

    @property
    def grpc_url(self) -> str:
        return f"127.0.0.1:{self.ports['grpc']}"

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['metrics']}/metrics"

    def url(self, protocol: str) -> str:
        return self.http_url if protocol == "http" else self.grpc_url

    def _ready(self) -> bool:
        """The model answers ready over HTTP and the metrics port listens. Triton opens its metrics
        endpoint last, after HTTP: a caller that scrapes as soon as the model is ready was refused."""
        url = f"http://{self.http_url}/v2/models/{self.ready_model}/ready"
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status != 200:
                    return False
            with socket.create_connection(("127.0.0.1", self.ports["metrics"]), timeout=2):
                return True
        except OSError:
            return False

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path and self.log_path.exists() else ""

    def start(self) -> TritonServer:
        flags = [
            f"--model-repository={self.repo.resolve()}",
            "--http-address=127.0.0.1", f"--http-port={self.ports['http']}",
            "--grpc-address=127.0.0.1", f"--grpc-port={self.ports['grpc']}",
            f"--metrics-port={self.ports['metrics']}",
            "--allow-cpu-metrics=true", "--allow-gpu-metrics=false",
            *self.extra_args,
        ]
        if self.launch:
            prefix, env = self.launch
            args = [*prefix, *flags]
        else:  # the launcher sees the repository: it finds PyTorch for a model that needs it
            args, env = command(flags)
        log = open(self.log_path, "wb") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
        t0 = time.perf_counter()
        self.process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=self.cwd)
        if log is not subprocess.DEVNULL:
            log.close()
        deadline = t0 + self.ready_timeout_s
        while not self._ready():
            if self.process.poll() is not None:
                raise ServerFailed(f"tritonserver exited with {self.process.returncode}:\n"
                                   f"{failure_summary(self.log_text())}")
            if time.perf_counter() > deadline:
                self.stop()
                raise ServerFailed(f"tritonserver not ready after {self.ready_timeout_s:.0f} s:\n"
                                   f"{failure_summary(self.log_text())}")
            time.sleep(0.1)
        self.start_seconds = time.perf_counter() - t0
        return self

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def __enter__(self) -> TritonServer:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc) -> None:
        self.stop()
