"""``rtmo-video``: multi-person pose on a video file, camera, stream or folder of frames, with person IDs.

Each frame is JPEG-encoded and sent to the `rtmo` ensemble by one of
``--concurrency`` worker threads, each holding one request, so encoding,
transfer and the server's work overlap; replies are put back in frame order
(``InOrder``) before tracking, the JSON lines and the annotated video, which
all need frames in order. Worker threads are daemons: a request abandoned on
a second Ctrl-C never holds the process open.

Exit status: 0 every frame done; 1 some frames failed (the rest are
written); 2 bad arguments; 3 server unreachable, model not ready, or lost
mid-run; 4 source cannot be opened, stalled or was cut short; 130
interrupted (Ctrl-C or SIGTERM). Output files always hold every frame
finished before the stop, and are valid.
"""
from __future__ import annotations

import argparse
import queue
import signal
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any, Generic, TextIO, TypeVar

import cv2
import numpy as np

from .. import spec
from ..people import People
from . import exit_codes
from .arguments import add_server_options, percent, positive_float, positive_int, unit_float
from .overlay import DEFAULT_KPT_THR, draw_overlay
from .people import parse_outputs
from .records import people_record
from .transport import (
    DEFAULT_TIMEOUT_S,
    ModelNotReady,
    ServerUnavailable,
    check_ready,
    connect,
    describe_error,
    is_busy,
    is_request_error,
    model_config,
    normalize_url,
    run_requests,
    served_keypoint_names,
)
from .video_io import WRITER_CODECS, FrameSource, JsonLines, SourceError, VideoOut

DEFAULT_IN_FLIGHT = 4
DEFAULT_JPEG_QUALITY = 90
DEFAULT_SOURCE_TIMEOUT_S = 30.0
LATENCY_WINDOW = 500
"""The live line's percentiles cover the latest this many frames."""
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


@dataclass(frozen=True)
class Reply:
    people: People
    """latency_ms covers the JPEG encoding and the request's round trip."""
    fatal: bool = False
    """True when the server, not this frame, is the problem: no later frame can succeed."""


class FrameSender:
    """Encodes a frame and sends it as one request; safe to call from many threads at once.

    The gRPC client is shared (it is thread-safe); the HTTP client is not, so
    each thread gets its own.
    """

    def __init__(self, url: str, protocol: str, *, model: str = spec.ENSEMBLE_NAME,
                 timeout_s: float = DEFAULT_TIMEOUT_S, jpeg_quality: int = DEFAULT_JPEG_QUALITY) -> None:
        self.url, self.protocol, self.model = url, protocol, model
        self.timeout_s = timeout_s
        self.jpeg_quality = jpeg_quality
        self._local = threading.local()
        self._clients: list[Any] = []
        self._lock = threading.Lock()
        self._shared = connect(url, protocol, timeout_s=timeout_s) if protocol == "grpc" else None

    def client(self) -> Any:
        if self._shared is not None:
            return self._shared
        client = getattr(self._local, "client", None)
        if client is None:
            client = self._local.client = connect(self.url, self.protocol, timeout_s=self.timeout_s)
            with self._lock:
                self._clients.append(client)
        return client

    def encode(self, image: np.ndarray) -> bytes:
        ok, jpeg = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, self.jpeg_quality])
        if not ok:
            raise ValueError("JPEG encoding failed")
        return jpeg.tobytes()

    def __call__(self, image: np.ndarray | None, data: bytes | None = None) -> Reply:
        """Never raises: a failure comes back as a Reply whose people carry the error."""
        start = time.perf_counter()
        try:
            payload = data if data is not None else self.encode(image)
        except Exception as exc:  # a frame OpenCV cannot encode fails alone
            return Reply(People.failure(f"cannot encode frame: {describe_error(exc)}"))
        try:
            [outcome] = run_requests(self.client(), self.protocol, self.model, [[payload]],
                                     timeout_s=self.timeout_s)
        except Exception as exc:  # e.g. the HTTP client cannot even be created
            return Reply(People.failure(describe_error(exc)), fatal=True)
        latency_ms = (time.perf_counter() - start) * 1e3
        if outcome.error is not None:
            answered = is_request_error(outcome.error) or is_busy(outcome.error)  # this frame fails alone
            return Reply(People.failure(describe_error(outcome.error), latency_ms=latency_ms),
                         fatal=not answered)
        try:
            [people] = parse_outputs(outcome.outputs, latency_ms)
        except ValueError as exc:
            return Reply(People.failure(str(exc), latency_ms=latency_ms))
        return Reply(people)

    def close(self) -> None:
        for client in [*self._clients, *([self._shared] if self._shared is not None else [])]:
            try:
                client.close()
            except Exception:  # closing is best effort; the process is ending anyway
                pass


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


# --- outputs ------------------------------------------------------------------


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


