"""One image's people: what the decode model computes and what the client gets back.

Shared by the server side (``served.postprocess``) and the client (``client.people``) so a served
result and a local decode compare field by field. Plain numpy, so the repository can vendor it.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .spec import NUM_KEYPOINTS


@dataclass(frozen=True, eq=False)  # arrays have no truth value: compare fields yourself
class People:
    """People of one image, best first, in original-image pixels. A failed image has none and an ``error``."""

    boxes: np.ndarray  # [N, 4] x1, y1, x2, y2
    scores: np.ndarray  # [N]
    keypoints: np.ndarray  # [N, J, 2] x, y
    keypoint_scores: np.ndarray  # [N, J]
    error: str | None = None
    latency_ms: float = 0.0
    """Client side: round trip of the request that carried this image (shared by its batch)."""
    batch: int = 1
    """Client side: how many images that request carried."""

    @property
    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        return self.boxes, self.scores, self.keypoints, self.keypoint_scores

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def num_people(self) -> int:
        return int(self.scores.shape[0])

    @property
    def num_keypoints(self) -> int:
        return int(self.keypoint_scores.shape[1])

    @classmethod
    def empty(cls, num_keypoints: int = NUM_KEYPOINTS, **extra: object) -> People:
        z = np.zeros
        return cls(z((0, 4), np.float32), z(0, np.float32), z((0, num_keypoints, 2), np.float32),
                   z((0, num_keypoints), np.float32), **extra)

    @classmethod
    def failure(cls, error: str, *, latency_ms: float = 0.0, batch: int = 1) -> People:
        """An image the server could not (or was never asked to) process: no people."""
        return cls.empty(error=error, latency_ms=latency_ms, batch=batch)
