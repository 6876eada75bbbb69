"""A real tritonserver serving the fixture checkpoint, for the server tests.

Built at K ≥ every cell and the fixtures' thresholds, so the served people
must equal the reference's final predictions. ``conftest.py`` serves the one
kind the tools' tests share for the whole session; a test that changes the
build or the server (queue limits, killed stubs, another launcher) builds its
own.
"""
from __future__ import annotations

import json
import os
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from rtmo_triton.build import repository as build
from rtmo_triton.serve.local import TritonServer
from rtmo_triton.serve.tritonserver import ServerNotFound, command

from .golden import CHECKPOINT_T, OUTPUT_FILES, load_output

KEEP_ALL_CELLS = 10_000


def require_server() -> None:
    """Skip where no server is installed; in CI a missing server is a failure, not a skip."""
    try:
        command([])
    except ServerNotFound as exc:
        if os.environ.get("CI"):
            pytest.fail(f"{exc} (CI must run the server tests)")
        pytest.skip(str(exc))


def build_fixture_repository(repo: Path, *extra: str) -> Path:
    thr = load_output(OUTPUT_FILES[0])
    code = build.main(["--checkpoint", str(CHECKPOINT_T), "--model-repository", str(repo), "--engine", "onnx",
                       "--topk", str(KEEP_ALL_CELLS), "--score-thr", f"{float(thr['score_thr']):.6g}",
                       "--nms-thr", f"{float(thr['nms_thr']):.6g}", *extra])
    assert code == 0
    return repo


def start_server(repo: Path, log: Path) -> TritonServer:
    server = TritonServer(repo, log_path=log)
    server.__enter__()
    print(f"\ntritonserver ready in {server.start_seconds:.2f} s ({repo})")
    return server


def serve_fixture_repository(tmp_path_factory: pytest.TempPathFactory, name: str,
                             *extra: str) -> Iterator[TritonServer]:
    """Build the fixture repository (with ``extra`` build flags), serve it, stop it afterwards."""
    require_server()
    tmp = tmp_path_factory.mktemp(name)
    server = start_server(build_fixture_repository(tmp / "repo", *extra), tmp / "tritonserver.log")
    try:
        yield server
    finally:
        server.stop()


def get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=10) as r:
        return json.loads(r.read())
