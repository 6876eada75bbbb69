"""``rtmo-video``: multi-person pose on a video file, camera, stream or folder of frames, with person IDs.

The command line; the work is split by job: ``video_io`` reads the source and writes files,
``video_sender`` turns a frame into a request and a ``Reply``, ``video_pipeline`` keeps
``--concurrency`` requests in flight and puts replies back in frame order, ``video_outputs`` tracks,
draws and writes each frame. Exit status: ``exit_codes``; output files always hold every frame
finished before a stop, and are valid.
"""
from __future__ import annotations

import argparse
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

from . import exit_codes
from .arguments import add_server_options, percent, positive_float, positive_int, unit_float
from .overlay import DEFAULT_KPT_THR
from .transport import (
    ModelNotReady,
    ServerUnavailable,
    connect,
    normalize_url,
    served_keypoint_names,
)
from .video_io import WRITER_CODECS, FrameSource, JsonLines, SourceError, VideoOut
from .video_outputs import Outputs, Progress
from .video_pipeline import DEFAULT_IN_FLIGHT, REPLY_GRACE_S, InterruptGuard, Stats, stream
from .video_sender import DEFAULT_JPEG_QUALITY, FrameSender

DEFAULT_SOURCE_TIMEOUT_S = 30.0


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
        probe.ready(args.model, wait_s=args.wait)
        names = served_keypoint_names(probe.config(args.model))
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
