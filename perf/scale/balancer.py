"""HAProxy in front of the replicas: one HTTP and one gRPC (HTTP/2) listener on loopback.

Why HAProxy and not nginx (both Debian packages): its open-source build
checks servers actively (a restarting replica is out before a request finds
it, not after one fails there), its runtime API drains a server without a
reload (what Kubernetes does by taking a terminating pod out of the
Service's endpoints), and its layer-7 retries resend a request whose server
died mid-request, for HTTP/1.1 and for gRPC streams alike. Inference is a
pure function of the image, so replaying it is safe.
"""
from __future__ import annotations

import socket
import subprocess
import time
from pathlib import Path
from typing import NamedTuple

from rtmo_triton import spec

BACKENDS = ("triton_http", "triton_grpc")
# Every request must fit one buffer for layer-7 retries to be able to resend it (tune.bufsize);
# the largest benchmark JPEG (1920x1080) is well under this.
BUFSIZE = 1 << 20
MAX_REQUEST_BYTES = 64 << 20
"""Triton 2.51 takes a request of any size into the Python models (a 300 MB body took 15 s to be
refused there): the balancer refuses requests declaring more."""


class Replica(NamedTuple):
    name: str
    http_port: int
    grpc_port: int


def config(*, http_port: int, grpc_port: int, replicas: list[Replica], socket_path: Path) -> str:
    """haproxy.cfg: least-connections over ready replicas, health from the model's ready endpoint."""
    http_servers = "\n".join(
        f"    server {r.name} 127.0.0.1:{r.http_port} check inter 500ms fall 2 rise 1" for r in replicas)
    # the gRPC side follows the HTTP side's health check of the same replica
    grpc_servers = "\n".join(
        f"    server {r.name} 127.0.0.1:{r.grpc_port} proto h2 track triton_http/{r.name}" for r in replicas)
    return f"""\
global
    stats socket {socket_path} mode 600 level admin
    log stdout format raw local0
    tune.bufsize {BUFSIZE}
    maxconn 512

defaults
    mode http
    log global
    option httplog
    timeout connect 2s
    timeout client 120s
    timeout server 120s
    timeout queue 30s
    timeout check 2s
    # a server that dies mid-request: resend to another (layer-7 retries). They need the whole
    # request in the buffer, so wait for the body before forwarding it.
    option http-buffer-request
    retries 3
    option redispatch 1
    retry-on conn-failure empty-response response-timeout 502 503 504

frontend http_in
    bind 127.0.0.1:{http_port}
    http-request deny deny_status 413 if {{ req.hdr_val(content-length) gt {MAX_REQUEST_BYTES} }}
    default_backend triton_http

frontend grpc_in
    bind 127.0.0.1:{grpc_port} proto h2
    http-request deny deny_status 413 if {{ req.hdr_val(content-length) gt {MAX_REQUEST_BYTES} }}
    default_backend triton_grpc

backend triton_http
    balance leastconn
    option httpchk GET /v2/models/{spec.ENSEMBLE_NAME}/ready
{http_servers}

backend triton_grpc
    balance leastconn
{grpc_servers}
"""


class HAProxy:
    """``haproxy`` in the foreground, with its runtime API on a unix socket."""

    def __init__(self, workdir: Path, *, http_port: int, grpc_port: int, replicas: list[Replica]) -> None:
        self.socket_path = workdir / "haproxy.sock"
        self.config_path = workdir / "haproxy.cfg"
        self.log_path = workdir / "haproxy.log"
        self.config_path.write_text(config(http_port=http_port, grpc_port=grpc_port, replicas=replicas,
                                           socket_path=self.socket_path))
        self.process: subprocess.Popen | None = None

    def start(self) -> HAProxy:
        subprocess.run(["haproxy", "-c", "-q", "-f", str(self.config_path)], check=True)
        self.socket_path.unlink(missing_ok=True)  # a previous run's
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(["haproxy", "-db", "-f", str(self.config_path)],
                                            stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 10
        while True:
            try:
                self.command("show info")
                return self
            except OSError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"haproxy did not start:\n{self.log_path.read_text()}") from None
                time.sleep(0.05)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)

    def command(self, line: str) -> str:
        with socket.socket(socket.AF_UNIX) as s:
            s.connect(str(self.socket_path))
            s.sendall(line.encode() + b"\n")
            chunks = []
            while chunk := s.recv(65536):
                chunks.append(chunk)
        return b"".join(chunks).decode()

    def set_state(self, server: str, state: str) -> None:
        """``ready``, ``drain`` (no new requests, in-flight ones finish) or ``maint``, on both backends."""
        for backend in BACKENDS:
            self.command(f"set server {backend}/{server} state {state}")

    def stats(self) -> list[dict[str, str]]:
        lines = self.command("show stat").lstrip("# ").splitlines()
        header = lines[0].split(",")
        return [dict(zip(header, line.split(","))) for line in lines[1:] if line]

    def in_flight(self, server: str) -> int:
        """Requests the balancer has open on this replica, over both backends."""
        return sum(int(row["scur"] or 0) for row in self.stats() if row["svname"] == server)

    def is_up(self, server: str) -> bool:
        """Passing its health check (a drained server that passes shows DRAIN)."""
        rows = [row for row in self.stats() if row["svname"] == server and row["pxname"] == BACKENDS[0]]
        return bool(rows) and rows[0]["status"] in ("UP", "DRAIN")

    def retries(self) -> dict[str, int]:
        """Requests each backend retried (``wretr``) and redispatched to another server (``wredis``)."""
        return {f"{row['pxname']} {field}": int(row[field] or 0) for row in self.stats()
                if row["svname"] == "BACKEND" for field in ("wretr", "wredis")}

    def __enter__(self) -> HAProxy:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
