"""The model repository built by `make build-engines`, served by a real tritonserver, over HTTP and gRPC.

The served people must equal mmpose's final predictions on every fixture
image (tolerances of the model issue), one image per request and several
per request; concurrent requests must be batched by the server; bad images
must fail alone. All of it for both preprocess forms (``PREPROCESS=cpu|gpu``).
"""
from __future__ import annotations

import time

import cv2
import numpy as np
import pytest

from perf.triton_metrics import by_model, scrape
from rtmo_triton import spec
from rtmo_triton.client import connect, infer, parse_outputs

from .golden import IMAGE_OF, IMAGES, OUTPUT_FILES, assert_people_match, fixture_ids, load_output
from .served import get_json, serve_fixture_repository
from .test_image_io import png_header

pytestmark = pytest.mark.server
PROTOCOLS = ("http", "grpc")


@pytest.fixture(scope="module", params=["cpu", "gpu"], ids=lambda form: f"preprocess-{form}")
def server(request, tmp_path_factory):
    """Each test runs against both forms of the preprocess and decode models: the numpy/OpenCV ones and
    the torch ones of ``PREPROCESS=gpu`` (here on the CPU: the same code a GPU host runs on CUDA).

    Module scope, one form at a time: pytest stops the first before it starts the second. Keeping every
    cell, a stub holds gigabytes after the 8-image requests; two such servers beside the session's
    shared one ran a CI machine out of memory."""
    form, _, decoder = request.param.partition("-")
    yield from serve_fixture_repository(tmp_path_factory, f"reference-{request.param}", "--preprocess", form,
                                        *(("--jpeg-decoder", decoder) if decoder else ()))


@pytest.fixture(scope="module")
def refs():
    return [load_output(p) for p in OUTPUT_FILES]


@pytest.fixture(scope="module")
def images(refs):
    """Fixture images, losslessly encoded: the server must decode exactly the reference's pixels."""
    return [cv2.imencode(".png", r["img_bgr"])[1].tobytes() for r in refs]


def check(people, refs, paths=OUTPUT_FILES) -> None:
    for p, ref, path in zip(people, refs, paths, strict=True):
        assert p.ok, f"{path.stem}: {p.error}"
        err = assert_people_match(p.boxes, p.scores, p.keypoints, p.keypoint_scores, ref)
        assert np.all(np.diff(p.scores) <= 0), "people not in descending score"
        print(f"{path.stem:38s} people {p.num_people:3d}  box max {err['box_max']:.4f} px  "
              f"kpt p99 {err['kpt_p99']:.4f} px")


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_served_people_equal_the_reference_one_image_per_request(server, refs, images, protocol):
    client = connect(server.url(protocol), protocol, concurrency=2)
    try:
        outcomes = client.infer([[i] for i in images], concurrency=2)
    finally:
        client.close()
    people = []
    for outcome in outcomes:
        assert outcome.error is None, outcome.error
        people += parse_outputs(outcome.outputs)
    check(people, refs)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_multi_image_request_pads_past_each_images_people(server, refs, images, protocol):
    client = connect(server.url(protocol), protocol)
    try:
        [outcome] = client.infer([images])  # all 8 in one request
    finally:
        client.close()
    assert outcome.error is None, outcome.error
    out = outcome.outputs
    counts = out["NUM_PEOPLE"][:, 0]
    assert len(counts) == len(images) and len(set(counts.tolist())) > 1
    for i, n in enumerate(counts):
        for name in spec.ENSEMBLE_OUTPUTS[1:]:
            assert not out[name][i, n:].any(), f"{name} row {i} not zero past its {n} people"
    check(parse_outputs(out), refs)


def test_keypoint_names_and_skeleton_are_discoverable(server):
    config = get_json(f"http://{server.http_url}/v2/models/{spec.ENSEMBLE_NAME}/config")
    params = {k: v["string_value"] for k, v in config["parameters"].items()}
    assert params["keypoint_names"].split(",") == list(spec.COCO.names)
    assert params["skeleton"].split(",") == [f"{a}-{b}" for a, b in spec.COCO.skeleton]
    assert params["random_weights"] == "false" and params["checkpoint"].endswith(".pth")
    assert config["max_batch_size"] >= 8


def model_stats(server, model: str) -> dict:
    stats = get_json(f"http://{server.http_url}/v2/models/{model}/stats")["model_stats"][0]
    return {"inferences": int(stats["inference_count"]), "executions": int(stats["execution_count"]),
            "batch_sizes": sorted(int(b["batch_size"]) for b in stats["batch_stats"])}


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_concurrent_requests_are_batched(server, images, protocol):
    before = model_stats(server, spec.ENGINE_NAME)
    client = connect(server.url(protocol), protocol, concurrency=8)
    try:
        outcomes = client.infer([[images[i % 8]] for i in range(24)], concurrency=8)
    finally:
        client.close()
    assert all(o.error is None for o in outcomes)
    # a model's statistics are recorded just after it responds: the last batch's may trail the answers
    deadline = time.monotonic() + 5
    while (after := model_stats(server, spec.ENGINE_NAME))["inferences"] - before["inferences"] < 24:
        if time.monotonic() > deadline:
            break
        time.sleep(0.05)
    inferences = after["inferences"] - before["inferences"]
    executions = after["executions"] - before["executions"]
    print(f"{protocol}: {inferences} images in {executions} engine executions; "
          f"batch sizes seen {after['batch_sizes']}")
    assert inferences == 24
    assert executions < inferences, "no engine execution held more than one request"
    assert max(after["batch_sizes"]) > 1


