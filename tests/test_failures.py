"""Failure isolation against a real server: a crashed stub heals itself while health says so, and
overload is refused early as busy; plus the per-request error rule of the Python models."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest

from rtmo_triton import spec
from rtmo_triton.client import connect, infer
from rtmo_triton.client.transport import is_busy
from rtmo_triton.serve.guard import Guard, stub_processes
from rtmo_triton.serve.local import free_port
from rtmo_triton.served.image_io import ImageError
from rtmo_triton.served.respond import respond_each

from .golden import OUTPUT_FILES, load_output
from .served import build_fixture_repository, require_server

RECOVERY_LIMIT_S = 30
STALE_GRACE_S = 5
EXIT_TIMEOUT_S = 5
"""The guarded server's stop: after a self-heal Triton waits all of it for the replaced stub, so the
default 30 s would only make the teardown 25 s longer."""


class _Triton:
    """The names of triton_python_backend_utils that ``respond_each`` and ``EngineModel`` use, for unit
    tests; a request is its input array."""

    warnings: list[str] = []

    class TritonError:
        INVALID_ARG, INTERNAL = "INVALID_ARG", "INTERNAL"

        def __init__(self, message, code):
            self.message, self.code = message, code

    class InferenceResponse:
        def __init__(self, tensors=None, error=None):
            self.tensors, self.error = tensors, error

    class Logger:
        @staticmethod
        def log_warn(message):
            _Triton.warnings.append(message)

    @staticmethod
    def get_input_tensor_by_name(request, name):
        assert name == spec.ENGINE_INPUT
        return SimpleNamespace(as_numpy=lambda: request)


def test_any_exception_is_its_own_requests_error():
    def handle(request):
        if request == "bad image":
            raise ImageError("not a decodable image")
        if request == "library bug":
            raise cv2.error("(-215:Assertion failed) in imdecode")
        return [request]

    out = respond_each(["a", "bad image", "b", "library bug", "c"], handle, _Triton)
    assert [r.tensors for r in out] == [["a"], None, ["b"], None, ["c"]]
    assert (out[1].error.code, out[1].error.message) == ("INVALID_ARG", "not a decodable image")
    assert out[3].error.code == "INTERNAL" and out[3].error.message.startswith("error: (-215")


class _Engine:
    """An engine whose run fails on a row of -1, as a real one fails on input it cannot take."""

    def run(self, batch):
        if (batch == -1).any():
            raise ValueError("cannot take row -1")
        return {"twice": batch * 2}

    def run_requests(self, inputs):
        outputs = self.run(np.concatenate(inputs))["twice"]
        return [{"twice": part} for part in np.split(outputs, np.cumsum([len(x) for x in inputs])[:-1])]


@pytest.fixture
def engine_model(monkeypatch):
    """``EngineModel`` over ``_Engine``, its tensors the output arrays (99 cannot become a tensor)."""
    monkeypatch.setitem(sys.modules, "triton_python_backend_utils", _Triton)
    monkeypatch.delitem(sys.modules, "rtmo_triton.served.engine_model", raising=False)
    from rtmo_triton.served.engine_model import EngineModel

    class Model(EngineModel):
        engine = _Engine()

        def tensors(self, outputs):
            if (outputs["twice"] == 2 * 99).any():
                raise TypeError("no tensor of 99")
            return [outputs["twice"]]

    _Triton.warnings.clear()
    return Model()


def test_an_engine_batch_runs_once_when_every_request_is_good(engine_model):
    out = engine_model.execute([np.array([1]), np.array([2, 3])])
    assert [r.tensors[0].tolist() for r in out] == [[2], [4, 6]]
    assert _Triton.warnings == []


@pytest.mark.parametrize(("bad", "message"), [(-1, "ValueError: cannot take row -1"),
                                               (99, "TypeError: no tensor of 99")])
def test_an_engine_failure_is_the_error_of_the_request_at_fault_alone(engine_model, bad, message):
    out = engine_model.execute([np.array([1]), np.array([bad, 2]), np.array([3])])
    assert [r.error is None for r in out] == [True, False, True]
    assert [r.tensors[0].tolist() for r in (out[0], out[2])] == [[2], [6]]
    assert (out[1].error.code, out[1].error.message) == ("INTERNAL", message)
    assert _Triton.warnings == [f"engine run of 3 requests failed ({message}); running each alone"]


def _get(url: str) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")
    except OSError:
        return 0, {}


@pytest.fixture(scope="module")
def images():
    refs = [load_output(p) for p in OUTPUT_FILES[:4]]
    return [cv2.imencode(".jpg", r["img_bgr"])[1].tobytes() for r in refs]


@pytest.fixture(scope="module")
def guarded(tmp_path_factory):
    """``rtmo-serve`` (tritonserver + health guard) on free loopback ports."""
    require_server()
    tmp = tmp_path_factory.mktemp("guarded")
    repo = build_fixture_repository(tmp / "repo", "--topk", "50")
    ports = {name: free_port() for name in ("http", "grpc", "metrics", "health")}
    log = open(tmp / "rtmo-serve.log", "wb")  # noqa: SIM115 - closed at teardown
    process = subprocess.Popen(
        [sys.executable, "-m", "rtmo_triton.serve.cli", "--model-repository", str(repo),
         f"--stale-grace-s={STALE_GRACE_S}", f"--exit-timeout-secs={EXIT_TIMEOUT_S}",
         *(f"--{name}-port={port}" for name, port in ports.items())],
        stdout=log, stderr=subprocess.STDOUT)
    health = f"http://127.0.0.1:{ports['health']}"
    try:
        deadline = time.monotonic() + 180
        while _get(f"{health}/ready")[0] != 200:
            log_text = (tmp / "rtmo-serve.log").read_text()
            assert process.poll() is None and time.monotonic() < deadline, log_text
            time.sleep(0.5)
        yield process, ports, health
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()


def _newest_stub(server_pid: int, model: str) -> int:
    """The model's most recently started stub: one of its current copy, not of a copy being unloaded."""
    def started(pid: int) -> int:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])
    return max((pid for pid, name in stub_processes(server_pid).items() if name == model), key=started)


