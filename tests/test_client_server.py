"""The client against a real tritonserver (the pytriton wheel's) serving a stand-in `rtmo`.

The stand-in follows the ensemble's public contract (names from spec, BYTES
[B, 1] in, padded outputs, an error for undecodable images) with people that
depend only on the image, so both protocols' wire formats and the error
isolation are checked without the real model.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from rtmo_triton import spec
from rtmo_triton.client import ModelNotReady, connect, infer, infer_images
from rtmo_triton.serve.local import TritonServer
from rtmo_triton.serve.tritonserver import command

from .served import require_server

pytestmark = pytest.mark.server

MODEL = '''
import cv2
import numpy as np
import triton_python_backend_utils as pb_utils

NAMES = {names!r}
J = {j}


def people(img):
    """Fill value // 50 people; person k's box is [k, 2k, w - k, h - 2k]."""
    h, w = img.shape[:2]
    k = np.arange(int(img[0, 0, 0]) // 50, dtype=np.float32)[:, None]
    joints = np.arange(J, dtype=np.float32)
    kpts = np.stack(np.broadcast_arrays(joints * w / J, k + joints), -1)
    return (np.concatenate([k, 2 * k, w - k, h - 2 * k], 1), 0.9 - 0.1 * k[:, 0], kpts,
            np.broadcast_to(joints / J, (len(k), J)))


class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for request in requests:
            rows = pb_utils.get_input_tensor_by_name(request, {input!r}).as_numpy()
            imgs = [cv2.imdecode(np.frombuffer(r[0], np.uint8), cv2.IMREAD_COLOR) for r in rows]
            if any(i is None for i in imgs):
                error = pb_utils.TritonError("unable to decode image")
                responses.append(pb_utils.InferenceResponse(error=error))
                continue
            found = [people(i) for i in imgs]
            b, n = len(imgs), max(len(f[1]) for f in found)
            out = [np.zeros((b, 1), np.int32), np.zeros((b, n, 4), np.float32), np.zeros((b, n), np.float32),
                   np.zeros((b, n, J, 2), np.float32), np.zeros((b, n, J), np.float32)]
            for i, f in enumerate(found):
                out[0][i, 0] = len(f[1])
                for o, v in zip(out[1:], f):
                    o[i, :len(f[1])] = v
            responses.append(pb_utils.InferenceResponse([pb_utils.Tensor(m, o) for m, o in zip(NAMES, out)]))
        return responses
'''

CONFIG = '''
name: "{name}"
backend: "python"
max_batch_size: 8
input [ {{ name: "{input}" data_type: TYPE_STRING dims: [ 1 ] }} ]
output [
  {{ name: "{o[0]}" data_type: TYPE_INT32 dims: [ 1 ] }},
  {{ name: "{o[1]}" data_type: TYPE_FP32 dims: [ -1, 4 ] }},
  {{ name: "{o[2]}" data_type: TYPE_FP32 dims: [ -1 ] }},
  {{ name: "{o[3]}" data_type: TYPE_FP32 dims: [ -1, {j}, 2 ] }},
  {{ name: "{o[4]}" data_type: TYPE_FP32 dims: [ -1, {j} ] }}
]
instance_group [ {{ kind: KIND_CPU count: 1 }} ]
'''


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    require_server()
    root = tmp_path_factory.mktemp("triton")
    model = root / "models" / spec.ENSEMBLE_NAME
    (model / "1").mkdir(parents=True)
    fmt = {"name": spec.ENSEMBLE_NAME, "input": spec.ENSEMBLE_INPUT, "o": spec.ENSEMBLE_OUTPUTS,
           "names": spec.ENSEMBLE_OUTPUTS, "j": spec.NUM_KEYPOINTS}
    (model / "config.pbtxt").write_text(CONFIG.format(**fmt))
    (model / "1" / "model.py").write_text(MODEL.format(**fmt))
    argv, env = command([])
    # the stand-in carries no packages: it imports numpy from this test's virtualenv
    env = dict(env, VIRTUAL_ENV=sys.prefix, PATH=f"{Path(sys.executable).parent}:{env['PATH']}")
    with TritonServer(root / "models", log_path=root / "server.log", launch=(argv, env)) as triton:
        yield {"http": triton.http_url, "grpc": triton.grpc_url}


def png(fill: int, w: int, h: int) -> bytes:
    return cv2.imencode(".png", np.full((h, w, 3), fill, np.uint8))[1].tobytes()


def expected_boxes(fill: int, w: int, h: int) -> np.ndarray:
    k = np.arange(fill // 50, dtype=np.float32)[:, None]
    return np.concatenate([k, 2 * k, w - k, h - 2 * k], 1)


FILLS = [0, 120, 255, 60, 200, 10, 150, 99, 250, 51]  # // 50 people each
IMAGES = [(fill, 40 + 7 * i, 30 + 5 * i) for i, fill in enumerate(FILLS)]


@pytest.mark.parametrize("protocol", ["http", "grpc"])
@pytest.mark.parametrize("concurrency", [1, 3])
def test_many_images_in_batches(server, protocol, concurrency):
    client = connect(server[protocol], protocol, concurrency=concurrency)
    try:
        people = infer_images(client, [png(*i) for i in IMAGES], concurrency=concurrency)
    finally:
        client.close()
    assert [p.batch for p in people] == [8] * 8 + [2] * 2  # max_batch_size read from the config
    for p, (fill, w, h) in zip(people, IMAGES, strict=True):
        assert p.ok, p.error
        np.testing.assert_allclose(p.boxes, expected_boxes(fill, w, h))
        assert p.keypoints.shape == (fill // 50, spec.NUM_KEYPOINTS, 2)
        assert (np.diff(p.scores) < 0).all()
        assert p.latency_ms > 0


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_an_undecodable_image_fails_alone(server, protocol):
    images = [png(100, 20, 20), b"definitely not an image", png(200, 30, 10)]
    people = infer(server[protocol], protocol, images)
    assert [p.num_people for p in people] == [2, 0, 4]
    assert people[0].ok and people[2].ok
    assert not people[1].ok and "unable to decode image" in people[1].error


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_readiness(server, protocol):
    client = connect(server[protocol], protocol)
    try:
        assert client.ready().max_batch_size == 8
        with pytest.raises(ModelNotReady, match=f"ready models: {spec.ENSEMBLE_NAME}"):
            client.ready("no_such_model")
    finally:
        client.close()


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_cli_end_to_end(server, protocol, tmp_path):
    (tmp_path / "in" / "sub").mkdir(parents=True)
    (tmp_path / "in" / "a.png").write_bytes(png(120, 64, 48))
    white = cv2.imencode(".jpg", np.full((20, 30, 3), 255, np.uint8))[1]
    (tmp_path / "in" / "sub" / "a.jpg").write_bytes(white.tobytes())
    script = Path(sys.executable).parent / "rtmo-client"  # the console script, as users run it
    run = subprocess.run(
        [str(script), "--url", server[protocol], "--protocol", protocol, str(tmp_path / "in"),
         "--out-dir", str(tmp_path / "out"), "--overlay", "--concurrency", "2"],
        capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr + run.stdout
    a = json.loads((tmp_path / "out" / "a.json").read_text())
    assert (a["width"], a["height"], len(a["people"])) == (64, 48, 2)
    assert len(json.loads((tmp_path / "out" / "sub" / "a.json").read_text())["people"]) == 5
    assert cv2.imread(str(tmp_path / "out" / "a_overlay.png")).shape == (48, 64, 3)
    assert "2 image(s), 7 people, 0 failed" in run.stdout
