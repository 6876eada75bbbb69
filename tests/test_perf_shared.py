"""The pieces every benchmark shares: its table writer, its reading of Triton's /metrics, and its view of
the server's process tree. No server: a metrics text as Triton writes it, and real child processes."""
from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from perf import processes
from perf.tables import markdown_table
from perf.triton_metrics import by_model
from rtmo_triton import spec
from rtmo_triton.serve.tritonserver import STUB

METRICS = """\
# HELP nv_inference_count Number of inferences performed (does not include cached requests)
# TYPE nv_inference_count counter
nv_inference_count{model="rtmo_engine",version="1"} 40
nv_inference_count{model="rtmo_engine",version="2"} 2
nv_inference_count{model="rtmo_decode",version="1"} 42
# HELP nv_inference_exec_count Number of model executions performed
# TYPE nv_inference_exec_count counter
nv_inference_exec_count{model="rtmo_engine",version="1"} 7
# HELP nv_gpu_utilization GPU utilization rate [0.0 - 1.0)
# TYPE nv_gpu_utilization gauge
nv_gpu_utilization{gpu_uuid="GPU-0"} 0.5
"""


def test_a_table_has_its_header_its_rule_and_a_line_per_row():
    assert markdown_table(("a", "b"), [(1, 2.5), ("x", None)]).splitlines() == [
        "| a | b |", "| --- | --- |", "| 1 | 2.5 |", "| x | None |"]
    assert markdown_table(("a",), []) == "_not run_"


def test_metrics_are_summed_per_model_over_versions_and_filtered_by_family_and_model():
    values = by_model(METRICS, ["nv_inference_count", "nv_inference_exec_count"])
    assert values == {("nv_inference_count", "rtmo_engine"): 42.0,
                      ("nv_inference_count", "rtmo_decode"): 42.0,
                      ("nv_inference_exec_count", "rtmo_engine"): 7.0}
    assert by_model(METRICS, ["nv_inference_count"], model="rtmo_d.*") == {
        ("nv_inference_count", "rtmo_decode"): 42.0}
    assert by_model(METRICS, ["nv_no_such_metric"]) == {}


@pytest.fixture
def stub_child(tmp_path):
    """A child process that looks like a Python-backend stub of the engine: argv[0] named as the stub,
    argv[1] its model.py, argv[2] its shared-memory region."""
    model_py = tmp_path / "repo" / spec.ENGINE_NAME / spec.MODEL_VERSION / "model.py"
    model_py.parent.mkdir(parents=True)
    model_py.write_text("import time\nwhile True:\n    sum(range(10000))\n    time.sleep(0.001)\n")
    stub = tmp_path / STUB
    stub.symlink_to(sys.executable)
    child = subprocess.Popen([str(stub), str(model_py), "region_7"])
    time.sleep(0.5)
    yield child
    child.kill()
    child.wait()


def test_the_tree_names_each_stub_by_its_model_and_the_rest_as_the_server(stub_child):
    tree = processes.tree(os.getpid())
    assert [p.pid for p in tree][0] == os.getpid()
    [stub] = [p for p in tree if p.pid == stub_child.pid]
    assert processes.stub_model(stub) == spec.ENGINE_NAME
    assert processes.role(stub) == spec.ENGINE_NAME
    assert processes.role(tree[0]) == processes.SERVER_ROLE
    roles = processes.cpu_by_role(tree)
    assert roles[spec.ENGINE_NAME] > 0 and roles[processes.SERVER_ROLE] > 0
    # Both processes keep running, so the plain total is read between two by-role readings: CPU clocks
    # only go forward, and the total lies between their sums (not equal to either).
    total = processes.cpu_seconds(tree)
    after = processes.cpu_by_role(tree)
    assert sum(roles.values()) - 1e-9 <= total <= sum(after.values()) + 1e-9
    assert processes.rss_bytes(tree) > processes.rss_bytes(tree[:1]) > 0


def test_a_process_that_has_gone_has_no_tree(stub_child):
    stub_child.kill()
    stub_child.wait()
    assert processes.tree(stub_child.pid) == []


def test_own_cpu_time_of_an_idle_interval_is_zero_not_a_rounding_below_it():
    """(0.01 + 0.02) - 0.01 - 0.02 is -3.5e-18 in floats: the clocks are subtracted one by one."""
    idle = os.times_result((0.01, 0.02, 0.0, 0.0, 5.0))
    assert processes.own_cpu_seconds(idle, idle) == 0.0
    later = os.times_result((0.01, 0.05, 0.0, 0.0, 6.0))
    assert processes.own_cpu_seconds(idle, later) == pytest.approx(0.03)