def _server_pid(serve_pid: int) -> int:
    children = Path(f"/proc/{serve_pid}/task/{serve_pid}/children").read_text().split()
    return int(children[0])


@pytest.mark.server
def test_a_killed_stub_of_each_model_is_replaced_while_traffic_flows(guarded, images):
    process, ports, health = guarded
    server_pid = _server_pid(process.pid)
    url = f"127.0.0.1:{ports['grpc']}"
    stop, results = threading.Event(), []

    def load():  # a steady stream through the client's retries, as a user would send it
        client = connect(url, "grpc")
        while not stop.is_set():
            results.extend(client.infer([[images[len(results) % 4]]]))
        client.close()

    thread = threading.Thread(target=load)
    thread.start()
    try:
        # the engine twice: a model whose stub died after a reload is healed again
        for model in (spec.PREPROCESS_NAME, spec.ENGINE_NAME, spec.DECODE_NAME, spec.ENGINE_NAME):
            os.kill(_newest_stub(server_pid, model), signal.SIGKILL)
            start, seen_unready = time.monotonic(), False
            while True:
                status, body = _get(f"{health}/ready")
                seen_unready |= status == 503
                if seen_unready and status == 200:
                    break
                assert time.monotonic() - start < RECOVERY_LIMIT_S, \
                    f"{model} not back: {status} {body}, seen 503: {seen_unready}"
                time.sleep(0.2)
            print(f"{model}: stub killed, /ready 503, back to 200 after {time.monotonic() - start:.1f} s; "
                  f"{body['stale_stubs']} stale stub(s) of replaced copies")
            # every instance serves again: a burst without retries finds no dead one
            client = connect(url, "grpc")
            burst = client.infer([[i] for i in images * 2], concurrency=8, retries=0)
            client.close()
            assert all(o.error is None for o in burst), [str(o.error) for o in burst if o.error][:2]
        # the replaced copies' stubs that Triton leaves running are stopped after the grace, under traffic
        deadline = time.monotonic() + STALE_GRACE_S + RECOVERY_LIMIT_S
        while _get(f"{health}/ready")[1].get("stale_stubs"):
            assert time.monotonic() < deadline, _get(f"{health}/ready")
            time.sleep(0.5)
        assert _get(f"{health}/ready")[0] == 200
    finally:
        stop.set()
        thread.join()
    failed = [o.error for o in results if o.error is not None]
    print(f"{len(results)} requests during four kills, {len(failed)} failed")
    assert not failed, failed[:3]
    assert _get(f"{health}/ready")[1]["reloads"] == {spec.PREPROCESS_NAME: 1, spec.ENGINE_NAME: 2,
                                                     spec.DECODE_NAME: 1}


