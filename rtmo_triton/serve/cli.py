"""``rtmo-serve``: tritonserver for production, with safe defaults and the health guard beside it.

What it adds to ``tritonserver --model-repository R``:

- loopback unless ``--host`` says otherwise; the model-repository, shared-memory, logging and trace
  APIs restricted to holders of a key (``RTMO_ADMIN_KEY``, else a random one per start) over HTTP
  and gRPC, so an exposed server cannot be told to load files, map memory or rewrite its logs;
- model control in explicit mode, every model loaded at start, used by the guard alone to reload a
  model whose stub died (``serve.guard``);
- ``/ready`` and ``/live`` on ``--health-port`` for load balancers and Kubernetes probes;
- SIGTERM turns ``/ready`` to 503 at once, waits until Triton holds no pending request, then hands
  the signal on; ``--exit-timeout-secs`` bounds the whole stop (Triton is killed past it). Triton
  2.51 itself stops its composing models at once on SIGTERM: a gRPC request between two ensemble
  steps would fail with "Server is stopping", so the draining has to happen before.

Anything after ``--`` goes to tritonserver unchanged.
"""
from __future__ import annotations

import argparse
import os
import secrets
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from .. import spec
from .guard import ADMIN_HEADER, RESTRICTED_APIS, STALE_GRACE_S, Guard
from .tritonserver import ServerNotFound, command

ADMIN_KEY_ENV = "RTMO_ADMIN_KEY"
EXIT_SLACK_S = 2.0
"""Seconds a stopping tritonserver may take past ``--exit-timeout-secs`` before it is killed."""


POOL_FLAG = "--cuda-memory-pool-byte-size"


def visible_gpus() -> int:
    """GPUs tritonserver will see: ``CUDA_VISIBLE_DEVICES`` where set, else ``nvidia-smi -L``'s count
    (0 without a driver)."""
    listed = os.environ.get("CUDA_VISIBLE_DEVICES")
    if listed is not None:
        return len([d for d in listed.split(",") if d.strip() and not d.strip().startswith("-")])
    if shutil.which("nvidia-smi") is None:
        return 0
    try:
        done = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=15)
    except (OSError, subprocess.TimeoutExpired):
        return 0
    return sum(line.startswith("GPU ") for line in done.stdout.splitlines()) if done.returncode == 0 else 0


def cuda_pool_flags(extra: list[str], gpus: int) -> list[str]:
    """Triton's CUDA memory pool sized for GPU tensors passed between Python models
    (``spec.CUDA_MEMORY_POOL_BYTES`` per GPU), unless the flags after ``--`` size it themselves."""
    if any(a.startswith(POOL_FLAG) for a in extra):
        return []
    return [spec.cuda_pool_flag(gpu) for gpu in range(gpus)]


def server_flags(args: argparse.Namespace, admin_key: str, gpus: int = 0) -> list[str]:
    restricted = f"{RESTRICTED_APIS}:{ADMIN_HEADER}={admin_key}"
    return [
        f"--model-repository={args.model_repository}",
        f"--http-address={args.host}", f"--http-port={args.http_port}",
        f"--grpc-address={args.host}", f"--grpc-port={args.grpc_port}",
        f"--metrics-address={args.host}", f"--metrics-port={args.metrics_port}",
        "--model-control-mode=explicit", "--load-model=*",
        f"--http-restricted-api={restricted}", f"--grpc-restricted-protocol={restricted}",
        f"--exit-timeout-secs={args.exit_timeout_secs}",
        *cuda_pool_flags(args.tritonserver_args, gpus),
        *args.tritonserver_args,
    ]


def pending_requests(metrics_url: str) -> float:
    """Requests queued or running in every model, from Triton's ``nv_inference_pending_request_count``."""
    with urllib.request.urlopen(metrics_url, timeout=2) as response:
        lines = response.read().decode().splitlines()
    return sum(float(line.rsplit(" ", 1)[1]) for line in lines
               if line.startswith("nv_inference_pending_request_count{"))


def drain(metrics_url: str, limit_s: float, poll_s: float = 0.2) -> None:
    """Wait until nothing is pending twice in a row, or ``limit_s`` has passed."""
    deadline, quiet = time.monotonic() + limit_s, 0
    while time.monotonic() < deadline and quiet < 2:
        try:
            quiet = quiet + 1 if pending_requests(metrics_url) == 0 else 0
        except OSError:
            return  # metrics gone: nothing to wait for
        time.sleep(poll_s)


