"""Per-image results of the `rtmo` ensemble, split out of a batched response.

The ensemble pads every output to the largest person count in the request, so
a row's ``NUM_PEOPLE`` is the only thing that says where its real people end.
"""
from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from .. import spec
from ..people import People


def parse_outputs(outputs: Mapping[str, np.ndarray | None], latency_ms: float = 0.0) -> list[People]:
    """Split one response's batched outputs into per-image people, dropping padding rows.

    Raises ValueError when the response does not follow the ensemble's contract,
    so a broken server is reported instead of silently yielding wrong people.
    """
    missing = [n for n in spec.ENSEMBLE_OUTPUTS if outputs.get(n) is None]
    if missing:
        raise ValueError(f"response lacks output(s) {', '.join(missing)}")
    num, boxes, scores, kpts, kpt_scores = (np.asarray(outputs[n]) for n in spec.ENSEMBLE_OUTPUTS)
    num = num.reshape(len(num), -1)
    b = num.shape[0]
    if num.shape[1] != 1:
        raise ValueError(f"NUM_PEOPLE has shape {num.shape}, expected [B, 1]")
    if not (boxes.ndim == 3 and boxes.shape[0] == b and boxes.shape[2] == 4):
        raise ValueError(f"BOXES has shape {boxes.shape}, expected [{b}, N, 4]")
    n_max = boxes.shape[1]
    if scores.shape != (b, n_max):
        raise ValueError(f"SCORES has shape {scores.shape}, expected [{b}, {n_max}]")
    if not (kpts.ndim == 4 and kpts.shape[:2] == (b, n_max) and kpts.shape[3] == 2):
        raise ValueError(f"KEYPOINTS has shape {kpts.shape}, expected [{b}, {n_max}, J, 2]")
    if kpt_scores.shape != kpts.shape[:3]:
        raise ValueError(f"KEYPOINT_SCORES has shape {kpt_scores.shape}, expected {list(kpts.shape[:3])}")
    counts = num[:, 0].astype(np.int64)
    if (counts < 0).any() or (counts > n_max).any():
        raise ValueError(f"NUM_PEOPLE {counts.tolist()} outside [0, {n_max}]")
    f32 = np.float32
    return [
        People(boxes[i, :n].astype(f32), scores[i, :n].astype(f32), kpts[i, :n].astype(f32),
               kpt_scores[i, :n].astype(f32), latency_ms=latency_ms, batch=b)
        for i, n in enumerate(counts.tolist())
    ]
