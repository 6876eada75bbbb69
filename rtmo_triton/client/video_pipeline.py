"""How ``rtmo-video`` keeps N requests in flight and hands replies on in frame order: the ordering
(``InOrder``), the request threads, the stats, the ``Pipeline`` and ``stream`` that drives it, and the
signal guard that lets a stop land between frames, never inside one."""
from __future__ import annotations

import queue
import signal
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from itertools import islice
from typing import Any, Generic, TypeVar

import numpy as np

from ..people import People
from . import exit_codes
from .transport import DEFAULT_TIMEOUT_S
from .video_io import SourceError
from .video_outputs import Progress
from .video_sender import Reply

DEFAULT_IN_FLIGHT = 4
LATENCY_KEPT = 100_000
"""The summary's percentiles cover the latest this many frames (about an hour at 30 frames/s): a
camera stream may run for weeks, and its latencies must not grow without bound."""
REPLY_GRACE_S = 10.0
"""Beyond the request timeout, how long to wait for a worker before declaring the server lost."""

T = TypeVar("T")


class ServerLost(RuntimeError):
    """The server stopped answering mid-run (unreachable, timed out)."""


class InOrder(Generic[T]):
    """Releases items in sequence order (first, first + 1, ...) whatever order they arrive in."""

    def __init__(self, first: int = 0) -> None:
        self._next = first
        self._waiting: dict[int, T] = {}

    def push(self, seq: int, item: T) -> list[T]:
        """Store ``item``; return every item now releasable, in order (empty while ``next`` is missing)."""
        if seq < self._next or seq in self._waiting:
            raise ValueError(f"sequence number {seq} given twice")
        self._waiting[seq] = item
        released = []
        while self._next in self._waiting:
            released.append(self._waiting.pop(self._next))
            self._next += 1
        return released

    @property
    def next(self) -> int:
        """The sequence number everything else waits for."""
        return self._next

    def __len__(self) -> int:
        return len(self._waiting)


class InterruptGuard:
    """Ctrl-C and SIGTERM raise KeyboardInterrupt, except inside ``held()``, where they wait for its end.

    A frame is then written to every output or to none, so the JSON lines and
    the video agree after a stop. Without ``install()`` (tests, threads) it is
    a no-op.
    """

    def __init__(self) -> None:
        self._depth = 0
        self._pending = False

    def install(self) -> None:
        """Take SIGTERM, and SIGINT unless the shell set it to be ignored (a background job)."""
        if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
            signal.signal(signal.SIGINT, self._handle)
        signal.signal(signal.SIGTERM, self._handle)

    def _handle(self, signum: int, frame: Any) -> None:
        if self._depth:
            self._pending = True
        else:
            raise KeyboardInterrupt

    @contextmanager
    def held(self) -> Iterator[None]:
        self._depth += 1
        try:
            yield
        finally:
            self._depth -= 1
            if not self._depth and self._pending:
                self._pending = False
                raise KeyboardInterrupt


class _Workers:
    """``n`` daemon threads taking (seq, frame) jobs, each with at most one request outstanding."""

    def __init__(self, n: int, send: Callable[..., Reply]) -> None:
        self.jobs: queue.Queue = queue.Queue()
        self.done: queue.Queue = queue.Queue()
        self._n = n
        for k in range(n):
            threading.Thread(target=self._loop, args=(send,), name=f"rtmo-request-{k}", daemon=True).start()

    def _loop(self, send: Callable[..., Reply]) -> None:
        while (job := self.jobs.get()) is not None:
            seq, frame = job
            self.done.put((seq, frame, send(frame.image, frame.data)))

    def close(self) -> None:
        for _ in range(self._n):
            self.jobs.put(None)


@dataclass
class Stats:
    frames_read: int = 0
    processed: int = 0
    """Frames whose reply came back and was written, failed ones included."""
    failed: int = 0
    last_error: str | None = None
    skipped: int = 0
    """Frames not sent because of ``--every``."""
    started: float = field(default_factory=time.perf_counter)
    finished: float | None = None
    latencies_ms: deque[float] = field(default_factory=lambda: deque(maxlen=LATENCY_KEPT))

    @property
    def elapsed_s(self) -> float:
        return (self.finished or time.perf_counter()) - self.started

    @property
    def fps(self) -> float:
        return self.processed / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def percentiles(self, window: int | None = None) -> tuple[float, float]:
        """Latency p50 and p95 in ms (NaN before the first reply)."""
        lat = list(islice(reversed(self.latencies_ms), window)) if window else self.latencies_ms
        if not lat:
            return float("nan"), float("nan")
        p50, p95 = np.percentile(lat, [50, 95])
        return float(p50), float(p95)


