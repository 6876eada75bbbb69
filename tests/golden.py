"""Access to the reference fixtures in ../shared and the people-matching rule.

Near-equal scores may swap order between implementations, so people are
matched by box IoU, never by index.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
FIXTURES = SHARED / "fixtures"
RTMO_T = FIXTURES / "rtmo-t"
CHECKPOINT_T = RTMO_T / "rtmo-t_random_seed0.pth"
OUTPUT_FILES = sorted(RTMO_T.glob("outputs_rtmo-t_*.npz"))

BOX_TOL_PX = 0.02
KPT_P99_TOL_PX = 0.1

requires_fixtures = pytest.mark.skipif(
    not CHECKPOINT_T.is_file(), reason=f"reference fixtures not found at {RTMO_T}"
)


def fixture_ids() -> list[str]:
    return [p.stem.removeprefix("outputs_rtmo-t_") for p in OUTPUT_FILES]


def load_output(name_or_path: str | Path) -> dict[str, np.ndarray]:
    path = Path(name_or_path)
    if not path.is_file():
        path = RTMO_T / f"outputs_rtmo-t_{name_or_path}.npz"
    with np.load(path) as data:
        return {k: data[k] for k in data.files}


def _iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    tl = np.maximum(a[:, None, :2], b[None, :, :2])
    br = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(br - tl, 0, None).prod(-1)
    area = lambda x: (x[:, 2:] - x[:, :2]).prod(-1)  # noqa: E731
    return inter / np.maximum(area(a)[:, None] + area(b)[None] - inter, 1e-9)


def assert_people_match(
    boxes: np.ndarray, scores: np.ndarray, keypoints: np.ndarray, keypoint_scores: np.ndarray,
    ref: dict[str, np.ndarray], score_tol: float = 5e-4,
) -> dict[str, float]:
    """Every reference person found once, none extra, within the issue's tolerances.

    Returns the achieved errors so callers can report them.
    """
    ref_boxes = ref["pred_bboxes"]
    assert len(boxes) == len(ref_boxes), f"{len(boxes)} people served, reference has {len(ref_boxes)}"
    if len(ref_boxes) == 0:
        return {"box_max": 0.0, "kpt_p99": 0.0}
    match = _iou(boxes, ref_boxes).argmax(1)
    assert len(set(match.tolist())) == len(match), "two people matched the same reference person"
    box_err = np.abs(boxes - ref_boxes[match]).max()
    kpt_err = np.abs(keypoints - ref["pred_keypoints"][match])
    kpt_p99 = float(np.percentile(kpt_err, 99))
    assert box_err <= BOX_TOL_PX, f"box error {box_err:.4f} px > {BOX_TOL_PX}"
    assert kpt_p99 <= KPT_P99_TOL_PX, f"keypoint p99 error {kpt_p99:.4f} px > {KPT_P99_TOL_PX}"
    np.testing.assert_allclose(scores, ref["pred_bbox_scores"][match], atol=score_tol)
    np.testing.assert_allclose(keypoint_scores, ref["pred_keypoint_scores"][match], atol=score_tol)
    return {"box_max": float(box_err), "kpt_p99": kpt_p99, "kpt_max": float(kpt_err.max())}
