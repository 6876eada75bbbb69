"""Truthful readiness and self-healing for a tritonserver whose Python stubs may die.

Triton 2.51 (the 24.10 container) does not replace a Python-backend stub killed by the OOM killer or
a native crash, and keeps answering ready while every request routed to that instance fails with
``Stub process ... is not healthy`` (shared/DESIGN.md §7; python_backend reports it through model
readiness only from late 2025). The guard watches the server's stub processes against the instance
counts of the served configs and, when one is missing:

- answers ``/ready`` with 503 at once, so a load balancer or Kubernetes stops routing to this server;
- reloads that model through Triton's model-control API (``POST /v2/repository/models/<m>/load``,
  explicit mode, with the served config plus a bumped ``RELOAD_PARAMETER`` so Triton does not skip
  it as unchanged): Triton starts a fresh set of instances, switches to them and lets the old ones
  finish what they hold, so the healthy instances keep serving throughout;
- answers 200 again once every instance's stub runs;
- stops the old copy's stubs if Triton has not unloaded it after ``STALE_GRACE_S``.

It needs to see the server's processes (same host or container) and the model-control key; the
model-repository API stays closed to everyone else (``--http-restricted-api``).
"""
from __future__ import annotations

import json
import math
import os
import signal
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from .tritonserver import STUB

ADMIN_HEADER = "rtmo-admin"
"""Header that opens Triton's restricted APIs (model repository, shared memory, logging, trace)."""
RESTRICTED_APIS = "model-repository,shared-memory,logging,trace"
STALE_GRACE_S = 60.0
"""How long a replaced copy's stubs may outlive the reload that replaced it (see ``Guard``)."""
RELOAD_PARAMETER = "rtmo_serve_reload"
"""Config parameter the guard bumps on each reload. Triton skips a load whose files and config are
unchanged, and one that changes only ``instance_group`` keeps the surviving instances, dead stub
included: any other change makes it load a fresh copy beside the old, which serves until the swap."""


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


SHUTTING_DOWN = "shutting down"


@dataclass
class Health:
    """What ``/ready`` reports; ``problems`` is empty when ready."""

    problems: list[str] = field(default_factory=list)
    reloading: set[str] = field(default_factory=set)
    reloads: Counter[str] = field(default_factory=Counter)
    stale_stubs: int = 0
    """Stubs of copies replaced by a reload that Triton has not finished unloading (see ``Guard``)."""

    @property
    def ready(self) -> bool:
        return not self.problems

    def as_json(self) -> bytes:
        return json.dumps({"ready": self.ready, "problems": self.problems,
                           "reloading": sorted(self.reloading), "reloads": dict(self.reloads),
                           "stale_stubs": self.stale_stubs}).encode()


class Guard:
    """Polls the server every ``interval_s``; ``health`` is always the latest verdict.

    A reload loads a fresh copy of the model beside the old one, whose surviving stubs go when Triton
    unloads it. Idle, that takes a few seconds; after a crash under traffic Triton 2.51 never finishes
    it, and the old copy's stubs would hold their memory until the server stops. So the stubs alive
    when a reload starts are set aside as stale: they no longer count (a later crash of the fresh copy
    is still seen), and those still running ``stale_grace_s`` later, when the old copy has long had
    no requests, are stopped.
    """

    def __init__(self, http_url: str, server_pid: int, admin_key: str, *, interval_s: float = 1.0,
                 stale_grace_s: float = STALE_GRACE_S) -> None:
        self.base = f"http://{http_url}"
        self.server_pid = server_pid
        self.admin_key = admin_key
        self.interval_s = interval_s
        self.stale_grace_s = stale_grace_s
        self.health = Health(problems=["starting"])
        self.expected: dict[str, int] = {}
        self.stale: dict[int, float] = {}
        """Stale stub pid → when the reload that replaced its copy started (``time.monotonic``)."""
        self._stop = threading.Event()
        self._lock = threading.Lock()

    def _call(self, path: str, method: str = "GET", admin: bool = False, timeout: float = 5.0,
              body: dict | None = None) -> dict:
        data = json.dumps(body).encode() if body is not None else b"" if method == "POST" else None
        request = urllib.request.Request(self.base + path, method=method, data=data,
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
        try:
            self._call("/v2/health/ready")
            if not self.expected:
                self.expected = self._python_instances()
        except (OSError, ValueError) as exc:  # no stub is judged by a server that does not answer
            return self._report([f"tritonserver not ready: {exc}"])
        stubs = stub_processes(self.server_pid)
        with self._lock:
            self.stale = {pid: since for pid, since in self.stale.items() if pid in stubs}
            running = Counter(model for pid, model in stubs.items() if pid not in self.stale)
        self._stop_overdue(stubs)
        problems = []
        for model, want in self.expected.items():
            if running[model] < want and not self._stop.is_set():
                problems.append(f"{model}: {running[model]} of {want} stub processes running")
                self._reload(model, [pid for pid, name in stubs.items() if name == model])
        return self._report(problems)

    def _report(self, problems: list[str]) -> Health:
        with self._lock:
            if self._stop.is_set():  # a look that began before ``stop`` must not report ready again
                problems = [SHUTTING_DOWN]
            else:
                problems += [f"{m}: reloading" for m in sorted(self.health.reloading)]
            self.health = Health(problems, set(self.health.reloading), self.health.reloads, len(self.stale))
        return self.health

    def _stop_overdue(self, stubs: dict[int, str]) -> None:
        now = time.monotonic()
        with self._lock:
            overdue = [pid for pid, since in self.stale.items() if now - since > self.stale_grace_s]
        for pid in overdue:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                continue
            with self._lock:  # still stale (uncounted) while it exits, but never overdue again
                self.stale[pid] = math.inf
            print(f"[rtmo-serve] stopped stub {pid}, left running by a replaced copy of {stubs[pid]}",
                  flush=True)

    def _reload(self, model: str, old_stubs: list[int]) -> None:
        with self._lock:
            if model in self.health.reloading:
                return
            self.health.reloading.add(model)
            now = time.monotonic()
            self.stale.update({pid: self.stale.get(pid, now) for pid in old_stubs})
        threading.Thread(target=self._reload_now, args=(model,), daemon=True, name=f"reload-{model}").start()

    def _reload_now(self, model: str) -> None:
        try:
            config = self._call(f"/v2/models/{model}/config")
            config.setdefault("parameters", {})[RELOAD_PARAMETER] = {
                "string_value": str(self.health.reloads[model] + 1)}
            self._call(f"/v2/repository/models/{model}/load", "POST", admin=True, timeout=300,
                       body={"parameters": {"config": json.dumps(config)}})
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
        """No more looks or reloads; ``/ready`` says the server is shutting down from now on."""
        self._stop.set()
        self._report([])
