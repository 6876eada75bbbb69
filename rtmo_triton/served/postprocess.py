"""From the engine's top-K candidates to people in original-image pixels.

Runs per image on CPU in the Triton decode model. Everything is vectorized
over candidates and keypoints; NMS is OpenCV's greedy ``dnn.NMSBoxes``.
"""
from __future__ import annotations

import cv2
import numpy as np

from ..people import People
from ..spec import AFFINE_FIELDS, BBOX_PADDING, ENGINE_OUTPUTS, NUM_BINS, SOFTMAX_CLAMP, SOFTMAX_EPS

_UNIT_BINS = tuple(np.linspace(-0.5, 0.5, n, dtype=np.float32) for n in NUM_BINS)


def box_iou(a: np.ndarray, b: np.ndarray | None = None) -> np.ndarray:
    """Pairwise IoU [N, M] of xyxy boxes ``a`` against ``b`` (default ``a`` itself); no +1 pixel,
    union floored at 1e-6, as the reference computes it."""
    b = a if b is None else b
    tl = np.maximum(a[:, None, :2], b[None, :, :2])
    br = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(br - tl, 0, None).prod(-1)
    area_a, area_b = (a[:, 2:] - a[:, :2]).prod(-1), (b[:, 2:] - b[:, :2]).prod(-1)
    return inter / np.maximum(area_a[:, None] + area_b[None, :] - inter, 1e-6)


def nms(boxes: np.ndarray, scores: np.ndarray, iou_thr: float) -> np.ndarray:
    """Greedy NMS (OpenCV's ``dnn.NMSBoxes``); returns kept indices in descending score.

    In descending score, ties in index order, a box is kept unless a kept box overlaps it by more than
    ``iou_thr``: the reference's rule, with its IoU (xyxy, no +1 pixel; OpenCV computes it in double on
    x, y, w, h). OpenCV keeps only scores above its threshold, which must be ≥ 0: candidates arrive
    thresholded, so 0 keeps them all. At K=2000 on a crowd it is 10-100× faster than a numpy
    fixed-point iteration over the K×K overlap matrix with the same result (perf/bench_stages.py).
    """
    xywh = np.concatenate([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], 1).astype(np.float64)
    kept = cv2.dnn.NMSBoxes(xywh, scores.astype(np.float32), 0.0, float(iou_thr))
    return np.asarray(kept, np.int64).reshape(-1)


def survivors(scores: np.ndarray, boxes: np.ndarray, score_thr: float, nms_thr: float) -> np.ndarray:
    """Indices of one image's candidates that become people: above ``score_thr``, then NMS; in
    descending score. The one rule, for the decoder and for the benchmark weights' calibration
    (``model.checkpoint.benchmark_model``)."""
    cand = np.flatnonzero(scores > score_thr)
    if cand.size == 0:
        return cand
    return cand[nms(boxes[cand], scores[cand], nms_thr)]


def softmax_integral(logits: np.ndarray, unit_bins: np.ndarray, centre: np.ndarray,
                     size: np.ndarray) -> np.ndarray:
    """Expected coordinate under the softmax of 1-D heatmap logits.

    logits [N, J, B]; the bins of candidate n sit at ``unit_bins * size[n] +
    centre[n]``. Clamp, max-subtraction and the +eps denominator follow the
    reference so saturated logits decode identically.
    """
    z = np.clip(logits, -SOFTMAX_CLAMP, SOFTMAX_CLAMP)
    p = np.exp(z - z.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True) + SOFTMAX_EPS
    # sum_i p_i (u_i * size + centre) = size * (p @ u) + centre * sum(p)
    return (p @ unit_bins) * size[:, None] + centre[:, None] * p.sum(-1)


def decode_people(
    scores: np.ndarray, boxes: np.ndarray, kpt_vis: np.ndarray,
    x_logits: np.ndarray, y_logits: np.ndarray, affine: np.ndarray,
    score_thr: float, nms_thr: float,
) -> People:
    """Threshold, NMS, DCC decode of the survivors, then back to the original image.

    Inputs are one image's engine outputs: scores [K] and kpt_vis [K, J]
    (probabilities), boxes [K, 4] (xyxy, input pixels, unclamped), logits
    [K, J, 192] and [K, J, 256]; ``affine`` is the preprocess's
    ``spec.AFFINE_FIELDS`` row (scale, offsets, original size, input size).
    """
    num_kpts = kpt_vis.shape[-1]
    keep = survivors(scores, boxes, score_thr, nms_thr)
    if keep.size == 0:
        return People.empty(num_kpts)

    kept_boxes = boxes[keep].astype(np.float32)
    tl, br = kept_boxes[:, :2], kept_boxes[:, 2:]
    centre = (br + tl) * 0.5
    size = (br - tl) * BBOX_PADDING
    kx = softmax_integral(x_logits[keep], _UNIT_BINS[0], centre[:, 0], size[:, 0])
    ky = softmax_integral(y_logits[keep], _UNIT_BINS[1], centre[:, 1], size[:, 1])
    keypoints = np.stack((kx, ky), axis=-1)

    lb = dict(zip(AFFINE_FIELDS, affine.tolist(), strict=True))
    scale = lb["scale"]
    # boxes are clamped to the model canvas (as the reference does), keypoints are not
    clamped = np.clip(kept_boxes, 0.0, lb["input_size"])
    offset = np.array([lb["offset_x"], lb["offset_y"]], np.float32)
    return People(
        boxes=((clamped.reshape(-1, 2, 2) - offset) / scale).reshape(-1, 4).astype(np.float32),
        scores=scores[keep].astype(np.float32),
        keypoints=((keypoints - offset) / scale).astype(np.float32),
        keypoint_scores=kpt_vis[keep].astype(np.float32),
    )


def decode_batch(
    outputs: dict[str, np.ndarray], affines: np.ndarray, score_thr: float, nms_thr: float
) -> list[People]:
    """``decode_people`` for every image of a batch of engine outputs."""
    return [
        decode_people(*(outputs[n][i] for n in ENGINE_OUTPUTS), affines[i], score_thr, nms_thr)
        for i in range(len(affines))
    ]


def stack_people(people: list[People], num_keypoints: int) -> tuple[np.ndarray, ...]:
    """Batch rows of the ensemble's outputs: NUM_PEOPLE [B,1] and zero-padded [B,N,...] arrays.

    N is the largest person count of the batch (at least 1, so no tensor has a
    zero-sized dimension a client library could trip on).
    """
    b, n = len(people), max([1, *(len(p.scores) for p in people)])
    counts = np.array([[len(p.scores)] for p in people], np.int32).reshape(b, 1)
    boxes = np.zeros((b, n, 4), np.float32)
    scores = np.zeros((b, n), np.float32)
    kpts = np.zeros((b, n, num_keypoints, 2), np.float32)
    kpt_scores = np.zeros((b, n, num_keypoints), np.float32)
    for i, p in enumerate(people):
        k = len(p.scores)
        boxes[i, :k], scores[i, :k], kpts[i, :k], kpt_scores[i, :k] = p.arrays
    return counts, boxes, scores, kpts, kpt_scores