def stop_server(process: subprocess.Popen, signum: int, *, metrics_url: str, limit_s: float) -> None:
    """Drain, then hand ``signum`` on; the whole stop takes at most ``limit_s`` (plus a little), after
    which Triton is killed. Its own exit timeout would come on top of the drain, and after a self-heal
    Triton waits all of it for the replaced copy, which holds no request: the pod's grace period
    would be overrun."""
    deadline = time.monotonic() + limit_s
    drain(metrics_url, limit_s)
    process.send_signal(signum)
    try:
        process.wait(timeout=max(0.0, deadline - time.monotonic()) + EXIT_SLACK_S)
    except subprocess.TimeoutExpired:
        print(f"[rtmo-serve] tritonserver still running {limit_s:g} s after the stop began: killed",
              flush=True)
        process.kill()


def health_server(guard: Guard, process: subprocess.Popen, host: str, port: int) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            if self.path == "/live":
                ok, body = process.poll() is None, b'{"live": true}'
            elif self.path == "/ready":
                health = guard.health
                ok, body = health.ready and process.poll() is None, health.as_json()
            else:
                self.send_error(404)
                return
            self.send_response(200 if ok else 503)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:  # probes every few seconds: keep the log clean
            pass

    return ThreadingHTTPServer((host, port), Handler)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="rtmo-serve", description=__doc__.split("\n")[0])
    p.add_argument("--model-repository", required=True, help="local folder, s3://, gs:// or as://")
    p.add_argument("--host", default="127.0.0.1", help="address every port binds to (0.0.0.0 in a container)")
    for name, port in spec.PORTS.items():
        p.add_argument(f"--{name}-port", type=int, default=port)
    p.add_argument("--exit-timeout-secs", type=int, default=30,
                   help="on SIGTERM, how long in-flight requests may still finish; the whole stop, drain "
                        "included, takes no longer (then tritonserver is killed)")
    p.add_argument("--check-interval-s", type=float, default=1.0)
    p.add_argument("--stale-grace-s", type=float, default=STALE_GRACE_S,
                   help="after a reload, how long the replaced copy's stubs may live on")
    p.add_argument("tritonserver_args", nargs="*", help="after --: more tritonserver flags")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    admin_key = os.environ.get(ADMIN_KEY_ENV) or secrets.token_urlsafe(24)
    try:
        argv_, env = command(server_flags(args, admin_key, visible_gpus()))
    except ServerNotFound as exc:
        print(f"rtmo-serve: {exc}", file=sys.stderr)
        return 127
    process = subprocess.Popen(argv_, env=env)
    http_host = "127.0.0.1" if args.host in ("0.0.0.0", "::") else args.host
    guard = Guard(f"{http_host}:{args.http_port}", process.pid, admin_key, interval_s=args.check_interval_s,
                  stale_grace_s=args.stale_grace_s)
    try:
        health = health_server(guard, process, args.host, args.health_port)
    except OSError as exc:  # the port is taken: leave no tritonserver behind
        process.terminate()
        process.wait()
        print(f"rtmo-serve: health port {args.host}:{args.health_port}: {exc}", file=sys.stderr)
        return 1
    threading.Thread(target=health.serve_forever, daemon=True, name="health").start()
    threading.Thread(target=guard.run, daemon=True, name="guard").start()

    def stop(signum: int, frame: object) -> None:
        guard.stop()  # /ready answers 503 from now on: the balancer stops sending new requests
        threading.Thread(target=stop_after_drain, args=(signum,), daemon=True, name="drain").start()

    def stop_after_drain(signum: int) -> None:
        stop_server(process, signum, metrics_url=f"http://{http_host}:{args.metrics_port}/metrics",
                    limit_s=args.exit_timeout_secs)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    print(f"[rtmo-serve] tritonserver pid {process.pid}; health on http://{args.host}:{args.health_port}"
          f"/ready; repository {Path(args.model_repository)}", flush=True)
    code = process.wait()
    guard.stop()
    health.shutdown()
    return code


if __name__ == "__main__":
    sys.exit(main())
