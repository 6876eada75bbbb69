"""keep_freed_buffers: a request's numpy buffers stop page-faulting back in on every request."""
import subprocess
import sys

import pytest

# One image's decode at K=100, every candidate kept (what random weights produce), repeated like
# requests: the minor page faults it takes are the cost keep_freed_buffers removes.
PROBE = """
import resource, sys
import numpy as np
from rtmo_triton.served.postprocess import decode_people
from rtmo_triton.served.heap import keep_freed_buffers
if sys.argv[1] == "keep":
    assert keep_freed_buffers()
rng = np.random.default_rng(0)
k, j = 100, 17
xy = rng.uniform(0, 500, (k, 2)).astype(np.float32)
args = (np.linspace(0.9, 0.5, k, dtype=np.float32), np.concatenate([xy, xy + 100], 1),
        rng.random((k, j), np.float32), rng.normal(size=(k, j, 192)).astype(np.float32),
        rng.normal(size=(k, j, 256)).astype(np.float32), np.array([1, 0, 80, 640, 480, 640], np.float32),
        0.1, 1.0)
decode_people(*args)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(20):
    assert len(decode_people(*args).scores) == k
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def minor_faults(mode: str) -> int:
    out = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True, check=True)
    return int(out.stdout)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc mallopt is Linux-only")
def test_request_buffers_are_reused_instead_of_faulted_in_again():
    default, kept = minor_faults("default"), minor_faults("keep")
    # 20 decodes of ~7 MB of temporaries: glibc's defaults fault most pages in anew each time
    assert default > 20 * 500, default
    assert kept < 200, kept


def test_both_thresholds_are_set_even_when_the_first_is_refused(monkeypatch):
    from rtmo_triton.served import heap

    calls = []

    class Libc:
        @staticmethod
        def mallopt(param, value):
            calls.append(param)
            return 0 if param == heap.M_MMAP_THRESHOLD else 1  # the first setting refused

    monkeypatch.setattr(heap.ctypes, "CDLL", lambda name: Libc)
    assert heap.keep_freed_buffers() is False
    assert calls == [heap.M_MMAP_THRESHOLD, heap.M_TRIM_THRESHOLD]
