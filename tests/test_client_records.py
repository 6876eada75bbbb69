import json

import pytest

from rtmo_triton import spec
from rtmo_triton.client import People, keypoint_names, parse_outputs, people_record

from .client_fakes import batched_outputs


def test_record_shape_and_values():
    _, p = parse_outputs(batched_outputs([0, 2]))
    record = people_record(p, image="dir/a.jpg", size=(640, 480))
    assert list(record) == ["image", "width", "height", "people"]
    assert record["image"] == "dir/a.jpg" and (record["width"], record["height"]) == (640, 480)
    assert len(record["people"]) == 2
    first = record["people"][0]
    assert set(first) == {"box", "score", "keypoints"}
    assert first["box"] == [10.0, 0.0, 15.0, 5.0] and first["score"] == pytest.approx(0.9)
    assert [k["name"] for k in first["keypoints"]] == list(spec.COCO.names)
    assert first["keypoints"][3] == {"name": spec.COCO.names[3], "x": 100.0, "y": 3.0, "score": 0.1875}
    assert record["people"][1]["keypoints"][0]["x"] == 101.0
    assert json.loads(json.dumps(record)) == record  # plain Python types only


def test_scores_stay_ordered_best_first():
    (p,) = parse_outputs(batched_outputs([3]))
    scores = [q["score"] for q in people_record(p)["people"]]
    assert scores == sorted(scores, reverse=True)


def test_no_size_no_width_height():
    (p,) = parse_outputs(batched_outputs([0]))
    record = people_record(p, image="x.png")
    assert record == {"image": "x.png", "people": []}


def test_failed_image_reports_error_and_no_people():
    record = people_record(People.failure("unable to decode image"), image="bad.jpg")
    assert record["error"] == "unable to decode image" and record["people"] == []


def test_values_are_rounded_for_compact_files():
    (p,) = parse_outputs(batched_outputs([1]))
    p.keypoints[0, 0] = (1.234567, 2.345678)
    p.keypoint_scores[0, 0] = 0.123456
    kpt = people_record(p)["people"][0]["keypoints"][0]
    assert (kpt["x"], kpt["y"], kpt["score"]) == (1.23, 2.35, 0.1235)


@pytest.mark.parametrize("j", sorted(spec.KEYPOINT_SETS))
def test_names_follow_the_keypoint_count(j):
    assert keypoint_names(j) == spec.KEYPOINT_SETS[j].names
    (p,) = parse_outputs(batched_outputs([1], j=j))
    names = [k["name"] for k in people_record(p)["people"][0]["keypoints"]]
    assert names == list(spec.KEYPOINT_SETS[j].names)


def test_unknown_keypoint_count_gets_generic_names():
    assert keypoint_names(3) == ("kpt_0", "kpt_1", "kpt_2")