class Pipeline:
    """Sends frames with up to ``in_flight`` requests outstanding and hands results on in frame order.

    ``emit(frame, people)`` runs in the caller's thread, in source order;
    ``people`` is None for a frame skipped by ``every`` (passed on only when
    ``keep_skipped``, e.g. to keep the output video's length).
    """

    def __init__(self, send: Callable[..., Reply], emit: Callable[[Any, People | None], None], *,
                 in_flight: int = DEFAULT_IN_FLIGHT, every: int = 1, keep_skipped: bool = False,
                 reply_timeout_s: float = DEFAULT_TIMEOUT_S + REPLY_GRACE_S,
                 guard: InterruptGuard | None = None) -> None:
        self.emit = emit
        self.guard = guard or InterruptGuard()
        self.in_flight = in_flight
        self.every = every
        self.keep_skipped = keep_skipped
        self.reply_timeout_s = reply_timeout_s
        self.stats = Stats()
        self.pending = 0
        self._order: InOrder[tuple[Any, People | None]] = InOrder()
        self._seq = 0
        self._workers = _Workers(in_flight, send)

    def feed(self, frame: Any) -> None:
        """Queue one source frame (blocks while ``in_flight`` requests are outstanding)."""
        send = self.stats.frames_read % self.every == 0
        self.stats.frames_read += 1
        if not send:
            self.stats.skipped += 1
            if not self.keep_skipped:
                return
        seq, self._seq = self._seq, self._seq + 1
        if send:
            while self.pending >= self.in_flight:
                self._settle(block=True)
            self._workers.jobs.put((seq, frame))
            self.pending += 1
        else:
            self._release(seq, frame, None)
        while self._settle(block=False):
            pass

    def finish(self) -> None:
        """Wait for every outstanding reply and emit it."""
        while self.pending:
            self._settle(block=True)
        self.stats.finished = time.perf_counter()

    def close(self) -> None:
        self._workers.close()
        if self.stats.finished is None:
            self.stats.finished = time.perf_counter()

    def _settle(self, block: bool) -> bool:
        try:
            if block:
                seq, frame, reply = self._workers.done.get(timeout=self.reply_timeout_s)
            else:
                seq, frame, reply = self._workers.done.get_nowait()
        except queue.Empty:
            if block:
                raise ServerLost(f"no reply within {self.reply_timeout_s:g} s") from None
            return False
        with self.guard.held():
            self.pending -= 1
            if reply.fatal:
                raise ServerLost(reply.people.error)
            self._release(seq, frame, reply.people)
        return True

    def _release(self, seq: int, frame: Any, people: People | None) -> None:
        with self.guard.held():
            for frame_, people_ in self._order.push(seq, (frame, people)):
                if people_ is not None:
                    self.stats.processed += 1
                    if not people_.ok:
                        self.stats.failed += 1
                        self.stats.last_error = people_.error
                    self.stats.latencies_ms.append(people_.latency_ms)
                self.emit(frame_, people_)


def stream(frames: Iterable, sender: Callable[..., Reply], outputs: Callable[[Any, People | None], None], *,
           in_flight: int, every: int = 1, keep_skipped: bool = False,
           reply_timeout_s: float = DEFAULT_TIMEOUT_S + REPLY_GRACE_S,
           progress: Progress | None = None,
           guard: InterruptGuard | None = None) -> tuple[Stats, int, str | None]:
    """Run frames through the pipeline; (stats, exit status, message for the user)."""
    pipeline = Pipeline(sender, outputs, in_flight=in_flight, every=every, keep_skipped=keep_skipped,
                        reply_timeout_s=reply_timeout_s, guard=guard)
    progress = progress or Progress(enabled=False)
    status, message = exit_codes.OK, None
    try:
        try:
            for frame in frames:
                pipeline.feed(frame)
                progress.update(pipeline.stats, pipeline.pending)
            pipeline.finish()
        except SourceError as exc:  # keep what is in flight, then report
            status, message = exit_codes.SOURCE, f"error: {exc}"
            pipeline.finish()
        except KeyboardInterrupt:
            status, message = exit_codes.INTERRUPTED, "interrupted: output files hold every frame finished"
            _close_frames(frames)
            progress.end_line()
            print(f"stopping: waiting for {pipeline.pending} request(s) in flight "
                  "(Ctrl-C again to drop them)", file=progress.stream)
            try:
                pipeline.finish()
            except KeyboardInterrupt:
                pass
    except ServerLost as exc:
        status, message = exit_codes.SERVER, f"error: server lost: {exc}"
    finally:
        pipeline.close()
        progress.update(pipeline.stats, pipeline.pending, force=True)
        progress.end_line()
    return pipeline.stats, status, message


def _close_frames(frames: Iterable) -> None:
    close = getattr(frames, "close", None)
    if callable(close):
        close()
