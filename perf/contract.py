"""Does a response of the `rtmo` ensemble keep its public contract? Used by the load test."""
from __future__ import annotations

from collections.abc import Callable

import numpy as np

from rtmo_triton import spec
from rtmo_triton.client.people import parse_outputs


def contract_problem(as_numpy: Callable[[str], np.ndarray | None]) -> str | None:
    """What in a response breaks the ensemble's contract, or None."""
    try:
        arrays = {n: as_numpy(n) for n in spec.ENSEMBLE_OUTPUTS}
        [people] = parse_outputs(arrays)
    except ValueError as exc:
        return str(exc)
    values = (people.boxes, people.scores, people.keypoints, people.keypoint_scores)
    if not all(np.isfinite(v).all() for v in values):
        return "non-finite values"
    if np.any(np.diff(people.scores) > 0):
        return "people not in descending score"
    if people.keypoints.shape[1] != spec.NUM_KEYPOINTS:
        return f"{people.keypoints.shape[1]} keypoints, expected {spec.NUM_KEYPOINTS}"
    return None
