"""Frames in (video file, camera, stream URL, folder of images); annotated video and JSON lines out.

OpenCV's ``VideoCapture`` can block without end on a camera or stream that
stops sending, so the source is opened and read in a daemon thread and the
caller waits on a queue with a timeout: a stalled source becomes a
``SourceError``, never a hang.
"""
from __future__ import annotations

import json
import math
import os
import queue
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import cv2
import numpy as np

from .. import spec
from ..served.image_io import ImageError, decode_bgr
from .files import find_images

DEFAULT_FPS = 25.0
"""Frame rate for a folder of frames, or a source that reports none."""
EARLY_END_TOLERANCE = 2
"""Frames a file may fall short of its declared count (containers estimate it) before it counts as cut."""
WRITER_CODECS = {".mp4": "mp4v", ".m4v": "mp4v", ".mov": "mp4v", ".mkv": "mp4v", ".avi": "MJPG"}


class SourceError(RuntimeError):
    """The source cannot be opened, stalled, or ended before its frames did."""


@dataclass(frozen=True)
class Frame:
    index: int
    """Position in the source, from 0 (gaps mean frames dropped from a live source)."""
    time_s: float
    """Timestamp in the video for files and folders; seconds since opening for live sources."""
    image: np.ndarray | None
    """BGR pixels; None for a folder's frame, whose file bytes are sent as they are (see ``data``)."""
    data: bytes | None = None

    def bgr(self) -> np.ndarray | None:
        """The pixels, decoded as the server decodes them; None when they cannot be."""
        return self.image if self.image is not None else decode_or_none(self.data or b"")


@dataclass(frozen=True)
class SourceInfo:
    kind: str
    live: bool
    """A camera, or a stream that declares no length: frames come at the source's pace, not ours."""
    width: int
    height: int
    fps: float
    frame_count: int
    """As the container declares it; 0 when unknown (cameras, streams)."""


def source_kind(source: str) -> str:
    """``camera`` for an index, ``stream`` for a URL, ``folder`` for a directory, else ``file``."""
    if source.isdigit():
        return "camera"
    if "://" in source:
        return "stream"
    return "folder" if Path(source).is_dir() else "file"


