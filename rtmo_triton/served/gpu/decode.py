"""``served.postprocess`` in PyTorch: engine outputs → the ensemble's padded people arrays, on their device.

On a GPU host the engine's outputs arrive as CUDA tensors (DLPack) and stay there: threshold, NMS, the
DCC softmax of the survivors and the affine back to image pixels all run on the GPU, and only the five
small output arrays cross to the host. On CPU torch the same code runs in CI, where the tests hold it
to the numpy/OpenCV decoder. Float32 arithmetic follows the numpy code's operation order, so the two
agree to float32 noise and keep the same people in the same order.
"""
from __future__ import annotations

import sys

import numpy as np
import torch
from torch import Tensor

from ...spec import AFFINE_FIELDS, BBOX_PADDING, NUM_BINS, SOFTMAX_CLAMP, SOFTMAX_EPS

_FIELD = {name: i for i, name in enumerate(AFFINE_FIELDS)}
_CV_AREA_EPS = sys.float_info.epsilon
"""OpenCV's ``jaccardDistance`` calls two boxes whose areas sum to at most DBL_EPSILON identical."""
_UNIT_RANGE = (-0.5, 0.5)
"""The DCC bins span the padded box, centre at 0 (``postprocess._UNIT_BINS``)."""


def cv_overlap(boxes: Tensor) -> Tensor:
    """Pairwise overlap [..., K, K] of xyxy boxes [..., K, 4], float32, computed as ``postprocess.nms``
    has ``cv2.dnn.NMSBoxes`` compute it, so NMS decisions are OpenCV's bit for bit.

    ``postprocess.nms`` hands OpenCV (x, y, w, h) with w, h subtracted in float32; OpenCV works in double:
    its ``Rect2d`` intersection (the lower-x rectangle's width less the gap, capped by the other's width;
    empty rectangles and non-positive sides give 0), ``jaccardDistance`` = 1 - inter / union (0 when the
    areas sum to at most DBL_EPSILON: two zero-area boxes, or an inverted box and a smaller one, count as
    identical), and then ``1.f - float(distance)`` in float. A float32 IoU like ``postprocess.box_iou``
    (union floored at 1e-6) decides otherwise where the IoU lies within float32 rounding of the
    threshold: one random 300-box NMS in 1200 here (tests/test_gpu_decode.py keeps that pair). The double
    work is elementwise over [B, K, K] pairs (80k at B=8, K=100), small even where doubles are slow.
    """
    xy = boxes[..., :2].double()
    wh = (boxes[..., 2:] - boxes[..., :2]).double()
    area = wh.prod(-1)
    a_xy, b_xy = xy[..., :, None, :], xy[..., None, :, :]
    a_wh, b_wh = wh[..., :, None, :], wh[..., None, :, :]
    a_low = a_xy < b_xy  # per axis, OpenCV's Rx_min / Ry_min is a where a starts first, else b
    lo_xy, lo_wh = torch.where(a_low, a_xy, b_xy), torch.where(a_low, a_wh, b_wh)
    hi_xy, hi_wh = torch.where(a_low, b_xy, a_xy), torch.where(a_low, b_wh, a_wh)
    side = torch.minimum(lo_wh - (hi_xy - lo_xy), hi_wh)
    empty = (wh <= 0).any(-1)
    disjoint = (((lo_xy < 0) & (lo_xy + lo_wh < hi_xy)) | (side <= 0)).any(-1)
    disjoint |= empty[..., :, None] | empty[..., None, :]
    inter = torch.where(disjoint, 0.0, side.prod(-1))
    total = area[..., :, None] + area[..., None, :]
    distance = torch.where(total <= _CV_AREA_EPS, 0.0, 1.0 - inter / (total - inter))
    return 1.0 - distance.float()


