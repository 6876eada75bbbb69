import numpy as np
import pytest

from rtmo_triton import spec
from rtmo_triton.client import People, parse_outputs

from .client_fakes import batched_outputs, person


def test_padding_rows_are_stripped_per_image():
    outputs = batched_outputs([2, 0, 3], pad_value=7.0)  # non-zero padding must not leak either
    people = parse_outputs(outputs, latency_ms=12.5)
    assert [p.num_people for p in people] == [2, 0, 3]
    for i, p in enumerate(people):
        assert p.ok and p.latency_ms == 12.5 and p.batch == 3
        assert p.boxes.shape == (p.num_people, 4)
        assert p.keypoints.shape == (p.num_people, spec.NUM_KEYPOINTS, 2)
        assert p.keypoint_scores.shape == (p.num_people, spec.NUM_KEYPOINTS)
        for k in range(p.num_people):
            box, score, kpts, kscores = person(i, k, spec.NUM_KEYPOINTS)
            np.testing.assert_allclose(p.boxes[k], box)
            assert p.scores[k] == pytest.approx(score)
            np.testing.assert_allclose(p.keypoints[k], kpts)
            np.testing.assert_allclose(p.keypoint_scores[k], kscores)
        assert not (p.scores == 7.0).any()


def test_no_people_anywhere_gives_empty_arrays():
    people = parse_outputs(batched_outputs([0, 0]))
    assert len(people) == 2
    for p in people:
        assert p.num_people == 0 and p.boxes.shape == (0, 4)
        assert p.keypoints.shape == (0, spec.NUM_KEYPOINTS, 2) and p.num_keypoints == spec.NUM_KEYPOINTS


def test_crowdpose_keypoint_count_is_kept():
    (p,) = parse_outputs(batched_outputs([1], j=14))
    assert p.num_keypoints == 14 and p.keypoints.shape == (1, 14, 2)


def test_results_do_not_alias_the_response_buffers():
    outputs = batched_outputs([1])
    (p,) = parse_outputs(outputs)
    outputs["BOXES"][:] = -1
    assert (p.boxes >= 0).all() and p.boxes.dtype == np.float32


def test_num_people_as_flat_vector_is_accepted():
    outputs = batched_outputs([1, 2])
    outputs["NUM_PEOPLE"] = outputs["NUM_PEOPLE"][:, 0]
    assert [p.num_people for p in parse_outputs(outputs)] == [1, 2]


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda o: o.pop("SCORES"), "lacks output"),
        (lambda o: o.__setitem__("NUM_PEOPLE", np.array([[3], [0]], np.int32)), "outside"),
        (lambda o: o.__setitem__("NUM_PEOPLE", np.array([[-1], [0]], np.int32)), "outside"),
        (lambda o: o.__setitem__("BOXES", o["BOXES"][:, :, :3]), "BOXES"),
        (lambda o: o.__setitem__("SCORES", o["SCORES"][:1]), "SCORES"),
        (lambda o: o.__setitem__("KEYPOINT_SCORES", o["KEYPOINT_SCORES"][:, :, :5]), "KEYPOINT_SCORES"),
        (lambda o: o.__setitem__("KEYPOINTS", o["KEYPOINTS"][..., :1]), "KEYPOINTS"),
    ],
)
def test_contract_violations_are_reported(mutate, message):
    outputs = batched_outputs([2, 1])
    mutate(outputs)
    with pytest.raises(ValueError, match=message):
        parse_outputs(outputs)


def test_failure_has_no_people_and_says_why():
    p = People.failure("unable to decode image")
    assert not p.ok and p.num_people == 0 and p.error == "unable to decode image"
    assert p.keypoints.shape == (0, spec.NUM_KEYPOINTS, 2)
