"""The server's process tree as the benchmarks see it (psutil): tritonserver and its Python stubs, each
named by its role, with CPU time and resident memory. (The serving side, which must run on the
standard library alone, reads ``/proc`` itself: ``rtmo_triton.serve.guard.stub_processes``.)"""
from __future__ import annotations

import os
from collections import defaultdict
from pathlib import Path

import psutil

from rtmo_triton import spec
from rtmo_triton.serve.tritonserver import STUB

SERVER_ROLE = "tritonserver (core, gRPC, ensemble)"
OTHER_STUB = "python stub (other)"


def tree(pid: int) -> list[psutil.Process]:
    """``pid`` and every live descendant; empty when ``pid`` has gone."""
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def stub_model(proc: psutil.Process) -> str | None:
    """The model a Python-backend stub serves (its first argument is ``<repo>/<model>/<version>/model.py``);
    None for any other process."""
    try:
        argv = proc.cmdline()
    except psutil.Error:
        return None
    if len(argv) < 2 or not argv[0].endswith(STUB):
        return None
    return Path(argv[1]).parents[1].name


def role(proc: psutil.Process) -> str:
    """What a process of the tree does: the composing model a stub serves, or the server itself."""
    model = stub_model(proc)
    if model is None:
        return SERVER_ROLE
    return model if model in (spec.PREPROCESS_NAME, spec.ENGINE_NAME, spec.DECODE_NAME) else OTHER_STUB


def _cpu(proc: psutil.Process) -> float | None:
    """User + system CPU seconds so far; None once the process has gone."""
    try:
        t = proc.cpu_times()
    except psutil.Error:
        return None
    return t.user + t.system


def cpu_seconds(procs: list[psutil.Process]) -> float:
    """User + system CPU seconds so far of the processes still alive (no roles: nothing but the times)."""
    return sum(s for p in procs if (s := _cpu(p)) is not None)


def cpu_by_role(procs: list[psutil.Process]) -> dict[str, float]:
    """User + system CPU seconds so far, summed by ``role``."""
    found: dict[str, float] = defaultdict(float)
    for p in procs:
        if (seconds := _cpu(p)) is not None:
            found[role(p)] += seconds
    return found


def own_cpu_seconds(before: os.times_result, after: os.times_result) -> float:
    """This process's user + system CPU seconds between two ``os.times()`` readings, each clock
    subtracted on its own: summing first and subtracting after can round an idle interval below 0."""
    return (after.user - before.user) + (after.system - before.system)


def rss_bytes(procs: list[psutil.Process]) -> int:
    """Resident memory of the processes still alive."""
    total = 0
    for p in procs:
        try:
            total += p.memory_info().rss
        except psutil.Error:
            continue
    return total
