"""Engine threads follow the cores a serving host really gives: affinity capped by a cgroup quota,
cgroup v2 or v1 (a Kubernetes CPU limit on either kind of node)."""
import os

import pytest

from rtmo_triton.served.cpus import cgroup_cpus, engine_threads, usable_cpus


def cgroup(tmp_path, **files: str):
    for name, text in files.items():
        path = tmp_path / name.replace("__", "/")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return tmp_path


@pytest.mark.parametrize(("files", "cpus"), [
    ({"cpu.max": "150000 100000\n"}, 1.5),
    ({"cpu.max": "max 100000\n"}, None),
    ({"cpu__cpu.cfs_quota_us": "400000\n", "cpu__cpu.cfs_period_us": "100000\n"}, 4.0),
    ({"cpu__cpu.cfs_quota_us": "-1\n", "cpu__cpu.cfs_period_us": "100000\n"}, None),
    ({"cpu.max": "max 100000\n", "cpu__cpu.cfs_quota_us": "50000\n", "cpu__cpu.cfs_period_us": "100000\n"},
     None),  # a v2 host says no limit: leftover v1 files are not read
    ({}, None),
    ({"cpu.max": "garbage\n"}, None),
])
def test_the_quota_is_read_from_cgroup_v2_else_v1(tmp_path, files, cpus):
    assert cgroup_cpus(cgroup(tmp_path, **files)) == cpus


def test_usable_cpus_are_the_affinity_capped_by_the_quota_rounded_up(tmp_path):
    cores = len(os.sched_getaffinity(0))
    assert usable_cpus(cgroup(tmp_path / "none")) == cores
    assert usable_cpus(cgroup(tmp_path / "half", **{"cpu.max": "50000 100000"})) == 1
    v1 = {"cpu__cpu.cfs_quota_us": "150000", "cpu__cpu.cfs_period_us": "100000"}
    assert usable_cpus(cgroup(tmp_path / "v1", **v1)) == min(cores, 2)


def test_engine_threads_are_an_equal_share_and_at_least_one():
    assert engine_threads(2, cpus=32) == 16
    assert engine_threads(3, cpus=2) == 1
    assert engine_threads(0, cpus=4) == 4
