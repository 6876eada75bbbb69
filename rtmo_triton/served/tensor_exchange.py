"""Refuse to load where Triton's Python backend and numpy disagree on what an array is.

The Python backend up to Triton 24.10 (server 2.51, which PyPI's ``nvidia-pytriton`` 0.7.0 ships) is
built with pybind11 2.10. That pybind11 reads numpy's dtype struct in numpy 1's layout, so under
numpy 2 every array the stub builds from Triton's memory has a zero stride: a numeric input repeats
its first element (silently wrong people), an output claims the wrong byte size, and a BYTES input
crashes the stub. Triton 24.11 moved to pybind11 2.12, which knows both layouts.

A repository built with the default ``PYTHONS`` carries numpy 1 (``build.packages``), put first on the path;
one built with ``PYTHONS=none`` uses whatever numpy the server's interpreter has. Rather than guess
from version numbers, each model checks at load the one operation that goes wrong: an array built by
the stub from a raw buffer must read back what was written.
"""
from __future__ import annotations

from typing import Any

import numpy as np


class TensorExchangeError(RuntimeError):
    pass


def check_tensor_exchange(pb_utils: Any) -> None:
    """Raise, naming the fix, unless the stub round-trips a small FP32 tensor through raw memory."""
    want = np.arange(1, 5, dtype=np.float32)
    # from_dlpack builds its array from the memory pointer, as the stub does for every request's inputs
    got = pb_utils.Tensor.from_dlpack("probe", pb_utils.Tensor("probe", want).to_dlpack()).as_numpy()
    if np.array_equal(got, want):
        return
    raise TensorExchangeError(
        f"this Triton Python backend cannot exchange tensors with numpy {np.__version__}: an array it built "
        f"from Triton's memory reads {np.asarray(got).tolist()} for {want.tolist()}. Triton up to 24.10 "
        "(server 2.51) builds its Python backend with pybind11 2.10, which predates numpy 2: requests "
        "would get wrong results or crash the stub. Give the server's interpreter numpy<2 (a repository "
        "built with the default PYTHONS carries numpy 1; PYTHONS=none uses the server's own), or "
        "serve with Triton 24.11 or later")
