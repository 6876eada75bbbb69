"""Stable person IDs across video frames, from norfair's tracker fed with RTMO's skeletons.

Why norfair: it tracks arbitrary point sets (one Kalman filter over every
keypoint) and takes a pluggable distance, so a person is matched by their
skeleton rather than by box overlap alone, which keeps two people apart while
their boxes overlap as they cross. It is small (numpy, scipy, filterpy) and
pure Python. ByteTrack was the other candidate: supervision 0.31 no longer
ships it, and its successor package (``trackers``) requires numpy 2 and the GUI
build of OpenCV, which clash with this project's pins.

Each person is tracked as its keypoints plus the two corners of its box. The
box corners always take part (so a person whose keypoints are all unsure is
still matched by its box); a keypoint takes part when it scores at least
``keypoint_thr`` in both the detection and the track's last detection. The
distance is the mean distance of those points to the track's predicted
points, in units of the person's size, so one threshold serves near and far
people. Tracking has no appearance model: a person who stays unseen longer
than ``memory_frames`` comes back under a new ID.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
from norfair import Detection, Tracker
from norfair.distances import Distance

from ..people import People
from .overlay import DEFAULT_KPT_THR

DISTANCE_THRESHOLD = 0.5
"""Largest mean point distance, in person sizes (sqrt of box area), that still matches a track."""
MEMORY_FRAMES = 30
"""How long a lost track waits for its person to come back (one second at 30 frames/s)."""
_BOX_POINTS = 2


class _Tag(NamedTuple):
    index: int
    """The person's row in this frame's People."""
    size: float
    """sqrt(box area) in pixels, at least 1."""


class _PoseDistance(Distance):
    """Candidates × tracks matrix of mean point distances over the points both are sure of."""

    def __init__(self, keypoint_thr: float) -> None:
        self.keypoint_thr = keypoint_thr

    def get_distances(self, objects, candidates) -> np.ndarray:
        if not objects or not candidates:
            return np.full((len(candidates or ()), len(objects)), np.inf, np.float32)
        points = np.stack([c.points for c in candidates])  # [C, P, 2]
        sure = np.stack([c.scores >= self.keypoint_thr for c in candidates])  # [C, P]
        predicted = np.stack([o.estimate for o in objects])  # [O, P, 2]
        tracked = np.stack([o.last_detection.scores >= self.keypoint_thr for o in objects])  # [O, P]
        size = np.array([o.last_detection.data.size for o in objects])  # [O]
        both = sure[:, None] & tracked[None]  # [C, O, P]
        gap = np.linalg.norm(points[:, None] - predicted[None], axis=-1)  # [C, O, P]
        mean = np.where(both, gap, 0.0).sum(-1) / np.maximum(both.sum(-1), 1)
        return np.where(both.any(-1), mean / size[None], np.inf)


class PoseTracker:
    """Feed it each processed frame's people in frame order; it returns their track IDs.

    ``period`` is how many source frames separate two processed frames
    (``--every``), so the track memory stays ``memory_frames`` source frames.
    """

    def __init__(self, *, period: int = 1, keypoint_thr: float = DEFAULT_KPT_THR,
                 distance_threshold: float = DISTANCE_THRESHOLD, memory_frames: int = MEMORY_FRAMES) -> None:
        if period < 1:
            raise ValueError(f"period must be >= 1, not {period}")
        self.period = period
        memory = max(math.ceil(memory_frames / period), 2)
        # a track gets its ID on its second detection: one-frame flickers never get one
        self._tracker = Tracker(
            distance_function="euclidean", distance_threshold=distance_threshold,
            hit_counter_max=memory, initialization_delay=min(period, memory - 1),
            detection_threshold=keypoint_thr * (1 - 1e-6),  # norfair keeps points scoring above it
        )
        # norfair's constructor takes a name or a per-pair function; a vectorized Distance goes in here
        self._tracker.distance_function = _PoseDistance(keypoint_thr)

    def update(self, people: People) -> list[int | None]:
        """One ID per person (None while a new track is unconfirmed); a failed frame counts as empty."""
        return self.update_arrays(people.boxes, people.keypoints, people.keypoint_scores)

    def update_arrays(self, boxes: np.ndarray, keypoints: np.ndarray,
                      keypoint_scores: np.ndarray) -> list[int | None]:
        """As ``update``, from the arrays ([N, 4], [N, J, 2], [N, J])."""
        detections = [_detection(i, box, kpts, kpt_scores)
                      for i, (box, kpts, kpt_scores) in enumerate(zip(boxes, keypoints, keypoint_scores))]
        ids: list[int | None] = [None] * len(detections)
        this_frame = {id(d) for d in detections}
        for track in self._tracker.update(detections, period=self.period):
            if id(track.last_detection) in this_frame:  # matched now, not coasting on a prediction
                ids[track.last_detection.data.index] = track.id
        return ids

    @property
    def total_ids(self) -> int:
        """IDs handed out so far."""
        return self._tracker.total_object_count


def _detection(index: int, box: Sequence[float], keypoints: np.ndarray,
               keypoint_scores: np.ndarray) -> Detection:
    box = np.nan_to_num(np.asarray(box, np.float64))
    kpts = np.asarray(keypoints, np.float64)
    finite = np.isfinite(kpts).all(-1)
    points = np.concatenate([np.where(finite[:, None], kpts, 0.0), box.reshape(_BOX_POINTS, 2)])
    point_scores = np.concatenate([np.where(finite, keypoint_scores, 0.0), np.ones(_BOX_POINTS)])
    size = math.sqrt(max((box[2] - box[0]) * (box[3] - box[1]), 1.0))
    return Detection(points, point_scores, data=_Tag(index, size))
