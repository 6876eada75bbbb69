"""PyTorch for a served model that needs it: the server's own interpreter's, else the one the launcher names.

The repository never carries PyTorch (GBs). A model that imports it says so in its config
(``spec.Param.NEEDS_TORCH``); ``rtmo-tritonserver`` (and so ``rtmo-serve``) then checks, before
starting PyPI's server, that the stubs' interpreter has it, or else passes the folder holding the
``torch`` package of its own interpreter (the same Python version as the stub it installed) in
``RTMO_TORCH_PATH``. That folder is appended to ``sys.path``, never put first: the packages the
repository carries (numpy 1 for Triton 2.51's stub) must keep precedence over that interpreter's.

Vendored into the repository: standard library only.
"""
from __future__ import annotations

import importlib
import os
import sys

TORCH_PATH_ENV = "RTMO_TORCH_PATH"
"""Folders (``os.pathsep``-separated) searched, after everything else, for ``torch``."""
NO_TORCH = ("this model runs PyTorch from the server's own Python interpreter, and this one cannot import "
            "it ({error}). The repository never carries PyTorch (GBs): install it where tritonserver's "
            "Python models run (e.g. `pip install torch` in the Triton container), serve with "
            "rtmo-serve / rtmo-tritonserver from a virtualenv of the same Python version that has it, "
            "or rebuild with ENGINE=onnx PREPROCESS=cpu")


def torch_folders() -> list[str]:
    return [p for p in os.environ.get(TORCH_PATH_ENV, "").split(os.pathsep) if p]


def import_torch():
    """``import torch``, from the server's interpreter first, then from ``RTMO_TORCH_PATH``; a
    RuntimeError with the reason and the remedies when neither has it."""
    try:
        import torch
        return torch
    except ImportError as exc:
        error = exc
    folders = [p for p in torch_folders() if p not in sys.path]
    if folders:
        sys.path.extend(folders)
        importlib.invalidate_caches()
        try:
            import torch
            return torch
        except ImportError as exc:
            error = exc
    tried = f"; also looked in {TORCH_PATH_ENV}={os.environ[TORCH_PATH_ENV]}" if torch_folders() else ""
    raise RuntimeError(NO_TORCH.format(error=f"{error}{tried}")) from None
