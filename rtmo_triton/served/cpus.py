"""How many onnxruntime threads an engine instance gets on the host that serves it.

Measured on the CPU (reports/model-analyzer/summary.md): the best layout gave every engine instance
an equal share of the cores with no oversubscription (2 instances x 1 thread on 2 cores served 5.4
images/s; 1 x 2 threads 5.2; 2 x 2 threads 4.1-4.5). The rule: usable cores // engine instances, at
least one. Usable cores count the CPU affinity and a cgroup CPU quota (a Kubernetes CPU limit; cgroup
v2 or v1), not the machine's total.
"""
from __future__ import annotations

import math
import os
from pathlib import Path

CGROUP = Path("/sys/fs/cgroup")
"""cgroup v2: ``cpu.max`` holds ``<quota> <period>`` in µs, or ``max <period>`` without a limit;
cgroup v1 (older nodes): ``cpu/cpu.cfs_quota_us`` (-1 without a limit) and ``cpu/cpu.cfs_period_us``."""


def cgroup_cpus(root: Path = CGROUP) -> float | None:
    """The CPUs this cgroup's quota allows, or None where no quota is set or readable."""
    try:
        quota, period = (root / "cpu.max").read_text().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:
        quota_us = int((root / "cpu" / "cpu.cfs_quota_us").read_text())
        period_us = int((root / "cpu" / "cpu.cfs_period_us").read_text())
    except (OSError, ValueError):
        return None
    return quota_us / period_us if quota_us > 0 and period_us > 0 else None


def usable_cpus(cgroup: Path = CGROUP) -> int:
    """Cores this process may run on: affinity, capped by the cgroup's CPU quota (rounded up)."""
    cores = len(os.sched_getaffinity(0))
    quota = cgroup_cpus(cgroup)
    return cores if quota is None else max(1, min(cores, math.ceil(quota)))


def engine_threads(instances: int, cpus: int | None = None) -> int:
    """Intra-op threads per engine instance: an equal share of the usable cores, at least one."""
    return max(1, (usable_cpus() if cpus is None else cpus) // max(1, instances))
