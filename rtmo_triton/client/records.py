"""People as plain JSON-ready dicts, keypoints named after the checkpoint's dataset."""
from __future__ import annotations

from typing import Any

import numpy as np

from .. import spec
from .people import People

COORD_DECIMALS = 2
"""0.01 px: finer than the model's own noise, coarse enough to keep files small."""
SCORE_DECIMALS = 4


def keypoint_names(num_keypoints: int) -> tuple[str, ...]:
    """The dataset's names for a known keypoint count, else ``kpt_<i>``."""
    known = spec.KEYPOINT_SETS.get(num_keypoints)
    return known.names if known else tuple(f"kpt_{i}" for i in range(num_keypoints))


def people_record(people: People, image: str | None = None,
                  size: tuple[int, int] | None = None) -> dict[str, Any]:
    """``{"image", "width", "height", "people": [{"box", "score", "keypoints": [...]}]}``.

    ``width``/``height`` appear when ``size`` (w, h) is known, ``error`` when the
    image failed.
    """
    record: dict[str, Any] = {"image": image}
    if size is not None:
        record["width"], record["height"] = int(size[0]), int(size[1])
    if people.error is not None:
        record["error"] = people.error
    names = keypoint_names(people.num_keypoints)
    boxes = np.round(people.boxes.astype(np.float64), COORD_DECIMALS).tolist()
    scores = np.round(people.scores.astype(np.float64), SCORE_DECIMALS).tolist()
    kpts = np.round(people.keypoints.astype(np.float64), COORD_DECIMALS).tolist()
    kpt_scores = np.round(people.keypoint_scores.astype(np.float64), SCORE_DECIMALS).tolist()
    record["people"] = [
        {
            "box": box,
            "score": score,
            "keypoints": [{"name": n, "x": x, "y": y, "score": s}
                          for n, (x, y), s in zip(names, person_kpts, person_scores, strict=True)],
        }
        for box, score, person_kpts, person_scores in zip(boxes, scores, kpts, kpt_scores, strict=True)
    ]
    return record