def greedy_keep(ranked_boxes: Tensor, valid: Tensor, iou_thr: float, *, check_every: int = 4) -> Tensor:
    """Greedy NMS of each row of ``ranked_boxes`` [B, K, 4], already in rank order (best first); returns
    the keep mask [B, K]. ``valid`` [B, K] marks the candidates: the others are never kept and suppress
    nothing. Rows (images) are independent, so a batch costs one [B, K, K] overlap tensor.

    The greedy rule (keep a box unless a kept better-ranked one overlaps it by more than ``iou_thr``,
    ``cv_overlap`` against the threshold as a float, as OpenCV compares) is solved as the fixed point of
    ``keep[i] = valid[i] & ~any(keep[j] & overlap[j, i], j < i)``: after t rounds the first t ranks hold
    their greedy answer whatever the start, so it converges within K rounds, and any fixed point is the
    greedy answer. Convergence is checked (a host sync on a GPU) only every ``check_every`` rounds;
    crowds converge in a few, the length of their longest suppression chain.
    """
    if check_every < 1:
        raise ValueError(f"check_every must be >= 1, got {check_every}")
    k = ranked_boxes.shape[-2]
    overlap = ~(cv_overlap(ranked_boxes) <= iou_thr)  # OpenCV keeps while overlap <= thr
    before = torch.ones(k, k, dtype=torch.bool, device=ranked_boxes.device).triu(diagonal=1)
    suppressor = overlap & before & valid[..., :, None]  # [B, j, i]: j ranked before i can suppress i
    keep, rounds = valid, 0
    while rounds < k:
        for _ in range(min(check_every, k - rounds)):
            prev, keep = keep, valid & ~(suppressor & keep[..., :, None]).any(-2)
            rounds += 1
        if torch.equal(prev, keep):
            break
    return keep


def rank(scores: Tensor) -> Tensor:
    """Indices that order each row of ``scores`` by descending score, ties by index (OpenCV's stable sort)."""
    return torch.sort(scores, dim=-1, descending=True, stable=True).indices


def nms_keep(boxes: Tensor, scores: Tensor, iou_thr: float, *, check_every: int = 4) -> Tensor:
    """``postprocess.nms`` in torch: kept indices (int64) of xyxy ``boxes`` [N, 4], in descending score.

    As ``cv2.dnn.NMSBoxes`` with score threshold 0, scores ≤ 0 (and NaN) are dropped; see
    ``cv_overlap`` for the overlap.
    """
    order = rank(scores)
    keep = greedy_keep(boxes[order][None], (scores[order] > 0)[None], iou_thr, check_every=check_every)
    return order[keep[0]]


def unit_bins(num_bins: int, device: torch.device) -> Tensor:
    """``np.linspace(-0.5, 0.5, num_bins, dtype=float32)`` built on ``device``: numpy's formula in float64
    (i * step + start, the end exact), then rounded, so the bins are bit-equal to the numpy decoder's."""
    start, stop = _UNIT_RANGE
    step = (stop - start) / (num_bins - 1)
    bins = torch.arange(num_bins, dtype=torch.float64, device=device) * step + start
    bins[-1] = stop
    return bins.float()


def softmax_integral(logits: Tensor, bins: Tensor, centre: Tensor, size: Tensor) -> Tensor:
    """Expected coordinate [N, J] under the softmax of 1-D heatmap logits [N, J, bins], candidate n's bins
    at ``bins * size[n] + centre[n]``; clamp, max-subtraction and +eps as the reference (and numpy) do,
    so saturated logits decode identically."""
    z = logits.clamp(-SOFTMAX_CLAMP, SOFTMAX_CLAMP)
    p = torch.exp(z - z.amax(-1, keepdim=True))
    p = p / (p.sum(-1, keepdim=True) + SOFTMAX_EPS)
    return (p @ bins) * size[:, None] + centre[:, None] * p.sum(-1)


