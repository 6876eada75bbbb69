"""Stand-ins for a Triton server's answers, shared by the client tests."""
from __future__ import annotations

import numpy as np

from rtmo_triton import spec


def person(i: int, k: int, j: int) -> tuple[list[float], float, np.ndarray, np.ndarray]:
    """Person ``k`` of image ``i``: every value says where it came from."""
    box = [10.0 * i, 10.0 * k, 10.0 * i + 5, 10.0 * k + 5]
    kpts = np.stack([np.full(j, 100.0 * i + k), np.arange(j, dtype=np.float64)], -1)
    return box, 0.9 - 0.1 * k, kpts, np.linspace(0.0, 1.0, j)


def batched_outputs(counts: list[int], j: int = spec.NUM_KEYPOINTS, pad_to: int | None = None,
                    pad_value: float = 0.0) -> dict[str, np.ndarray]:
    """Ensemble outputs for images with ``counts`` people, padded like the server pads."""
    b, n = len(counts), max([*counts, 0]) if pad_to is None else pad_to
    num = np.array(counts, np.int32)[:, None]
    boxes = np.full((b, n, 4), pad_value, np.float32)
    scores = np.full((b, n), pad_value, np.float32)
    kpts = np.full((b, n, j, 2), pad_value, np.float32)
    kscores = np.full((b, n, j), pad_value, np.float32)
    for i, count in enumerate(counts):
        for k in range(count):
            boxes[i, k], scores[i, k], kpts[i, k], kscores[i, k] = person(i, k, j)
    return dict(zip(spec.ENSEMBLE_OUTPUTS, (num, boxes, scores, kpts, kscores), strict=True))


class FakeResult:
    def __init__(self, outputs: dict[str, np.ndarray]):
        self._outputs = outputs

    def as_numpy(self, name: str) -> np.ndarray | None:
        return self._outputs.get(name)
