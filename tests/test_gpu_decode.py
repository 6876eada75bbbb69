"""The PyTorch decoder (``served.gpu.decode``) on CPU torch against the numpy/OpenCV one it replaces."""
import numpy as np
import pytest
import torch

from rtmo_triton.model import load_checkpoint
from rtmo_triton.model.deploy import DeployRTMO
from rtmo_triton.served import postprocess
from rtmo_triton.served.gpu.decode import cv_overlap, decode_batch, nms_keep, unit_bins
from rtmo_triton.served.letterbox import letterbox
from rtmo_triton.spec import DEFAULT_NMS_THR, DEFAULT_SCORE_THR, DEFAULT_TOPK, ENGINE_OUTPUTS, NUM_BINS

from .golden import CHECKPOINT_T, OUTPUT_FILES, load_output
from .test_postprocess import affine, engine_outputs, random_boxes, subpixel_crowd

KPT_ATOL_PX, RTOL = 1e-3, 1e-5
"""float32 noise: the softmax sums run in another order than numpy's."""


def t(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(a))


def torch_nms(boxes: np.ndarray, scores: np.ndarray, thr: float, **kw) -> np.ndarray:
    return nms_keep(t(boxes), t(scores), thr, **kw).numpy()


def assert_same_people(outputs: dict[str, np.ndarray], affines: np.ndarray, score_thr: float,
                       nms_thr: float) -> dict[str, float]:
    """Both decoders on one batch: counts, order, scores exactly equal, coordinates to float32 noise."""
    j = outputs["kpt_vis"].shape[-1]
    want = postprocess.stack_people(postprocess.decode_batch(outputs, affines, score_thr, nms_thr), j)
    got = decode_batch({n: t(a) for n, a in outputs.items()}, t(affines), score_thr=score_thr,
                       nms_thr=nms_thr, num_keypoints=j)
    got = [g.numpy() for g in got]
    for g, w in zip(got, want, strict=True):
        assert g.dtype == w.dtype and g.shape == w.shape
    counts, boxes, scores, kpts, kpt_scores = got
    np.testing.assert_array_equal(counts, want[0])
    np.testing.assert_array_equal(scores, want[2])  # the same candidates in the same slots
    np.testing.assert_array_equal(kpt_scores, want[4])
    np.testing.assert_allclose(boxes, want[1], rtol=RTOL, atol=1e-4)
    np.testing.assert_allclose(kpts, want[3], rtol=RTOL, atol=KPT_ATOL_PX)
    return {"box": float(np.abs(boxes - want[1]).max()), "kpt": float(np.abs(kpts - want[3]).max()),
            "people": int(counts.sum())}


# --- NMS ------------------------------------------------------------------------------------------


def test_overlap_decides_as_opencv_where_a_float32_iou_does_not():
    """A pair from a random 300-box NMS (seed 1290): float32 IoU 0.30000004 is above the threshold
    0.3f, OpenCV's overlap is not, so OpenCV keeps both."""
    boxes = np.array([[90.35969543457031, 10.0246000289917, 95.69209289550781, 85.71033477783203],
                      [89.73356628417969, 21.825538635253906, 100.69371032714844, 55.05097961425781]],
                     np.float32)
    scores = np.array([0.9, 0.8], np.float32)
    assert postprocess.box_iou(boxes)[0, 1] > np.float32(0.3)
    assert cv_overlap(t(boxes))[0, 1] <= 0.3
    np.testing.assert_array_equal(torch_nms(boxes, scores, 0.3), postprocess.nms(boxes, scores, 0.3))
    assert postprocess.nms(boxes, scores, 0.3).tolist() == [0, 1]


def test_overlap_is_symmetric_and_one_on_itself():
    boxes, _ = random_boxes(np.random.default_rng(0), 80, spread=100.0)
    overlap = cv_overlap(t(boxes))
    assert overlap.dtype == torch.float32
    torch.testing.assert_close(overlap, overlap.T, rtol=0, atol=0)
    torch.testing.assert_close(overlap.diagonal(), torch.ones(80), rtol=0, atol=0)


@pytest.mark.parametrize("seed", range(12))
@pytest.mark.parametrize("thr", [0.3, 0.65, 0.9])
def test_nms_keep_equals_opencv(seed, thr):
    boxes, scores = random_boxes(np.random.default_rng(seed), 60, spread=100.0)
    np.testing.assert_array_equal(torch_nms(boxes, scores, thr), postprocess.nms(boxes, scores, thr))


@pytest.mark.parametrize("seed", range(3))
def test_nms_keep_on_a_subpixel_crowd_with_tied_scores(seed):
    boxes, scores = subpixel_crowd(seed)
    kept = torch_nms(boxes, scores, 0.5)
    np.testing.assert_array_equal(kept, postprocess.nms(boxes, scores, 0.5))
    assert 1 < len(kept) < 150


