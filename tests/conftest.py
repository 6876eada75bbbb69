"""The servers the server tests share, and the guard of ``make test-fast``.

The tools' tests (rtmo-eval, rtmo-video) share one tritonserver for the session: they only send
requests and read answers (deltas of the server's statistics, never their totals), and compare the
server with itself, so it serves the build's default K. test_server's keep-every-cell servers, which
compare people with mmpose's, stay its own, one at a time: each holds gigabytes once it has decoded
every cell of 8-image requests.

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
def default_k_server(tmp_path_factory):
    """The fixture checkpoint at the build's default K (``spec.DEFAULT_TOPK``): for the tools' tests,
    which compare the server with itself, not with mmpose."""
    yield from serve_fixture_repository(tmp_path_factory, "default-k", "--topk", str(spec.DEFAULT_TOPK))
