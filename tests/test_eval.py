"""rtmo-eval: scores as mmpose scores RTMO (xtcocotools), and runs end to end against a real server.

Expected figures come from the libraries themselves: ground truth fed back
must score 1.0, and a perturbed copy must score what pycocotools (an
independent COCOeval, whose default sigmas are COCO's) says.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from rtmo_triton import spec
from rtmo_triton.client import People, connect, exit_codes
from rtmo_triton.client.evaluate import (
    BENCHMARKS,
    EvalError,
    Progress,
    coco_results,
    load_annotation,
    main,
    progress_path,
    score,
)
from rtmo_triton.client.transport import served_parameters
from rtmo_triton.serve.local import free_port

from .golden import COCO_ANNOTATIONS
from .served import get_json

COCO_IMAGES = COCO_ANNOTATIONS.parent


def ground_truth_people(data: dict, image_id: int, rng=None, noise_px: float = 0.0) -> People:
    """The image's labelled people as predictions; with ``rng``, random box scores and keypoints
    moved by Gaussian noise of a random scale in [0, noise_px) per person."""
    anns = [a for a in data["annotations"] if a["image_id"] == image_id and a["num_keypoints"] > 0]
    j = len(data["categories"][0]["keypoints"])
    kpts = np.array([a["keypoints"] for a in anns], np.float32).reshape(len(anns), j, 3)
    boxes = np.array([a["bbox"] for a in anns], np.float32).reshape(len(anns), 4)
    boxes[:, 2:] += boxes[:, :2]
    xy = kpts[..., :2]
    scores = np.ones(len(anns))
    if rng is not None:
        scale = rng.uniform(0, noise_px, len(anns))[:, None, None]
        xy = (xy + rng.normal(0, 1, xy.shape) * scale).astype(np.float32)
        scores = rng.uniform(0.2, 1, len(anns))
    return People(boxes, scores.astype(np.float32), xy, np.ones((len(anns), j), np.float32))


def write_results(path: Path, data: dict, people_of) -> Path:
    results = [r for im in data["images"] for r in coco_results(people_of(im["id"]), im["id"])]
    path.write_text(json.dumps(results))
    return path


def crowdpose_annotation(tmp_path: Path) -> Path:
    """Three images of three people each, crowdIndex easy / medium / hard, no areas (as CrowdPose)."""
    rng = np.random.default_rng(1)
    j = spec.CROWDPOSE.num_keypoints
    images, anns = [], []
    for image_id, crowd in zip((1, 2, 3), (0.1, 0.5, 0.9)):
        images.append({"id": image_id, "file_name": f"{image_id}.jpg", "width": 640, "height": 480,
                       "crowdIndex": crowd})
        for _ in range(3):
            x0, y0 = rng.uniform(0, 400), rng.uniform(0, 250)
            xy = np.stack([rng.uniform(x0, x0 + 150, j), rng.uniform(y0, y0 + 200, j)], 1)
            vis = np.full(j, 2)
            kpts = np.concatenate([xy, vis[:, None]], 1).round(1)
            anns.append({"id": len(anns) + 1, "image_id": image_id, "category_id": 1, "iscrowd": 0,
                         "num_keypoints": j, "keypoints": kpts.ravel().tolist(),
                         "bbox": [float(xy[:, 0].min()), float(xy[:, 1].min()),
                                  float(np.ptp(xy[:, 0])), float(np.ptp(xy[:, 1]))]})
    path = tmp_path / "crowdpose.json"
    path.write_text(json.dumps({"images": images, "annotations": anns, "categories": [
        {"id": 1, "name": "person", "keypoints": list(spec.CROWDPOSE.names)}]}))
    return path


def test_ground_truth_scores_one(tmp_path, capsys):
    data = json.loads(COCO_ANNOTATIONS.read_text())
    results = write_results(tmp_path / "gt.json", data, lambda i: ground_truth_people(data, i))
    first = next(a for a in data["annotations"] if a["num_keypoints"] > 0)
    assert json.loads(results.read_text())[0]["bbox"] == pytest.approx(first["bbox"], abs=0.01)
    stats = score(load_annotation(COCO_ANNOTATIONS), results)
    assert stats == dict.fromkeys(BENCHMARKS["coco"].stat_names, 1.0)
    table = capsys.readouterr().out
    assert "Average Precision  (AP) @[ IoU=0.50:0.95 | area=   all | maxDets= 20 ] =  1.000" in table


def test_perturbed_ground_truth_scores_what_pycocotools_says(tmp_path):
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    data = json.loads(COCO_ANNOTATIONS.read_text())
    rng = np.random.default_rng(0)
    results = write_results(tmp_path / "noisy.json", data,
                            lambda i: ground_truth_people(data, i, rng, noise_px=12.0))
    stats = score(load_annotation(COCO_ANNOTATIONS), results)
    gt = COCO(str(COCO_ANNOTATIONS))
    reference = COCOeval(gt, gt.loadRes(str(results)), "keypoints")
    reference.evaluate()
    reference.accumulate()
    reference.summarize()
    assert 0.1 < stats["AP"] < 0.9
    np.testing.assert_allclose(BENCHMARKS["coco"].sigmas, reference.params.kpt_oks_sigmas, rtol=1e-12)
    np.testing.assert_allclose(list(stats.values()), reference.stats, atol=1e-12)


def test_crowdpose_mode_scores_easy_medium_hard(tmp_path):
    path = crowdpose_annotation(tmp_path)
    annotation = load_annotation(path)
    assert annotation.benchmark.iou_type == "keypoints_crowd"
    data = json.loads(path.read_text())
    exact = score(annotation, write_results(tmp_path / "gt.json", data,
                                            lambda i: ground_truth_people(data, i)))
    assert exact == dict.fromkeys(BENCHMARKS["crowdpose"].stat_names, 1.0)
    rng = np.random.default_rng(2)
    noisy = score(annotation, write_results(tmp_path / "hard.json", data, lambda i: ground_truth_people(
        data, i, rng, noise_px=20.0 if i == 3 else 0.0)))
    assert noisy["AP(E)"] == noisy["AP(M)"] == 1.0
    assert noisy["AP(H)"] < 1.0 and noisy["AP"] < 1.0


def test_crowdpose_annotation_needs_crowd_index(tmp_path):
    path = crowdpose_annotation(tmp_path)
    data = json.loads(path.read_text())
    del data["images"][0]["crowdIndex"]
    path.write_text(json.dumps(data))
    with pytest.raises(EvalError, match="crowdIndex"):
        load_annotation(path)


def test_bad_inputs_are_refused_before_any_request(tmp_path, capsys):
    assert main(["--ann", str(tmp_path / "none.json"), "--images", str(COCO_IMAGES)]) == exit_codes.USAGE
    assert "annotation file not found" in capsys.readouterr().err
    data = json.loads(COCO_ANNOTATIONS.read_text())
    data["images"][1]["file_name"] = "not_there.jpg"
    (ann := tmp_path / "ann.json").write_text(json.dumps(data))
    assert main(["--ann", str(ann), "--images", str(COCO_IMAGES)]) == exit_codes.USAGE
    assert "1 of 4 images are not in" in (err := capsys.readouterr().err) and "not_there.jpg" in err
    (foreign := tmp_path / "foreign.json").write_text(json.dumps([{"image_id": 1, "category_id": 1,
                                                                    "keypoints": [0] * 51, "score": 1}]))
    assert main(["--ann", str(COCO_ANNOTATIONS), "--score", str(foreign)]) == exit_codes.USAGE
    assert "not in" in capsys.readouterr().err


def test_unreachable_server_is_reported(tmp_path, capsys):
    url = f"127.0.0.1:{free_port()}"
    code = main(["--ann", str(COCO_ANNOTATIONS), "--images", str(COCO_IMAGES), "--url", url,
                 "--out", str(tmp_path / "r.json")])
    assert code == exit_codes.SERVER and "cannot reach Triton" in capsys.readouterr().err


@pytest.fixture(scope="module")
def server(default_k_server):
    return default_k_server


def served_images(server) -> int:
    stats = get_json(f"http://{server.http_url}/v2/models/{spec.ENSEMBLE_NAME}/stats")
    return int(stats["model_stats"][0]["inference_count"])


@pytest.mark.server
def test_fixture_images_through_the_server(server, tmp_path, capsys):
    """Random weights: the AP means nothing, the file and the table must be right."""
    out = tmp_path / "results.json"
    code = main(["--ann", str(COCO_ANNOTATIONS), "--images", str(COCO_IMAGES), "--url", server.http_url,
                 "--out", str(out)])
    printed = capsys.readouterr()
    assert code == exit_codes.OK, printed.err
    image_ids = {i["id"] for i in json.loads(COCO_ANNOTATIONS.read_text())["images"]}
    results = json.loads(out.read_text())
    assert results and {r["image_id"] for r in results} <= image_ids
    for r in results:
        assert r["category_id"] == 1 and len(r["keypoints"]) == 3 * spec.COCO.num_keypoints
        assert len(r["bbox"]) == 4 and 0 < r["score"] <= 1
    assert not progress_path(out).exists() and not out.with_name(out.name + ".partial").exists()
    assert "Average Recall     (AR) @[ IoU=0.50:0.95 | area= large" in printed.out
    assert "4 images, 0 already done" in printed.err
    print(printed.out.splitlines()[-1])


@pytest.mark.server
def test_a_rerun_sends_only_the_images_not_yet_done(server, tmp_path, capsys):
    annotation = load_annotation(COCO_ANNOTATIONS)
    client = connect(server.grpc_url, "grpc")
    try:
        parameters = served_parameters(client.config())
    finally:
        client.close()
    out = tmp_path / "results.json"
    progress = Progress(progress_path(out), {
        "annotation": str(COCO_ANNOTATIONS.resolve()), "model": spec.ENSEMBLE_NAME, "parameters": parameters})
    done = [i["id"] for i in annotation.images[:2]]
    for image_id in done:
        progress.add(image_id, [])  # "no people": a resumed run must keep it, not resend the image
    with progress.path.open("a") as f:
        f.write('{"image_id": 19')  # what a killed run leaves behind
    before = served_images(server)
    code = main(["--ann", str(COCO_ANNOTATIONS), "--images", str(COCO_IMAGES), "--url", server.grpc_url,
                 "--protocol", "grpc", "--out", str(out)])
    assert code == exit_codes.OK, capsys.readouterr().err
    assert served_images(server) - before == 2
    assert not {r["image_id"] for r in json.loads(out.read_text())} & set(done)


@pytest.mark.server
def test_served_model_must_predict_the_annotations_keypoints(server, tmp_path, capsys):
    path = crowdpose_annotation(tmp_path)
    data = json.loads(path.read_text())
    for image, name in zip(data["images"], sorted(p.name for p in COCO_IMAGES.glob("*.jpg"))):
        image["file_name"] = name
    path.write_text(json.dumps(data))
    code = main(["--ann", str(path), "--images", str(COCO_IMAGES), "--url", server.http_url,
                 "--out", str(tmp_path / "r.json")])
    assert code == exit_codes.USAGE
    assert "predicts 17 coco keypoints, the annotation file has 14 (crowdpose)" in capsys.readouterr().err


def test_progress_resumes_and_refuses_a_file_it_did_not_make(tmp_path):
    path, header = tmp_path / "r.json.progress", {"annotation": "a.json", "model": "rtmo", "parameters": {}}
    Progress(path, header).add(7, [])
    with path.open("a") as f:
        f.write('{"image_id": 8')  # the torn last line of a killed run
    assert Progress(path, header).done == {7: []}
    assert [p.name for p in tmp_path.iterdir()] == [path.name], "the rewrite leaves nothing beside it"
    with pytest.raises(EvalError, match="another annotation file or served model"):
        Progress(path, {**header, "model": "other"})
    path.write_text('{"annotation": "a.js')  # a header torn by a kill during the rewrite of an older run
    with pytest.raises(EvalError, match="or is not ours; delete it to start over"):
        Progress(path, header)
