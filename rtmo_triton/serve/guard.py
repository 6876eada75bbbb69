"""Truthful readiness and self-healing for a tritonserver whose Python stubs may die.

Triton 2.51 (the 24.10 container) does not replace a Python-backend stub killed by the OOM killer or
a native crash, and keeps answering ready while every request routed to that instance fails with
``Stub process ... is not healthy`` (shared/DESIGN.md §7; python_backend reports it through model
readiness only from late 2025). The guard watches the server's stub processes against the instance
counts of the served configs and, when one is missing:

- answers ``/ready`` with 503 at once, so a load balancer or Kubernetes stops routing to this server;
- reloads that model through Triton's model-control API (``POST /v2/repository/models/<m>/load``,
  explicit mode): Triton starts a fresh set of instances, switches to them and lets the old ones
  finish what they hold, so the healthy instances keep serving throughout;
- answers 200 again once every instance's stub runs.

It needs to see the server's processes (same host or container) and the model-control key; the
model-repository API stays closed to everyone else (``--http-restricted-api``).
"""
from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from .tritonserver import STUB

ADMIN_HEADER = "rtmo-admin"
"""Header that opens Triton's restricted APIs (model repository, shared memory, logging, trace)."""
RESTRICTED_APIS = "model-repository,shared-memory,logging,trace"


def stub_processes(server_pid: int, proc: Path = Path("/proc")) -> dict[int, str]:
    """Running (not zombie) Python-backend stubs of ``server_pid``: pid → model name.

    A stub's first argument is its ``<repository>/<model>/<version>/model.py``.
    """
    stubs = {}
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue  # exited while we looked
        state, ppid = stat.rsplit(")", 1)[1].split()[:2]
        if int(ppid) != server_pid or state == "Z" or not argv[0].endswith(STUB.encode()) or len(argv) < 2:
            continue
        stubs[int(entry.name)] = Path(argv[1].decode()).parents[1].name
    return stubs


def live_stubs(server_pid: int, proc: Path = Path("/proc")) -> Counter[str]:
    """Running stubs of ``server_pid``, counted by model name."""
    return Counter(stub_processes(server_pid, proc).values())


@dataclass
class Health:
    """What ``/ready`` reports; ``problems`` is empty when ready."""

    problems: list[str] = field(default_factory=list)
    reloading: set[str] = field(default_factory=set)
    reloads: Counter[str] = field(default_factory=Counter)

    @property
    def ready(self) -> bool:
        return not self.problems

    def as_json(self) -> bytes:
        return json.dumps({"ready": self.ready, "problems": self.problems,
                           "reloading": sorted(self.reloading), "reloads": dict(self.reloads)}).encode()


class Guard:
    """Polls the server every ``interval_s``; ``health`` is always the latest verdict."""

    def __init__(self, http_url: str, server_pid: int, admin_key: str, *, interval_s: float = 1.0) -> None:
        self.base = f"http://{http_url}"
        self.server_pid = server_pid
        self.admin_key = admin_key
        self.interval_s = interval_s
        self.health = Health(problems=["starting"])
        self.expected: dict[str, int] = {}
        self._stop = threading.Event()
        self._lock = threading.Lock()

    def _call(self, path: str, method: str = "GET", admin: bool = False, timeout: float = 5.0) -> dict:
        request = urllib.request.Request(self.base + path, method=method,
                                         data=b"" if method == "POST" else None,
                                         headers={ADMIN_HEADER: self.admin_key} if admin else {})
        with urllib.request.urlopen(request, timeout=timeout) as response:
            body = response.read()
        return json.loads(body) if body else {}

    def _python_instances(self) -> dict[str, int]:
        """Instances per ready Python model, from the served configs (what the server should run)."""
        expected = {}
        for entry in self._call("/v2/repository/index", "POST", admin=True):
            if entry.get("state") != "READY":
                continue
            config = self._call(f"/v2/models/{entry['name']}/config")
            if config.get("backend") == "python":
                expected[entry["name"]] = sum(g.get("count", 1) for g in config.get("instance_group", []))
        return expected

    def check(self) -> Health:
        """One look at the server; starts a reload for each model short of stubs."""
        problems = []
        try:
            self._call("/v2/health/ready")
            if not self.expected:
                self.expected = self._python_instances()
        except (OSError, ValueError) as exc:
            problems.append(f"tritonserver not ready: {exc}")
        running = live_stubs(self.server_pid) if not problems else Counter()
        for model, want in self.expected.items():
            if running[model] < want:
                problems.append(f"{model}: {running[model]} of {want} stub processes running")
                self._reload(model)
        with self._lock:
            problems += [f"{m}: reloading" for m in sorted(self.health.reloading)]
            self.health = Health(problems, set(self.health.reloading), self.health.reloads)
        return self.health

    def _reload(self, model: str) -> None:
        with self._lock:
            if model in self.health.reloading:
                return
            self.health.reloading.add(model)
        threading.Thread(target=self._reload_now, args=(model,), daemon=True, name=f"reload-{model}").start()

    def _reload_now(self, model: str) -> None:
        try:
            self._call(f"/v2/repository/models/{model}/load", "POST", admin=True, timeout=300)
        except (OSError, ValueError) as exc:
            print(f"[rtmo-serve] reloading {model} failed: {exc}", flush=True)
        else:
            print(f"[rtmo-serve] {model} reloaded after a stub process died", flush=True)
        finally:
            with self._lock:
                self.health.reloading.discard(model)
                self.health.reloads[model] += 1

    def run(self) -> None:
        while not self._stop.is_set():
            self.check()
            self._stop.wait(self.interval_s)

    def stop(self) -> None:
        self._stop.set()