def corrupt(data: bytes, start: int, length: int = 64) -> bytes:
    """``data`` with ``length`` bytes from ``start`` zeroed: the header survives, the pixels do not."""
    return data[:start] + bytes(length) + data[start + length:]


BAD = {
    "garbage (Pillow)": (b"definitely not an image", "not a decodable image"),
    "empty": (b"", "empty image"),
    "too large": (png_header(60_000, 60_000), "exceeds the limit"),
    "truncated": (None, "could not be decoded|not a decodable image"),
    "corrupt PNG data (OpenCV)": (None, "could not be decoded"),
    "corrupt WebP data (OpenCV)": (None, "could not be decoded"),
    "wider than libpng allows (OpenCV)": (png_header(2_000_000, 2), "could not be decoded"),
}
"""Each fails in another decoding library, after the header checks where the name says so."""


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_bad_images_fail_alone(server, refs, images, protocol):
    bad = dict(BAD)
    bad["truncated"] = (images[0][: len(images[0]) // 2], bad["truncated"][1])
    png = images[1]
    webp = cv2.imencode(".webp", refs[0]["img_bgr"])[1].tobytes()
    for name, data in (("corrupt PNG data (OpenCV)", corrupt(png, png.find(b"IDAT") + 8)),
                       ("corrupt WebP data (OpenCV)", corrupt(webp, 40, len(webp) - 40))):
        bad[name] = (data, bad[name][1])
    requests, expect = [], []
    for i, (data, message) in enumerate(bad.values()):
        requests += [[images[i % len(images)]], [data]]
        expect += [i % len(images), message]
    before = model_stats(server, spec.PREPROCESS_NAME)
    client = connect(server.url(protocol), protocol, concurrency=len(requests))
    try:
        outcomes = client.infer(requests, concurrency=len(requests), retries=0)
    finally:
        client.close()
    after = model_stats(server, spec.PREPROCESS_NAME)
    assert after["executions"] - before["executions"] < len(requests), "no bad image shared a batch"
    for outcome, want in zip(outcomes, expect, strict=True):
        if isinstance(want, int):
            assert outcome.error is None, f"a good image failed beside a bad one: {outcome.error}"
            check(parse_outputs(outcome.outputs), [refs[want]], [OUTPUT_FILES[want]])
        else:
            assert outcome.error is not None
            assert any(m in str(outcome.error) for m in want.split("|")), str(outcome.error)
            status = str(outcome.error.status())
            assert status in ("400", "StatusCode.INVALID_ARGUMENT"), f"a bad image is the client's: {status}"
    assert server.process.poll() is None
    assert infer(server.url(protocol), protocol, images[:1])[0].ok, "server unusable after bad inputs"


def test_grayscale_jpeg_is_served(server, refs):
    gray = cv2.cvtColor(refs[0]["img_bgr"], cv2.COLOR_BGR2GRAY)
    [people] = infer(server.http_url, "http", [cv2.imencode(".jpg", gray)[1].tobytes()])
    assert people.ok and people.keypoints.shape[1:] == (17, 2)


def host_decodes(server) -> float:
    values = by_model(scrape(server.metrics_url), [spec.HOST_DECODES_METRIC], model=spec.PREPROCESS_NAME)
    assert values, f"no {spec.HOST_DECODES_METRIC} on /metrics"
    return sum(values.values())


@pytest.mark.parametrize("server", ["gpu"], indirect=True, ids=["preprocess-gpu"])
def test_the_torch_preprocess_counts_its_host_decodes_on_metrics(server, images):
    """On a GPU host the share of images that miss the GPU decoder; here, without one, every image."""
    before = host_decodes(server)
    assert all(people.ok for people in infer(server.http_url, "http", images[:3]))
    assert host_decodes(server) - before == 3


@pytest.mark.parametrize("server", ["gpu-nvimgcodec"], indirect=True, ids=["preprocess-gpu-nvimgcodec"])
def test_nvimgcodec_serves_the_fixture_jpegs_and_a_corrupt_one_fails_alone(server, refs):
    """``JPEG_DECODER=nvimgcodec`` (its libjpeg-turbo back end here): the photos mmpose decoded, sent as
    their own JPEG files in one request, give its people; a corrupt stream in the request beside them
    fails with the CPU path's error."""
    ids = fixture_ids()
    jpegs = [k for k, i in enumerate(ids) if IMAGE_OF[i].endswith(".jpg")]
    files = [(IMAGES / IMAGE_OF[ids[k]]).read_bytes() for k in jpegs]
    before = host_decodes(server)
    client = connect(server.grpc_url, "grpc", concurrency=2)
    try:
        good, bad = client.infer([files, [files[0][:-2000] + bytes(200)]], concurrency=2, retries=0)
    finally:
        client.close()
    assert good.error is None, good.error
    check(parse_outputs(good.outputs), [refs[k] for k in jpegs], [OUTPUT_FILES[k] for k in jpegs])
    assert bad.error is not None and "could not be decoded" in str(bad.error)
    assert host_decodes(server) - before == len(files) + 1  # a CPU device: all of them on the host