class FrameSource:
    """Iterate to get frames in order; ``SourceError`` when the source fails, stalls or is cut short.

    ``timeout_s`` bounds the wait for opening and for each frame. A live source
    that delivers faster than frames are taken drops its oldest queued frames
    (counted in ``dropped``) so results stay current; files and folders never drop.
    """

    def __init__(self, source: str, *, timeout_s: float = 30.0, max_frames: int | None = None,
                 queue_size: int = 8, fps: float | None = None) -> None:
        self.source = source
        self.kind = source_kind(source)
        self.timeout_s = timeout_s
        self.max_frames = max_frames
        self.fps_override = fps
        self.dropped = 0
        self.live = self.kind == "camera"
        self.info: SourceInfo | None = None
        self._queue: queue.Queue = queue.Queue(maxsize=max(queue_size, 1))
        self._opening: queue.Queue = queue.Queue(maxsize=1)
        self._opened = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def open(self) -> SourceInfo:
        """Start reading; the source's size, frame rate and declared length."""
        if self.kind == "file" and not Path(self.source).exists():
            raise SourceError(f"no such file or folder: {self.source}")
        self._thread = threading.Thread(target=self._read, name="frame-source", daemon=True)
        self._thread.start()
        kind, payload = self._get(f"could not open {self.source} within {self.timeout_s:g} s", self._opening)
        if kind == "error":
            raise SourceError(payload)
        self.info = payload
        return payload

    def __iter__(self) -> Iterator[Frame]:
        if self.info is None:
            self.open()
        while True:
            kind, payload = self._get(f"no frame from {self.source} for {self.timeout_s:g} s (stalled)")
            if kind == "frame":
                yield payload
            elif kind == "end":
                return
            else:
                raise SourceError(payload)

    def close(self) -> None:
        """Stop the reader (it may stay blocked inside OpenCV; it is a daemon and holds nothing)."""
        self._stop.set()

    def __enter__(self) -> FrameSource:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # --- reader thread ---------------------------------------------------------

    def _get(self, stall_message: str, source: queue.Queue | None = None) -> tuple[str, Any]:
        try:
            return (source or self._queue).get(timeout=self.timeout_s)
        except queue.Empty:
            self.close()
            raise SourceError(stall_message) from None

    def _put(self, item: tuple[str, Any], droppable: bool = False) -> bool:
        """Queue an item; False once the consumer has stopped."""
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                if droppable:
                    try:
                        self._queue.get_nowait()
                        self.dropped += 1
                    except queue.Empty:
                        pass
        return False

    def _read(self) -> None:
        try:
            frames = self._folder_frames() if self.kind == "folder" else self._capture_frames()
            for frame in frames:
                if not self._put(("frame", frame), droppable=self.live):
                    return
            self._put(("end", None))
        except SourceError as exc:
            self._fail(str(exc))
        except Exception as exc:  # anything else from OpenCV or the file system still reaches the caller
            self._fail(f"{self.source}: {type(exc).__name__}: {exc}")

    def _announce(self, info: SourceInfo) -> None:
        self._opened = True
        self._opening.put(("info", info))

    def _fail(self, message: str) -> None:
        if self._opened:
            self._put(("error", message))
        else:
            self._opening.put(("error", message))

    def _limit(self, count: int) -> int:
        return count if self.max_frames is None else min(count, self.max_frames)

    def _capture_frames(self) -> Iterator[Frame]:
        timeout_ms = int(self.timeout_s * 1000)
        target: int | str = int(self.source) if self.kind == "camera" else self.source
        params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, timeout_ms, cv2.CAP_PROP_READ_TIMEOUT_MSEC, timeout_ms]
        cap = cv2.VideoCapture(target, cv2.CAP_ANY, params)
        try:
            if not cap.isOpened():
                what = {"camera": "camera", "stream": "stream"}.get(self.kind, "video file")
                raise SourceError(f"cannot open {self.source} as a {what}")
            fps = self.fps_override or _valid_fps(cap.get(cv2.CAP_PROP_FPS))
            declared = max(int(cap.get(cv2.CAP_PROP_FRAME_COUNT)), 0) if self.kind != "camera" else 0
            self.live = self.kind == "camera" or (self.kind == "stream" and not declared)
            ok, image = cap.read()
            if not ok:
                raise SourceError(f"{self.source} opened but gave no frame")
            h, w = image.shape[:2]
            self._announce(SourceInfo(self.kind, self.live, w, h, fps, declared))
            start = time.monotonic()
            index = 0
            while True:
                if self.live:
                    time_s = time.monotonic() - start
                else:
                    msec = cap.get(cv2.CAP_PROP_POS_MSEC)
                    time_s = msec / 1000 if msec > 0 or index == 0 else index / fps
                yield Frame(index, round(time_s, 6), image)
                index += 1
                if self.max_frames is not None and index >= self.max_frames or self._stop.is_set():
                    return
                ok, image = cap.read()
                if not ok:
                    break
            if self.live:
                raise SourceError(f"{self.source} stopped delivering frames after {index} (dropped or ended)")
            if declared and index < self._limit(declared) - EARLY_END_TOLERANCE:
                raise SourceError(f"{self.source} ended after {index} of the {declared} frames it declares "
                                  "(cut short or damaged)")
        finally:
            cap.release()

    def _folder_frames(self) -> Iterator[Frame]:
        files = find_images([self.source])
        if not files:
            raise SourceError(f"no images in folder {self.source}")
        files = files[:self._limit(len(files))]
        fps = self.fps_override or DEFAULT_FPS
        for index, file in enumerate(files):
            try:
                data = file.path.read_bytes()
            except OSError as exc:
                raise SourceError(f"cannot read {file.path}: {exc.strerror or exc}") from exc
            if index == 0:
                first = decode_or_none(data)
                if first is None:
                    raise SourceError(f"{file.path} is not an image OpenCV can decode")
                h, w = first.shape[:2]
                self._announce(SourceInfo("folder", False, w, h, fps, len(files)))
            yield Frame(index, round(index / fps, 6), None, data)
            if self._stop.is_set():
                return


def decode_or_none(data: bytes) -> np.ndarray | None:
    try:
        return decode_bgr(data, spec.DEFAULT_MAX_PIXELS)
    except ImageError:
        return None


def _valid_fps(value: float) -> float:
    """Cameras and streams sometimes report 0, NaN or absurd rates."""
    return value if math.isfinite(value) and 0 < value <= 1000 else DEFAULT_FPS


class VideoOut:
    """An annotated video of the source's size and frame rate (frames of another size are resized)."""

    def __init__(self, path: str | os.PathLike, *, fps: float, size: tuple[int, int]) -> None:
        self.path = Path(path)
        codec = WRITER_CODECS.get(self.path.suffix.lower())
        if codec is None:
            raise ValueError(f"--out must end in one of {', '.join(sorted(WRITER_CODECS))}: {self.path}")
        self.size = size
        self.frames = 0
        self._writer = cv2.VideoWriter(str(self.path), cv2.VideoWriter_fourcc(*codec), fps, size)
        if not self._writer.isOpened():
            raise ValueError(f"cannot write video {self.path} ({codec})")

    def write(self, image: np.ndarray) -> None:
        if (image.shape[1], image.shape[0]) != self.size:
            image = cv2.resize(image, self.size, interpolation=cv2.INTER_AREA)
        self._writer.write(image)
        self.frames += 1

    def close(self) -> None:
        """Finish the file (an MP4 is unreadable until its index is written here)."""
        self._writer.release()


class JsonLines:
    """One JSON object per line, flushed as written, so an interrupted run leaves a valid file."""

    def __init__(self, path: str | os.PathLike) -> None:
        self._file: TextIO = sys.stdout if str(path) == "-" else open(path, "w")  # noqa: SIM115

    def write(self, record: dict) -> None:
        self._file.write(json.dumps(record, separators=(",", ":")) + "\n")
        self._file.flush()

    def close(self) -> None:
        if self._file is not sys.stdout:
            self._file.close()