@pytest.mark.server
def test_restricted_apis_need_the_admin_key(guarded):
    _, ports, _ = guarded
    index = f"http://127.0.0.1:{ports['http']}/v2/repository/index"
    request = urllib.request.Request(index, method="POST", data=b"")
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=5)
    assert "restricted" in refused.value.read().decode()


@pytest.mark.server
def test_overload_is_refused_early_as_busy_and_retried_by_the_client(tmp_path, images):
    """One engine instance taking one image at a time, one request waiting: of 12 concurrent
    requests most are refused at once as busy; with enough client retries every one gets through."""
    require_server()
    tuned = tmp_path / "tuned.json"
    tuned.write_text(json.dumps({spec.ENGINE_NAME: {"instances": 1, "max_batch": 1}}))
    repo = build_fixture_repository(tmp_path / "repo", "--topk", "50", "--max-queue", "1", "--max-batch", "1",
                                    "--tuned", str(tuned))
    from rtmo_triton.serve.local import TritonServer

    with TritonServer(repo, log_path=tmp_path / "server.log") as server:
        client = connect(server.grpc_url, "grpc")
        try:
            burst = [[images[i % 4]] for i in range(12)]
            refused = client.infer(burst, concurrency=12, retries=0)
            # Twelve clients contend for one slot, so the last one through waits for the whole burst:
            # give the retries a budget (up to ~50 s at the 2 s cap) far beyond it on any machine.
            retried = client.infer(burst, concurrency=12, retries=30)
        finally:
            client.close()
        busy = [o for o in refused if o.error is not None]
        print(f"no retries: {len(busy)} of 12 refused, in {max(o.latency_ms for o in busy):.0f} ms at most")
        assert busy and all(is_busy(o.error) for o in busy)
        assert all(str(o.error.status()) == "StatusCode.UNAVAILABLE" for o in busy)
        assert len(busy) < 12, "the server must still serve some"
        assert all(o.error is None for o in retried), [str(o.error) for o in retried if o.error][:2]
        assert infer(server.http_url, "http", images[:1])[0].ok


