"""The servers the server tests share, and the guard of ``make test-fast``.

One tritonserver per repository kind serves every test that only sends requests and reads answers
(deltas of the server's statistics, never their totals), started once for the session. The kinds
that compare people with mmpose's keep every cell; the tools' tests take the default K, which costs
them less decoding.

``make test-fast`` runs the tests not marked ``server``; under it (RTMO_TEST_FAST=1) a test that
starts a tritonserver anyway fails, so a missing marker shows instead of slowing the fast run."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from rtmo_triton import spec

from .served import serve_fixture_repository

SERVER_COMMANDS = ("tritonserver", "rtmo-tritonserver", "rtmo-serve", "rtmo_triton.serve.cli")


def _starts_a_server(args) -> bool:
    argv = [args] if isinstance(args, (str, os.PathLike)) else list(args)
    return any(Path(str(a)).name in SERVER_COMMANDS or str(a) in SERVER_COMMANDS for a in argv)


class _NoServerPopen(subprocess.Popen):
    def __init__(self, args, *rest, **kwargs):
        if _starts_a_server(args):
            raise AssertionError(f"a test under make test-fast started a server ({args}): mark it "
                                 "@pytest.mark.server")
        super().__init__(args, *rest, **kwargs)


@pytest.fixture(scope="session", autouse=True)
def _fast_runs_start_no_server():
    if not os.environ.get("RTMO_TEST_FAST"):
        yield
        return
    real, subprocess.Popen = subprocess.Popen, _NoServerPopen
    try:
        yield
    finally:
        subprocess.Popen = real


@pytest.fixture(scope="session")
def reference_server(tmp_path_factory):
    """The fixture checkpoint, every cell kept, the numpy/OpenCV preprocess and decode models."""
    yield from serve_fixture_repository(tmp_path_factory, "reference-cpu", "--preprocess", "cpu")


@pytest.fixture(scope="session")
def reference_server_torch_stages(tmp_path_factory):
    """The same with the torch preprocess and decode of ``PREPROCESS=gpu``, here on the CPU: the code a
    GPU host runs on CUDA."""
    yield from serve_fixture_repository(tmp_path_factory, "reference-gpu", "--preprocess", "gpu")


@pytest.fixture(scope="session")
def default_k_server(tmp_path_factory):
    """The fixture checkpoint at the build's default K (``spec.DEFAULT_TOPK``): for the tools' tests,
    which compare the server with itself, not with mmpose."""
    yield from serve_fixture_repository(tmp_path_factory, "default-k", "--topk", str(spec.DEFAULT_TOPK))
