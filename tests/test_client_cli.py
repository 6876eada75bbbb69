import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from tritonclient.utils import InferenceServerException

from rtmo_triton import spec
from rtmo_triton.client import cli, evaluate, exit_codes, transport, video
from rtmo_triton.serve.local import free_port

from .client_fakes import FakeResult

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = Path(sys.executable).parent / "rtmo-client"  # the console script, as users run it


class DecodingClient:
    """Like the ensemble: one centred person per decodable image, an error for anything else."""

    def __init__(self):
        self.batches = []

    def infer(self, model_name, inputs, outputs=None, **kwargs):
        self.batches.append(len(inputs))
        images = [cv2.imdecode(np.frombuffer(b, np.uint8), cv2.IMREAD_COLOR) for b in inputs]
        if any(i is None for i in images):
            raise InferenceServerException("unable to decode image", status="400")
        j, b = spec.NUM_KEYPOINTS, len(images)
        sizes = np.array([[i.shape[1], i.shape[0]] for i in images], np.float32)
        return FakeResult({
            "NUM_PEOPLE": np.ones((b, 1), np.int32),
            "BOXES": np.concatenate([np.ones((b, 2)), sizes - 2], 1)[:, None].astype(np.float32),
            "SCORES": np.full((b, 1), 0.9, np.float32),
            "KEYPOINTS": np.broadcast_to(sizes[:, None, None] / 2, (b, 1, j, 2)).astype(np.float32),
            "KEYPOINT_SCORES": np.full((b, 1, j), 0.9, np.float32),
        })

    def is_server_live(self):
        return True

    def is_model_ready(self, name):
        return True

    def get_model_config(self, name, as_json=False):
        return {"max_batch_size": 8}

    def close(self):
        pass


@pytest.fixture
def fake_server(monkeypatch):
    client = DecodingClient()
    monkeypatch.setattr(transport, "make_request", lambda module, images: (images, None))
    monkeypatch.setattr(cli, "connect", lambda *a, **k: transport.Client(client, "http"))
    return client


@pytest.fixture
def folder(tmp_path):
    root = tmp_path / "imgs"
    (root / "sub").mkdir(parents=True)
    cv2.imwrite(str(root / "a.png"), np.zeros((40, 60, 3), np.uint8))
    cv2.imwrite(str(root / "sub" / "b.jpg"), np.zeros((80, 30, 3), np.uint8))
    (root / "broken.jpg").write_bytes(b"not an image")
    return root


def run_cli(*args):
    return cli.main([str(a) for a in args])


def test_out_dir_gets_json_and_overlays_per_image(fake_server, folder, tmp_path, capsys):
    out = tmp_path / "out"
    assert run_cli(folder, "--out-dir", out, "--overlay") == exit_codes.SOME_FAILED
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*")) == [
        "a.json", "a_overlay.png", "broken.json", "sub", "sub/b.json", "sub/b_overlay.png"]
    a = json.loads((out / "a.json").read_text())
    assert (a["width"], a["height"], len(a["people"])) == (60, 40, 1)
    assert a["people"][0]["keypoints"][0] == {"name": "nose", "x": 30.0, "y": 20.0, "score": 0.9}
    overlay = cv2.imread(str(out / "sub" / "b_overlay.png"))
    assert overlay.shape == (80, 30, 3) and overlay[40, 15].any()
    assert "unable to decode image" in json.loads((out / "broken.json").read_text())["error"]
    lines = capsys.readouterr().out.splitlines()
    assert any("a.png: 1 people" in line and " ms" in line for line in lines)
    assert any("broken.jpg: FAILED: unable to decode image" in line for line in lines)
    assert lines[-1].startswith("3 image(s), 2 people, 1 failed")


def test_json_to_stdout_is_pure_json(fake_server, folder, capsys):
    assert run_cli(folder / "a.png", folder / "sub", "--json", "-") == exit_codes.OK
    captured = capsys.readouterr()
    records = json.loads(captured.out)
    assert [Path(r["image"]).name for r in records] == ["a.png", "b.jpg"]
    assert "2 image(s)" in captured.err


