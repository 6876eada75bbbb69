"""Does a response of the `rtmo` ensemble keep its public contract? Used by the load test."""
from __future__ import annotations

from collections.abc import Callable

import numpy as np

from rtmo_triton import spec
from rtmo_triton.client.people import parse_outputs
from rtmo_triton.client.transport import served_keypoint_names

KEYPOINTS = spec.ENSEMBLE_OUTPUTS[3]


def served_keypoints(config: dict) -> int:
    """Keypoints per person of the served ensemble, from its config (HTTP or gRPC JSON): the build's
    ``keypoint_names`` parameter, else the KEYPOINTS output's dims ``[N, J, 2]``."""
    names = served_keypoint_names(config)
    if names:
        return len(names)
    [dims] = [o["dims"] for o in config.get("output", []) if o["name"] == KEYPOINTS]
    return int(dims[-2])


def contract_problem(as_numpy: Callable[[str], np.ndarray | None], num_keypoints: int) -> str | None:
    """What in a response breaks the ensemble's contract (``num_keypoints`` per person), or None."""
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
    if people.keypoints.shape[1] != num_keypoints:
        return f"{people.keypoints.shape[1]} keypoints, the served model has {num_keypoints}"
    return None
