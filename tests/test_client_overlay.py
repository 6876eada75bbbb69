import numpy as np
import pytest

from rtmo_triton import spec
from rtmo_triton.client import People, draw_overlay
from rtmo_triton.client.overlay import BOX_COLOR, SIDE_COLORS

J = spec.NUM_KEYPOINTS
IDX = {n: i for i, n in enumerate(spec.COCO.names)}


def one_person(points: dict[str, tuple[float, float, float]], box=(150, 150, 190, 190)) -> People:
    """Every keypoint not in ``points`` sits in its own spot with score 0.1."""
    kpts = np.stack([np.full(J, 120.0), 10.0 + 8 * np.arange(J)], -1)
    scores = np.full(J, 0.1)
    for name, (x, y, s) in points.items():
        kpts[IDX[name]], scores[IDX[name]] = (x, y), s
    return People(np.array([box], np.float32), np.array([0.8], np.float32),
                  kpts[None].astype(np.float32), scores[None].astype(np.float32))


ARM = {"left_shoulder": (40, 40, 0.9), "left_elbow": (40, 100, 0.9), "left_wrist": (100, 100, 0.2)}


def test_same_size_and_input_untouched():
    image = np.zeros((200, 220, 3), np.uint8)
    out = draw_overlay(image, one_person(ARM))
    assert out.shape == image.shape and out.dtype == np.uint8
    assert not image.any() and out.any()


def test_confident_keypoints_and_their_link_are_drawn():
    out = draw_overlay(np.zeros((200, 200, 3), np.uint8), one_person(ARM), kpt_thr=0.3)
    left = SIDE_COLORS["left"]
    assert tuple(out[40, 40]) == left and tuple(out[100, 40]) == left  # joint centres (row, col)
    assert out[70, 40].max() > 100 and out[70, 40, 2] > out[70, 40, 0]  # the shoulder-elbow limb, orange


def test_low_score_keypoints_and_links_to_them_are_not_drawn():
    out = draw_overlay(np.zeros((200, 200, 3), np.uint8), one_person(ARM), kpt_thr=0.3)
    assert not out[95:106, 95:106].any()  # the wrist (score 0.2)
    assert not out[98:103, 65:75].any()  # the elbow-wrist limb
    others = [i for i, n in enumerate(spec.COCO.names) if n not in ARM]
    for i in others:  # every other keypoint has score 0.1, each in its own spot
        y = 10 + 8 * i
        assert not out[y - 1:y + 2, 119:122].any(), spec.COCO.names[i]


def test_threshold_is_an_option():
    out = draw_overlay(np.zeros((200, 200, 3), np.uint8), one_person(ARM), kpt_thr=0.15)
    assert tuple(out[100, 100]) == SIDE_COLORS["left"]
    assert out[100, 70].any()
    assert not out[10 + 8 * IDX["nose"], 120].any()  # 0.1 is still below 0.15


def test_box_is_drawn():
    out = draw_overlay(np.zeros((200, 200, 3), np.uint8), one_person({}))
    assert out[170, 150].any() and out[170, 190].any() and out[150, 170].any()
    b, g, r = out[170, 150].tolist()  # yellow-ish (anti-aliased edge)
    assert b == BOX_COLOR[0] and g > 100 and r > 100
    assert not out[170, 170].any()  # boxes are outlines


def test_no_people_is_an_unchanged_copy():
    image = np.random.default_rng(0).integers(0, 255, (50, 60, 3), dtype=np.uint8)
    empty = People.failure("x")
    out = draw_overlay(image, empty)
    np.testing.assert_array_equal(out, image)
    assert out is not image


def test_grey_input_becomes_colour():
    out = draw_overlay(np.zeros((200, 200), np.uint8), one_person(ARM))
    assert out.shape == (200, 200, 3) and tuple(out[40, 40]) == SIDE_COLORS["left"]


def test_broken_coordinates_do_not_crash_and_are_skipped():
    p = one_person({"left_shoulder": (np.nan, 40, 0.9), "left_elbow": (1e12, -1e12, 0.9),
                    "left_wrist": (100, 100, 0.9)})
    out = draw_overlay(np.zeros((200, 200, 3), np.uint8), p)
    assert tuple(out[100, 100]) == SIDE_COLORS["left"]


@pytest.mark.parametrize("j", [14, 5])
def test_other_keypoint_counts(j):
    kpts = np.full((1, j, 2), 30.0, np.float32)
    p = People(np.zeros((1, 4), np.float32), np.ones(1, np.float32), kpts, np.ones((1, j), np.float32))
    assert draw_overlay(np.zeros((64, 64, 3), np.uint8), p)[30, 30].any()