def test_json_file_and_batch_size(fake_server, folder, tmp_path):
    target = tmp_path / "all.json"
    assert run_cli(folder, "--json", target, "--batch-size", "2") == exit_codes.SOME_FAILED
    assert len(json.loads(target.read_text())) == 3
    assert fake_server.batches[0] == 2


def test_batch_size_is_capped_at_the_model_max(fake_server, folder, capsys):
    run_cli(folder / "a.png", "--batch-size", "64")
    assert "capped at the model's max_batch_size 8" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--overlay"], "--overlay needs --out-dir"),
        (["--out-dir", "o", "--json", "x.json"], "not allowed with"),
        (["--protocol", "ws"], "invalid choice"),
        (["--kpt-thr", "1.5"], "within [0, 1]"),
        (["--batch-size", "0"], "must be >= 1"),
        (["--concurrency", "-2"], "must be >= 1"),
        (["--timeout", "0"], "must be > 0"),
        (["--url", "localhost:notaport"], "not a server address: 'localhost:notaport'"),
        (["--url", "http://"], "not a server address: ''"),
        (["--url", "host:70000"], "port 1-65535"),
        (["--json", "/nonexistent/all.json"], "--json /nonexistent/all.json: its folder does not exist"),
    ],
)
def test_argument_errors_exit_2(folder, capsys, args, message):
    with pytest.raises(SystemExit) as exc:
        run_cli(folder, *args)
    assert exc.value.code == exit_codes.USAGE
    assert message in capsys.readouterr().err


def test_missing_path_and_empty_folder_exit_2(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        run_cli(tmp_path / "missing.jpg")
    assert exc.value.code == 2 and "no such file or folder" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        run_cli(tmp_path)
    assert exc.value.code == 2 and "no images found" in capsys.readouterr().err


def test_no_path_exits_2(capsys):
    with pytest.raises(SystemExit) as exc:
        run_cli()
    assert exc.value.code == 2


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_unreachable_server_exits_3_with_a_clear_message(folder, capsys, protocol):
    url = f"127.0.0.1:{free_port()}"
    code = run_cli(folder / "a.png", "--url", url, "--protocol", protocol, "--timeout", "5")
    assert code == exit_codes.SERVER
    err = capsys.readouterr().err
    assert f"error: {url}: cannot reach Triton over {protocol}" in err


def test_script_runs_from_a_checkout(tmp_path):
    help_text = subprocess.run([SCRIPT, "--help"], capture_output=True, text=True,
                               cwd=tmp_path, check=True).stdout
    for option in ("--url", "--protocol", "--model", "--out-dir", "--json", "--overlay", "--kpt-thr",
                   "--batch-size", "--concurrency"):
        assert option in help_text
    bad = subprocess.run([SCRIPT, "--overlay", str(tmp_path)], capture_output=True,
                         text=True, cwd=tmp_path)
    assert bad.returncode == 2 and "--overlay needs --out-dir" in bad.stderr


def test_the_client_is_a_console_script_like_its_siblings():
    """``rtmo-client`` beside ``rtmo-eval`` and ``rtmo-video``: installed by the package, same parser."""
    scripts = Path(sys.executable).parent
    for name in ("rtmo-client", "rtmo-eval", "rtmo-video"):
        assert (scripts / name).is_file(), f"{name} is not installed (make setup)"
    done = subprocess.run([str(scripts / "rtmo-client"), "--help"], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0 and done.stdout.startswith("usage: rtmo-client"), done.stderr


def test_the_tools_share_their_server_options_with_one_default_each():
    """rtmo-client, rtmo-eval and rtmo-video: same names, same meaning (request timeout), same defaults."""
    shared = ("url", "protocol", "model", "timeout", "wait")
    defaults = []
    for parser in (cli.build_parser(), evaluate.build_parser(), video.build_parser()):
        actions = {a.dest: a for a in parser._actions}
        assert "concurrency" in actions and "in_flight" not in actions and "request_timeout" not in actions
        defaults.append({name: actions[name].default for name in shared})
    assert defaults[0] == defaults[1] == defaults[2]
    assert defaults[0]["protocol"] == "http" and defaults[0]["timeout"] == transport.DEFAULT_TIMEOUT_S
    assert {a.dest for a in video.build_parser()._actions} >= {"source_timeout"}