def decode_batch(
    outputs: dict[str, Tensor], affines: Tensor | np.ndarray, *, score_thr: float, nms_thr: float,
    num_keypoints: int, check_every: int = 4,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """``stack_people(postprocess.decode_batch(...))`` on the outputs' device.

    ``outputs`` holds ``spec.ENGINE_OUTPUTS`` for B images (scores [B, K], boxes [B, K, 4], kpt_vis
    [B, K, J], x/y logits [B, K, J, bins]); ``affines`` [B, len(AFFINE_FIELDS)] is the preprocess's
    rows (moved to that device). Returns NUM_PEOPLE int32 [B, 1], BOXES [B, N, 4], SCORES [B, N],
    KEYPOINTS [B, N, J, 2], KEYPOINT_SCORES [B, N, J], float32, N the batch's largest person count (at
    least 1), rows past an image's people zero; each image's people best first. Works for any B,
    including images with nobody, so a Triton model may call it per request. One host sync reads the
    person counts (the output shape needs them); NMS adds one per ``check_every`` rounds.
    """
    scores = outputs["scores"].float()
    b, k = scores.shape
    j = outputs["kpt_vis"].shape[-1]
    if j != num_keypoints:
        raise ValueError(f"the engine outputs {j} keypoints per person, the decoder is set for "
                         f"{num_keypoints}")
    device = scores.device
    affines = torch.as_tensor(affines, dtype=torch.float32, device=device)

    order = rank(scores)  # [B, K], per image best first
    ranked_scores = scores.gather(1, order)
    ranked_boxes = outputs["boxes"].float().gather(1, order[..., None].expand(b, k, 4))
    # OpenCV's NMSBoxes (threshold 0) also drops scores <= 0
    valid = (ranked_scores > score_thr) & (ranked_scores > 0)
    keep = greedy_keep(ranked_boxes, valid, nms_thr, check_every=check_every)

    counts = keep.sum(1)
    counts_host = counts.cpu().tolist()
    total, n = sum(counts_host), max([1, *counts_host])
    out_boxes = torch.zeros((b, n, 4), dtype=torch.float32, device=device)
    out_scores = torch.zeros((b, n), dtype=torch.float32, device=device)
    out_kpts = torch.zeros((b, n, j, 2), dtype=torch.float32, device=device)
    out_kpt_scores = torch.zeros((b, n, j), dtype=torch.float32, device=device)
    result = counts.to(torch.int32).reshape(b, 1), out_boxes, out_scores, out_kpts, out_kpt_scores
    if total == 0:
        return result

    # survivors in (image, rank) order, without a second sync: kept flat positions sort before the rest
    flat = torch.arange(b * k, device=device)
    survivors = torch.sort(torch.where(keep.reshape(-1), flat, b * k)).values[:total]
    img, pos = survivors // k, survivors % k
    cand = order[img, pos]
    slot = keep.cumsum(1)[img, pos] - 1

    kept_boxes = ranked_boxes[img, pos]
    tl, br = kept_boxes[:, :2], kept_boxes[:, 2:]
    centre = (br + tl) * 0.5
    size = (br - tl) * BBOX_PADDING
    kx = softmax_integral(outputs["x_logits"][img, cand].float(), unit_bins(NUM_BINS[0], device),
                          centre[:, 0], size[:, 0])
    ky = softmax_integral(outputs["y_logits"][img, cand].float(), unit_bins(NUM_BINS[1], device),
                          centre[:, 1], size[:, 1])

    aff = affines[img]
    scale = aff[:, _FIELD["scale"], None, None]
    offset = aff[:, None, [_FIELD["offset_x"], _FIELD["offset_y"]]]
    # boxes are clamped to the model canvas (as the reference does), keypoints are not
    clamped = kept_boxes.clamp(min=0.0).minimum(aff[:, _FIELD["input_size"], None])
    out_boxes[img, slot] = ((clamped.reshape(-1, 2, 2) - offset) / scale).reshape(-1, 4)
    out_scores[img, slot] = ranked_scores[img, pos]
    out_kpts[img, slot] = (torch.stack((kx, ky), dim=-1) - offset) / scale
    out_kpt_scores[img, slot] = outputs["kpt_vis"][img, cand].float()
    return result