def test_nms_keep_chain_needs_greedy_order():
    boxes = np.array([[0, 0, 10, 10], [3, 0, 13, 10], [6, 0, 16, 10]], np.float32)
    assert torch_nms(boxes, np.array([0.9, 0.8, 0.7], np.float32), 0.3).tolist() == [0, 2]


@pytest.mark.parametrize("thr", [0.5, 0.25])
def test_nms_keep_iou_exactly_at_the_threshold_does_not_suppress(thr):
    """IoU 0.5 and 0.25 are exact in float32 and double: OpenCV suppresses only above the threshold."""
    boxes = np.array([[0, 0, 10, 10], [0, 0, 10, 5], [0, 0, 10, 2.5]], np.float32)
    scores = np.array([0.9, 0.8, 0.7], np.float32)
    want = postprocess.nms(boxes, scores, thr)
    np.testing.assert_array_equal(torch_nms(boxes, scores, thr), want)
    assert want.tolist() == ([0, 1, 2] if thr == 0.5 else [0, 2])


@pytest.mark.parametrize("check_every", [1, 4, 64])
def test_nms_keep_long_chain_converges_to_greedy(check_every):
    """Each box suppresses only the next: greedy keeps every other one, and the fixed point needs a
    round per link, more than one check period."""
    n = 41
    x = np.arange(n, dtype=np.float32) * 2
    boxes = np.stack([x, np.zeros(n), x + 10, np.full(n, 10)], 1).astype(np.float32)  # IoU next 0.67
    scores = np.linspace(0.9, 0.1, n, dtype=np.float32)
    kept = torch_nms(boxes, scores, 0.6, check_every=check_every)
    np.testing.assert_array_equal(kept, postprocess.nms(boxes, scores, 0.6))
    assert kept.tolist() == list(range(0, n, 2))


def test_nms_keep_degenerate_boxes_and_zero_scores_as_opencv():
    """OpenCV calls boxes whose areas sum to ≤ DBL_EPSILON identical (zero-area, inverted) and drops
    scores ≤ 0; box_iou alone would keep them all."""
    boxes = np.array([[5, 5, 5, 8], [5, 5, 5, 8], [50, 5, 48, 8], [90, 5, 89, 8], [0, 0, 10, 10],
                      [0, 0, 10, 10], [20, 20, 30, 30]], np.float32)
    scores = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.0], np.float32)
    want = postprocess.nms(boxes, scores, 0.5)
    np.testing.assert_array_equal(torch_nms(boxes, scores, 0.5), want)
    assert want.tolist() == [0, 4]


def test_nms_keep_of_nothing_is_empty():
    kept = nms_keep(torch.zeros((0, 4)), torch.zeros(0), 0.5)
    assert kept.dtype == torch.int64 and kept.shape == (0,)


# --- decode ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("n", NUM_BINS)
def test_unit_bins_are_bit_equal_to_numpy(n):
    np.testing.assert_array_equal(unit_bins(n, torch.device("cpu")).numpy(),
                                  np.linspace(-0.5, 0.5, n, dtype=np.float32))


@pytest.fixture(scope="module")
def golden_batch():
    """The fixture images through letterbox and the rtmo-t deploy graph at the served K: real engine
    outputs (the fixtures keep head maps, not the engine's top-K tensors)."""
    refs = [load_output(p) for p in OUTPUT_FILES]
    inputs, lboxes = zip(*(letterbox(r["img_bgr"], 416) for r in refs))
    model, _ = load_checkpoint(CHECKPOINT_T)
    with torch.no_grad():
        outs = DeployRTMO(model, DEFAULT_TOPK).eval()(torch.from_numpy(np.stack(inputs)))
    thr = float(refs[0]["score_thr"]), float(refs[0]["nms_thr"])
    return {n: o.numpy() for n, o in zip(ENGINE_OUTPUTS, outs)}, np.stack([b.as_array() for b in lboxes]), thr


@pytest.mark.parametrize("rows", [slice(None), slice(0, 1), slice(3, 6), slice(6, 8)],
                         ids=["all8", "one", "three", "two_sparse"])
@pytest.mark.parametrize("thr", ["fixture", "default"])
def test_decode_batch_equals_numpy_on_the_fixtures(golden_batch, rows, thr):
    outputs, affines, fixture_thr = golden_batch
    score_thr, nms_thr = fixture_thr if thr == "fixture" else (DEFAULT_SCORE_THR, DEFAULT_NMS_THR)
    err = assert_same_people({n: a[rows] for n, a in outputs.items()}, affines[rows], score_thr, nms_thr)
    assert err["people"] > 0
    print(f"fixtures {rows} {thr}: {err}")


