"""Decoder numerics, no model needed."""
import numpy as np
import pytest

from rtmo_triton.served.postprocess import People, box_iou, decode_people, nms, softmax_integral, stack_people
from rtmo_triton.spec import AFFINE_FIELDS, NUM_BINS


def greedy_nms_reference(boxes, scores, thr):
    """The textbook loop, as the reference implementation runs it."""
    order = list(np.argsort(-scores, kind="stable"))
    keep = []
    while order:
        i = order.pop(0)
        keep.append(i)
        order = [j for j in order if box_iou(boxes[[i, j]])[0, 1] <= thr]
    return np.array(keep, dtype=int)


def random_boxes(rng, n, spread=200.0):
    xy = rng.uniform(0, spread, (n, 2))
    wh = rng.uniform(5, 80, (n, 2))
    return np.concatenate([xy, xy + wh], 1).astype(np.float32), rng.uniform(0, 1, n).astype(np.float32)


@pytest.mark.parametrize("seed", range(12))
@pytest.mark.parametrize("thr", [0.3, 0.65, 0.9])
def test_nms_equals_greedy(seed, thr):
    boxes, scores = random_boxes(np.random.default_rng(seed), 60, spread=100.0)
    np.testing.assert_array_equal(nms(boxes, scores, thr), greedy_nms_reference(boxes, scores, thr))


def subpixel_crowd(seed: int, n: int = 150) -> tuple[np.ndarray, np.ndarray]:
    """Boxes under a pixel, with three score values shared by many: ties everywhere."""
    rng = np.random.default_rng(seed)
    boxes, _ = random_boxes(rng, n, spread=1.0)
    return boxes / 80.0, rng.choice(np.array([0.3, 0.6, 0.9], np.float32), n)


@pytest.mark.parametrize("seed", range(3))
def test_nms_equals_greedy_on_a_subpixel_crowd_with_tied_scores(seed):
    """Boxes under a pixel would all vanish in integer rectangles; tied scores must keep index order."""
    boxes, scores = subpixel_crowd(seed)
    kept = nms(boxes, scores, 0.5)
    np.testing.assert_array_equal(kept, greedy_nms_reference(boxes, scores, 0.5))
    assert 1 < len(kept) < 150


def test_nms_chain_needs_greedy_order():
    # A suppresses B, B would suppress C; greedy keeps A and C
    boxes = np.array([[0, 0, 10, 10], [3, 0, 13, 10], [6, 0, 16, 10]], np.float32)
    assert nms(boxes, np.array([0.9, 0.8, 0.7], np.float32), 0.3).tolist() == [0, 2]


def test_iou_degenerate_boxes_do_not_divide_by_zero():
    iou = box_iou(np.zeros((2, 4), np.float32))
    assert np.isfinite(iou).all() and (iou == 0).all()


def test_softmax_integral_peaks_and_uniform():
    bins = np.linspace(-0.5, 0.5, 192, dtype=np.float32)
    logits = np.zeros((2, 3, 192), np.float32)
    logits[0, :, 191] = 1e6  # saturated: clamped, no overflow, lands on the last bin
    out = softmax_integral(logits, bins, np.array([100.0, 50.0]), np.array([40.0, 10.0]))
    np.testing.assert_allclose(out[0], 100 + 0.5 * 40, atol=1e-3)
    np.testing.assert_allclose(out[1], 50.0, atol=1e-3)  # uniform -> centre
    assert np.isfinite(out).all()


def engine_outputs(k=5, j=17, seed=0):
    rng = np.random.default_rng(seed)
    boxes, _ = random_boxes(rng, k, spread=300)
    return dict(
        scores=np.sort(rng.uniform(0, 1, k))[::-1].astype(np.float32), boxes=boxes,
        kpt_vis=rng.uniform(0, 1, (k, j)).astype(np.float32),
        x_logits=rng.normal(0, 3, (k, j, NUM_BINS[0])).astype(np.float32),
        y_logits=rng.normal(0, 3, (k, j, NUM_BINS[1])).astype(np.float32),
    )


def affine(scale=0.5, ox=10.0, oy=20.0, size=416):
    return np.array([scale, ox, oy, 800, 600, size], np.float32)[: len(AFFINE_FIELDS)]


def test_nothing_above_threshold_is_empty():
    out = engine_outputs()
    people = decode_people(*out.values(), affine(), score_thr=1.1, nms_thr=0.65)
    shapes = [a.shape for a in people.arrays]
    assert shapes == [a.shape for a in People.empty(17).arrays] == [(0, 4), (0,), (0, 17, 2), (0, 17)]


def test_boxes_clamped_to_canvas_keypoints_not_and_mapped_back():
    out = engine_outputs(k=1)
    out["scores"][:] = 0.9
    out["boxes"][:] = [[-30, 50, 500, 100]]  # sticks out of the 416 canvas
    out["x_logits"][:] = 0
    out["x_logits"][0, :, 0] = 1e4  # every keypoint at the leftmost bin: x = cx - 0.5 * 1.25 * w
    p = decode_people(*out.values(), affine(), score_thr=0.1, nms_thr=0.65)
    expected = [(0 - 10) / 0.5, (50 - 20) / 0.5, (416 - 10) / 0.5, (100 - 20) / 0.5]
    np.testing.assert_allclose(p.boxes[0], expected)
    x_in = 235 - 0.5 * 1.25 * 530  # -96.25: outside the canvas, kept as is
    np.testing.assert_allclose(p.keypoints[0, :, 0], (x_in - 10) / 0.5, rtol=1e-5)
    np.testing.assert_allclose(p.keypoint_scores[0], out["kpt_vis"][0])


@pytest.mark.parametrize("k", [1, 3, 10, 40])
def test_topk_prefix_keeps_exactly_the_full_runs_survivors_inside_k(k):
    """Greedy NMS decides each candidate from better-ranked ones only, so running
    on the K best cells returns the full run's people that rank inside K."""
    full = engine_outputs(k=60, seed=3)
    aff = affine()
    everyone = decode_people(*full.values(), aff, 0.2, 0.5)
    prefix = decode_people(*(v[:k] for v in full.values()), aff, 0.2, 0.5)
    inside = np.isin(everyone.scores, full["scores"][:k])
    for got, want in zip(prefix.arrays, everyone.arrays):
        np.testing.assert_array_equal(got, want[inside])


@pytest.mark.parametrize("num_keypoints", [17, 14])
def test_a_batch_is_padded_to_its_largest_person_count_with_zeros(num_keypoints):
    rng = np.random.default_rng(0)

    def people(n):
        j = num_keypoints
        return People(*(rng.random(shape, np.float32) + 1 for shape in ((n, 4), (n,), (n, j, 2), (n, j))))

    batch = [people(2), People.empty(num_keypoints), people(3)]
    counts, boxes, scores, kpts, kpt_scores = stack_people(batch, num_keypoints)
    assert counts.tolist() == [[2], [0], [3]]
    assert boxes.shape == (3, 3, 4) and kpts.shape == (3, 3, num_keypoints, 2)
    assert kpt_scores.shape == (3, 3, num_keypoints)
    for row, p in enumerate(batch):
        n = len(p.scores)
        for stacked, own in zip((boxes, scores, kpts, kpt_scores), p.arrays, strict=True):
            np.testing.assert_array_equal(stacked[row, :n], own)
            assert not stacked[row, n:].any(), "rows past an image's people are zeros"
    empty = stack_people([People.empty(num_keypoints)], num_keypoints)
    assert empty[0].tolist() == [[0]] and empty[1].shape == (1, 1, 4), "no zero-sized dimension"