# --- command line ---------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rtmo-video",
        description="Pose estimation with person IDs on a video, camera, stream or folder of frames, "
                    "served by the RTMO ensemble on Triton.",
        epilog=exit_codes.EPILOG,
    )
    parser.add_argument("source", metavar="SOURCE",
                        help="video file, camera index (0), stream URL (rtsp://..., http://...) "
                             "or folder of images")
    add_server_options(parser, concurrency=DEFAULT_IN_FLIGHT)
    parser.add_argument("--out", metavar="VIDEO",
                        help=f"annotated video ({', '.join(sorted(WRITER_CODECS))})")
    parser.add_argument("--jsonl", metavar="FILE", help="one JSON line per processed frame ('-' = stdout)")
    parser.add_argument("--no-track", action="store_true", help="no person IDs (track_id null)")
    parser.add_argument("--max-frames", type=positive_int, help="stop after this many source frames")
    parser.add_argument("--every", type=positive_int, default=1,
                        help="send every Nth frame; the video keeps all frames, skipped ones drawn with the "
                             "latest people (default %(default)s)")
    parser.add_argument("--jpeg-quality", type=percent, default=DEFAULT_JPEG_QUALITY,
                        help="JPEG quality of the frames sent, 1-100 (default %(default)s; "
                             "a folder's images are sent as they are)")
    parser.add_argument("--kpt-thr", type=unit_float, default=DEFAULT_KPT_THR,
                        help="keypoints scoring below this are neither drawn nor tracked "
                             "(default %(default)s)")
    parser.add_argument("--fps", type=positive_float,
                        help="frame rate for a folder, or a source that reports none (default 25)")
    parser.add_argument("--source-timeout", type=positive_float, default=DEFAULT_SOURCE_TIMEOUT_S,
                        help="seconds to wait for the source to open, and for each frame "
                             "(default %(default)s)")
    parser.add_argument("--quiet", action="store_true", help="no live progress line")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.out and Path(args.out).suffix.lower() not in WRITER_CODECS:
        parser.error(f"--out must end in one of {', '.join(sorted(WRITER_CODECS))}: {args.out}")
    guard = InterruptGuard()
    if threading.current_thread() is threading.main_thread():
        guard.install()  # a kill stops as cleanly as Ctrl-C
    try:
        return run(args, guard=guard)
    except KeyboardInterrupt:  # before the pipeline started: nothing to save
        print("interrupted", file=sys.stderr)
        return exit_codes.INTERRUPTED


def run(args: argparse.Namespace, log: TextIO = sys.stderr, guard: InterruptGuard | None = None) -> int:
    url = normalize_url(args.url, args.protocol)
    probe = connect(url, args.protocol, timeout_s=args.timeout)
    try:
        check_ready(probe, args.protocol, args.model, wait_s=args.wait)
        names = served_keypoint_names(model_config(probe, args.protocol, args.model))
    except (ServerUnavailable, ModelNotReady) as exc:
        print(f"error: {url}: {exc}", file=log)
        return exit_codes.SERVER
    finally:
        probe.close()

    source = FrameSource(args.source, timeout_s=args.source_timeout, max_frames=args.max_frames,
                         queue_size=2 * args.concurrency, fps=args.fps)
    try:
        src = source.open()
    except SourceError as exc:
        print(f"error: {exc}", file=log)
        return exit_codes.SOURCE
    outputs = video = sender = None
    try:
        try:
            video = VideoOut(args.out, fps=src.fps, size=(src.width, src.height)) if args.out else None
            jsonl = JsonLines(args.jsonl) if args.jsonl else None
        except (ValueError, OSError) as exc:
            if video is not None:
                video.close()
            print(f"error: {exc}", file=log)
            return exit_codes.USAGE
        tracker = None
        if not args.no_track:
            from .tracking import PoseTracker  # norfair is imported only when tracking

            tracker = PoseTracker(period=args.every, keypoint_thr=args.kpt_thr)
        outputs = Outputs(tracker=tracker, video=video, jsonl=jsonl, names=names, kpt_thr=args.kpt_thr)
        sender = FrameSender(url, args.protocol, model=args.model,
                             timeout_s=args.timeout, jpeg_quality=args.jpeg_quality)
        print(f"{args.source}: {src.kind} {src.width}x{src.height} at {src.fps:g} frames/s"
              + (f", {src.frame_count} frames" if src.frame_count else "")
              + f" -> {args.protocol} {url}, {args.concurrency} in flight", file=log)
        stats, status, message = stream(source, sender, outputs, in_flight=args.concurrency, every=args.every,
                                        keep_skipped=video is not None,
                                        reply_timeout_s=args.timeout + REPLY_GRACE_S,
                                        progress=Progress(log, enabled=not args.quiet), guard=guard)
    finally:
        source.close()
        if sender is not None:
            sender.close()
        if outputs is not None:
            with (guard or InterruptGuard()).held():  # an MP4 cut off inside release() has no index
                outputs.close()
    if message:
        print(message, file=log)
    print(summary(stats, source.dropped, args, url, outputs), file=log)
    if status == exit_codes.OK and stats.failed:
        return exit_codes.SOME_FAILED
    return status


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


def summary(stats: Stats, dropped: int, args: argparse.Namespace, url: str, outputs: Outputs | None) -> str:
    p50, p95 = stats.percentiles()
    parts = [f"{stats.processed} frame(s) processed of {stats.frames_read} read"]
    if stats.skipped:
        parts.append(f"{stats.skipped} skipped (--every {args.every})")
    if dropped:
        parts.append(f"{dropped} dropped by the live source (server slower than the source)")
    parts.append(f"{stats.failed} failed" + (f" (last: {stats.last_error})" if stats.failed else ""))
    line = (", ".join(parts) + f"; {stats.elapsed_s:.2f} s, {stats.fps:.2f} frames/s, "
            f"latency p50 {p50:.0f} ms p95 {p95:.0f} ms "
            f"({args.protocol} {url}, {args.concurrency} in flight)")
    if outputs is not None and outputs.tracker is not None:
        line += f"; {outputs.tracker.total_ids} track ID(s)"
    if outputs is not None and outputs.video is not None:
        line += f"; {outputs.video.frames} frame(s) written to {args.out}"
    return line


if __name__ == "__main__":
    sys.exit(main())