def test_drain_waits_for_pending_requests_then_gives_up_at_the_limit():
    """On SIGTERM rtmo-serve waits for Triton's queues to empty before stopping it."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from rtmo_triton.serve.cli import drain

    pending = {"n": 3}

    class Metrics(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            body = (f'nv_inference_pending_request_count{{model="rtmo_engine",version="1"}} {pending["n"]}\n'
                    'nv_inference_pending_request_count{model="rtmo_decode",version="1"} 0\n').encode()
            pending["n"] = max(0, pending["n"] - 1)
            self.send_response(200)
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Metrics)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_port}/metrics"
    try:
        drain(url, limit_s=10, poll_s=0.01)
        assert pending["n"] == 0, "returned while requests were pending"
        pending["n"] = 10**9  # never drains: only the limit can end the wait
        drain(url, limit_s=0.3, poll_s=0.01)
        assert 10**9 - pending["n"] >= 2, "gave up before asking again"
    finally:
        server.shutdown()


def test_a_server_is_ready_only_once_its_metrics_endpoint_listens(tmp_path):
    """Triton starts its metrics endpoint after HTTP; a test that scraped /metrics as soon as the model
    answered ready was refused the connection (CI, the nvimgcodec server test)."""
    import socket
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from rtmo_triton.serve.local import TritonServer

    class Ready(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args):
            pass

    http = ThreadingHTTPServer(("127.0.0.1", 0), Ready)
    threading.Thread(target=http.serve_forever, daemon=True).start()
    server = TritonServer(tmp_path)
    server.ports["http"] = http.server_port
    try:
        assert not server._ready(), "ready before the metrics port listens"
        with socket.create_server(("127.0.0.1", server.ports["metrics"])):
            assert server._ready()
    finally:
        http.shutdown()


def test_an_overdue_stale_stub_is_stopped_once(capsys):
    """Killed, a stub stays listed until it has exited and been reaped; the guard must not kill and log
    it again each second meanwhile (this child is never reaped while the guard looks)."""
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        guard = Guard("127.0.0.1:1", server_pid=os.getpid(), admin_key="k", stale_grace_s=0)
        guard.stale = {child.pid: time.monotonic() - 1}
        for _ in range(3):
            guard._stop_overdue({child.pid: spec.ENGINE_NAME})
        assert capsys.readouterr().out.count(f"stopped stub {child.pid}") == 1
        assert child.wait(timeout=10) == -signal.SIGKILL
    finally:
        child.kill()


def test_a_server_that_does_not_answer_is_not_ready_and_gets_no_reloads():
    """One failed health call (a timeout under load) says nothing of the stubs: no model is reloaded and
    the stubs set aside by an earlier reload stay set aside."""
    guard = Guard(f"127.0.0.1:{free_port()}", server_pid=os.getpid(), admin_key="k")
    guard.expected = {spec.PREPROCESS_NAME: 1, spec.ENGINE_NAME: 2, spec.DECODE_NAME: 1}
    guard.stale = {12345: time.monotonic()}
    reloads = []
    guard._reload = lambda model, stubs: reloads.append(model)
    health = guard.check()
    assert not health.ready and health.problems[0].startswith("tritonserver not ready")
    assert reloads == [] and guard.stale.keys() == {12345}


def test_after_stop_the_guard_says_shutting_down_whatever_a_look_finds():
    guard = Guard(f"127.0.0.1:{free_port()}", server_pid=os.getpid(), admin_key="k")
    guard.stop()
    assert guard.health.problems == ["shutting down"]
    assert guard.check().problems == ["shutting down"]


@pytest.mark.parametrize("ignores_sigterm", [False, True])
def test_the_whole_stop_fits_the_exit_timeout(capsys, ignores_sigterm):
    """Drain, then SIGTERM; a server still running at the limit (Triton waiting for a replaced copy
    after a self-heal) is killed, so the pod's grace period is not overrun."""
    from rtmo_triton.serve.cli import stop_server

    ignore = "signal.signal(signal.SIGTERM, signal.SIG_IGN); " if ignores_sigterm else ""
    child = subprocess.Popen([sys.executable, "-c", f"import signal, sys, time; {ignore}"
                              "print('up', flush=True); time.sleep(60)"], stdout=subprocess.PIPE)
    try:
        assert child.stdout.readline() == b"up\n"  # its handler is in place
        stop_server(child, signal.SIGTERM, metrics_url=f"http://127.0.0.1:{free_port()}/metrics", limit_s=0.5)
        expected = -signal.SIGKILL if ignores_sigterm else -signal.SIGTERM
        assert child.wait(timeout=10) == expected
        assert ("killed" in capsys.readouterr().out) == ignores_sigterm
    finally:
        child.kill()
        child.stdout.close()
