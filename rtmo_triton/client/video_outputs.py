"""What ``rtmo-video`` writes per frame, in order: JSON lines, the annotated video, the live progress line."""
from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, TextIO

import cv2
import numpy as np

from ..people import People
from .overlay import DEFAULT_KPT_THR, draw_overlay
from .records import people_record
from .video_io import JsonLines, VideoOut

if TYPE_CHECKING:  # the pipeline imports Progress from here
    from .video_pipeline import Stats

LATENCY_WINDOW = 500
"""The live line's percentiles cover the latest this many frames."""


def frame_record(index: int, time_s: float, people: People, track_ids: Sequence[int | None],
                 names: Sequence[str] | None = None) -> dict[str, Any]:
    """``{"frame", "time_s", "people": [{"track_id", "box", "score", "keypoints": [...]}]}`` (+ ``error``).

    ``names`` (the served model's keypoint names) replace the names guessed
    from the keypoint count when they are as many.
    """
    base = people_record(people)
    rename = names is not None and len(names) == people.num_keypoints
    persons = []
    for track_id, person in zip(track_ids, base["people"], strict=True):
        if rename:
            for kpt, name in zip(person["keypoints"], names):
                kpt["name"] = name
        persons.append({"track_id": track_id, **person})
    record: dict[str, Any] = {"frame": index, "time_s": time_s}
    if "error" in base:
        record["error"] = base["error"]
    record["people"] = persons
    return record


def track_color(track_id: int) -> tuple[int, int, int]:
    """A stable, well-spread BGR colour per ID (golden-ratio hue steps)."""
    hue = int((track_id * 0.618034 % 1.0) * 180)
    return tuple(int(c) for c in cv2.cvtColor(np.uint8([[[hue, 200, 255]]]), cv2.COLOR_HSV2BGR)[0, 0])


def annotate(image: np.ndarray, people: People, track_ids: Sequence[int | None],
             kpt_thr: float = DEFAULT_KPT_THR) -> np.ndarray:
    """``draw_overlay`` plus each tracked person's ID in a box of its own colour."""
    canvas = draw_overlay(image, people, kpt_thr)
    scale = max(0.5, max(canvas.shape[:2]) / 1600)
    thick = max(1, round(2 * scale))
    for box, track_id in zip(np.nan_to_num(people.boxes).round().astype(int).tolist(), track_ids):
        if track_id is None:
            continue
        color = track_color(track_id)
        label = f"#{track_id}"
        (tw, th), base = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, scale, thick)
        # inside the box's top-left corner, kept on the picture
        x1 = min(max(box[0], 0), canvas.shape[1] - tw - 4)
        y1 = min(max(box[1], 0), canvas.shape[0] - th - base - 4)
        cv2.rectangle(canvas, (x1, y1), (x1 + tw + 4, y1 + th + base + 4), color, -1)
        cv2.putText(canvas, label, (x1 + 2, y1 + th + 2), cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), thick,
                    cv2.LINE_AA)
    return canvas


class Outputs:
    """The in-order consumer: tracks, writes JSON lines, draws and writes the video."""

    def __init__(self, *, tracker: Any = None, video: VideoOut | None = None, jsonl: JsonLines | None = None,
                 names: Sequence[str] | None = None, kpt_thr: float = DEFAULT_KPT_THR) -> None:
        self.tracker, self.video, self.jsonl, self.names, self.kpt_thr = tracker, video, jsonl, names, kpt_thr
        self._last: tuple[People, list[int | None]] | None = None

    def __call__(self, frame: Any, people: People | None) -> None:
        if people is not None:
            ids = self.tracker.update(people) if self.tracker else [None] * people.num_people
            self._last = (people, ids)
            if self.jsonl:
                self.jsonl.write(frame_record(frame.index, frame.time_s, people, ids, self.names))
        if self.video:
            image = frame.bgr()
            if image is None:  # an undecodable folder frame still takes its place in the video
                image = np.zeros((self.video.size[1], self.video.size[0], 3), np.uint8)
            self.video.write(annotate(image, *self._last, self.kpt_thr) if self._last else image)

    def close(self) -> None:
        for out in (self.video, self.jsonl):
            if out is not None:
                out.close()


class Progress:
    """The live line on stderr: rewritten in place on a terminal, a line every 10 s otherwise."""

    def __init__(self, stream: TextIO = sys.stderr, enabled: bool = True) -> None:
        self.stream = stream
        self.enabled = enabled
        self.tty = stream.isatty()
        self.interval_s = 0.5 if self.tty else 10.0
        self._last = time.perf_counter()  # the first line after one interval, not before any reply
        self._shown = False

    def update(self, stats: Stats, pending: int, force: bool = False) -> None:
        now = time.perf_counter()
        if not self.enabled or (not force and now - self._last < self.interval_s):
            return
        self._last = now
        p50, p95 = stats.percentiles(LATENCY_WINDOW)
        line = (f"{stats.processed} frames done, {stats.fps:.2f} frames/s, latency p50 {p50:.0f} ms "
                f"p95 {p95:.0f} ms, {pending} in flight")
        if stats.failed:
            line += f", {stats.failed} failed"
        if self.tty:
            self.stream.write(f"\r\x1b[K{line}")
            self._shown = True
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def end_line(self) -> None:
        if self._shown:
            self.stream.write("\n")
            self.stream.flush()
            self._shown = False


