"""How many onnxruntime threads an engine instance gets on the host that serves it.

Measured on the CPU (reports/model-analyzer/summary.md): the best layout gave every engine instance
an equal share of the cores with no oversubscription (2 instances x 1 thread on 2 cores served 5.4
images/s; 1 x 2 threads 5.2; 2 x 2 threads 4.1-4.5). The rule: usable cores // engine instances, at
least one. Usable cores count the CPU affinity and a cgroup CPU quota (a Kubernetes CPU limit), not
the machine's total.
"""
from __future__ import annotations

import math
import os
from pathlib import Path

CGROUP_CPU_MAX = Path("/sys/fs/cgroup/cpu.max")
"""cgroup v2: ``<quota> <period>`` in µs, or ``max <period>`` without a limit."""


def usable_cpus(cpu_max: Path = CGROUP_CPU_MAX) -> int:
    """Cores this process may run on: affinity, capped by the cgroup's CPU quota (rounded up)."""
    cores = len(os.sched_getaffinity(0))
    try:
        quota, period = cpu_max.read_text().split()[:2]
    except (OSError, ValueError):
        return cores
    if quota == "max":
        return cores
    return max(1, min(cores, math.ceil(int(quota) / int(period))))


def engine_threads(instances: int, cpus: int | None = None) -> int:
    """Intra-op threads per engine instance: an equal share of the usable cores, at least one."""
    return max(1, (usable_cpus() if cpus is None else cpus) // max(1, instances))
