"""Drawing people on the image the server saw.

Images are decoded exactly as the server decodes them (``served.image_io``)
so the returned pixel coordinates land where they belong.
"""
from __future__ import annotations

import cv2
import numpy as np

from .. import spec
from ..people import People

DEFAULT_KPT_THR = 0.3

# BGR; limbs and joints coloured by side so left/right swaps are visible at a glance
SIDE_COLORS = {"left": (0, 165, 255), "right": (255, 128, 0), "centre": (0, 220, 0)}
BOX_COLOR = (0, 255, 255)
_COORD_LIMIT = 1 << 20  # keeps cv2's int32 maths safe for far-off or non-finite points


def _side(name: str) -> str:
    return "left" if name.startswith("left_") else "right" if name.startswith("right_") else "centre"


def draw_overlay(image: np.ndarray, people: People, kpt_thr: float = DEFAULT_KPT_THR) -> np.ndarray:
    """A copy of ``image`` with every person's box, score, skeleton and keypoints.

    Keypoints scoring below ``kpt_thr`` are not drawn, nor are links touching them.
    """
    canvas = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR) if image.ndim == 2 else image[..., :3].copy()
    if people.num_people == 0:
        return canvas
    h, w = canvas.shape[:2]
    thick = max(1, round(max(h, w) / 400))
    radius = thick + 2
    kset = spec.KEYPOINT_SETS.get(people.num_keypoints)

    finite = np.isfinite(people.keypoints).all(-1)
    visible = finite & (people.keypoint_scores >= kpt_thr)  # [N, J]
    points = np.clip(np.nan_to_num(people.keypoints), -_COORD_LIMIT, _COORD_LIMIT).round().astype(np.int32)
    boxes = np.clip(np.nan_to_num(people.boxes), -_COORD_LIMIT, _COORD_LIMIT).round().astype(np.int32)

    for (x1, y1, x2, y2), score in zip(boxes.tolist(), people.scores.tolist(), strict=True):
        cv2.rectangle(canvas, (x1, y1), (x2, y2), BOX_COLOR, thick, cv2.LINE_AA)
        cv2.putText(canvas, f"{score:.2f}", (x1, max(y1 - 3 * thick, 10)), cv2.FONT_HERSHEY_SIMPLEX,
                    0.4 * thick, BOX_COLOR, thick, cv2.LINE_AA)

    if kset is not None:
        links = np.asarray(kset.skeleton, np.intp)  # [L, 2]
        shown = visible[:, links[:, 0]] & visible[:, links[:, 1]]  # [N, L]
        segments = np.stack([points[:, links[:, 0]], points[:, links[:, 1]]], axis=2)  # [N, L, 2, 2]
        link_sides = [_side(kset.names[a]) if _side(kset.names[a]) == _side(kset.names[b]) else "centre"
                      for a, b in kset.skeleton]
        for side, color in SIDE_COLORS.items():
            mask = shown & np.array([s == side for s in link_sides])[None]
            if mask.any():  # one polyline call per colour for all people's links
                cv2.polylines(canvas, list(segments[mask]), False, color, thick, cv2.LINE_AA)
        joint_colors = [SIDE_COLORS[_side(n)] for n in kset.names]
    else:
        joint_colors = [SIDE_COLORS["centre"]] * people.num_keypoints

    for person, joint in np.argwhere(visible).tolist():
        x, y = points[person, joint].tolist()
        cv2.circle(canvas, (x, y), radius, joint_colors[joint], -1, cv2.LINE_AA)
    return canvas
