"""Access to the reference fixtures in tests/fixtures and the people-matching rule.

Near-equal scores may swap order between implementations, so people are
matched by box IoU, never by index.
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from rtmo_triton.served.postprocess import box_iou

FIXTURES = Path(__file__).resolve().parent / "fixtures"
"""Made by mmpose 1.3.2 itself with deterministic random weights (``make_fixtures.py`` says what was kept)."""
RTMO_T = FIXTURES / "rtmo-t"
CHECKPOINT_T = RTMO_T / "rtmo-t_random_seed0.pth"
OUTPUT_FILES = sorted(RTMO_T.glob("outputs_rtmo-t_*.npz"))
IMAGES = FIXTURES / "images"
COCO_ANNOTATIONS = IMAGES / "coco" / "person_keypoints.json"
IMAGE_OF = {
    "000000000785": "coco/000000000785.jpg", "000000040083": "coco/000000040083.jpg",
    "000000196141": "coco/000000196141.jpg", "coco_000000197388": "coco/000000197388.jpg",
    "103319": "crowdpose/103319.jpg", "106848": "crowdpose/106848.jpg",
    "synth_457x331": "synth_457x331.png", "synth_640x480": "synth_640x480.png",
}
"""Fixture id → the image mmpose decoded for it."""
LAYER_IDS = ("synth_640x480", "103319")
"""Fixtures that keep every layer's activations (the others keep inputs, head outputs and predictions)."""

BOX_TOL_PX = 0.02
KPT_P99_TOL_PX = 0.1



def fixture_ids() -> list[str]:
    return [p.stem.removeprefix("outputs_rtmo-t_") for p in OUTPUT_FILES]


def load_output(name_or_path: str | Path) -> dict[str, np.ndarray]:
    """The reference's arrays, with ``img_bgr`` decoded from the image file as mmpose decoded it
    and ``input`` as the float32 the backbone saw."""
    path = Path(name_or_path)
    if not path.is_file():
        path = RTMO_T / f"outputs_rtmo-t_{name_or_path}.npz"
    with np.load(path) as data:
        out = {k: data[k] for k in data.files}
    out["input"] = out["input"].astype(np.float32)
    image = IMAGES / IMAGE_OF[path.stem.removeprefix("outputs_rtmo-t_")]
    out["img_bgr"] = cv2.imdecode(np.fromfile(image, np.uint8), cv2.IMREAD_COLOR)
    return out


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
    match = box_iou(boxes, ref_boxes).argmax(1)
    assert len(set(match.tolist())) == len(match), "two people matched the same reference person"
    box_err = np.abs(boxes - ref_boxes[match]).max()
    kpt_err = np.abs(keypoints - ref["pred_keypoints"][match])
    kpt_p99 = float(np.percentile(kpt_err, 99))
    assert box_err <= BOX_TOL_PX, f"box error {box_err:.4f} px > {BOX_TOL_PX}"
    assert kpt_p99 <= KPT_P99_TOL_PX, f"keypoint p99 error {kpt_p99:.4f} px > {KPT_P99_TOL_PX}"
    np.testing.assert_allclose(scores, ref["pred_bbox_scores"][match], atol=score_tol)
    np.testing.assert_allclose(keypoint_scores, ref["pred_keypoint_scores"][match], atol=score_tol)
    return {"box_max": float(box_err), "kpt_p99": kpt_p99, "kpt_max": float(kpt_err.max())}