def random_batch(b: int, j: int, *, k: int = DEFAULT_TOPK, seed: int = 0) -> tuple[dict, np.ndarray]:
    """B images of random engine outputs: candidates jittered around a few people each (as a detector's
    cells are), unsorted scores with ties, boxes off the canvas, one affine each."""
    rng = np.random.default_rng(seed)
    images = [engine_outputs(k=k, j=j, seed=seed * 100 + i) for i in range(b)]
    for out in images:
        people, _ = random_boxes(rng, int(rng.integers(5, 40)), spread=400.0)
        jitter = rng.normal(0, 3, (k, 4)).astype(np.float32)
        out["boxes"] = people[rng.integers(0, len(people), k)] + jitter - np.float32(rng.uniform(0, 40))
        out["scores"] = rng.permutation(out["scores"])
        out["scores"][: k // 4] = np.round(out["scores"][: k // 4], 1)  # ties
    outputs = {n: np.stack([o[n] for o in images]) for n in ENGINE_OUTPUTS}
    affines = np.stack([affine(rng.uniform(0.3, 1.5), rng.uniform(0, 50), rng.uniform(0, 50),
                               int(rng.choice([416, 640]))) for _ in range(b)])
    return outputs, affines


@pytest.mark.parametrize("b", [1, 3, 8])
@pytest.mark.parametrize("j", [17, 14])
def test_decode_batch_equals_numpy_with_many_candidates(b, j):
    outputs, affines = random_batch(b, j, seed=b * j)
    err = assert_same_people(outputs, affines, DEFAULT_SCORE_THR, DEFAULT_NMS_THR)
    assert err["people"] > 10 * b
    print(f"random b={b} j={j}: {err}")


@pytest.mark.parametrize("b", [1, 3, 8])
@pytest.mark.parametrize("j", [17, 14])
def test_decode_batch_with_nobody_above_threshold(b, j):
    outputs, affines = random_batch(b, j, seed=7)
    assert_same_people(outputs, affines, 1.1, DEFAULT_NMS_THR)
    got = decode_batch({n: t(a) for n, a in outputs.items()}, t(affines), score_thr=1.1,
                       nms_thr=DEFAULT_NMS_THR, num_keypoints=j)
    assert got[0].tolist() == [[0]] * b and [g.shape[1] for g in got[1:]] == [1] * 4
    assert not any(g.any() for g in got[1:])


@pytest.mark.parametrize("b", [3, 8])
@pytest.mark.parametrize("j", [17, 14])
def test_decode_batch_with_different_people_counts_and_empty_images(b, j):
    outputs, affines = random_batch(b, j, seed=11 + b)
    outputs["scores"][1] *= 0.05  # image 1: nobody above threshold
    outputs["scores"][-1, 3:] *= 0.05  # the last: at most 3
    outputs["boxes"][0] = outputs["boxes"][0, :1]  # image 0: one crowd of copies, one person
    assert_same_people(outputs, affines, DEFAULT_SCORE_THR, DEFAULT_NMS_THR)
    counts = decode_batch({n: t(a) for n, a in outputs.items()}, t(affines), score_thr=DEFAULT_SCORE_THR,
                          nms_thr=DEFAULT_NMS_THR, num_keypoints=j)[0][:, 0].tolist()
    assert counts[0] == 1 and counts[1] == 0 and 1 <= counts[-1] <= 3 and len(set(counts)) >= 3


@pytest.mark.parametrize("j", [17, 14])
def test_decode_batch_with_saturated_logits(j):
    outputs, affines = random_batch(3, j, seed=5)
    rng = np.random.default_rng(5)
    for name in ("x_logits", "y_logits"):
        a = outputs[name]
        outputs[name] = np.where(rng.random(a.shape) < 0.02, 1e5, -1e5).astype(np.float32)
        outputs[name][0, :, 0] = 1e5  # the first image: every bin saturated high (uniform)
    err = assert_same_people(outputs, affines, DEFAULT_SCORE_THR, DEFAULT_NMS_THR)
    print(f"saturated j={j}: {err}")


def test_decode_batch_drops_zero_scores_as_opencv_even_under_a_negative_threshold():
    outputs, affines = random_batch(3, 17, seed=2)
    outputs["scores"][1] = 0.0
    outputs["scores"][2, ::2] = 0.0
    err = assert_same_people(outputs, affines, -1.0, DEFAULT_NMS_THR)
    got = decode_batch({n: t(a) for n, a in outputs.items()}, t(affines), score_thr=-1.0,
                       nms_thr=DEFAULT_NMS_THR, num_keypoints=17)
    assert got[0][1, 0] == 0 and err["people"] > 0


def test_decode_batch_large_k_crowd():
    """A K larger than served (every cell of a small input) in a dense crowd: long NMS chains."""
    outputs, affines = random_batch(2, 14, k=400, seed=3)
    outputs["boxes"] = outputs["boxes"] * np.float32(0.5)  # crowd them
    err = assert_same_people(outputs, affines, DEFAULT_SCORE_THR, DEFAULT_NMS_THR)
    print(f"crowd k=400: {err}")


def test_decode_batch_refuses_a_keypoint_count_other_than_the_engines():
    outputs, affines = random_batch(1, 14, seed=0)
    with pytest.raises(ValueError, match="14 keypoints"):
        decode_batch({n: t(a) for n, a in outputs.items()}, t(affines), score_thr=0.1, nms_thr=0.65,
                     num_keypoints=17)
