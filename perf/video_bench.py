"""Frames/s of ``rtmo-video`` against a naive one-frame-at-a-time client, at 720p and 1080p.

``python -m perf.video_bench`` (``make bench-video``) starts a
tritonserver on the model repository (or uses ``--url``), writes a short
panning video per size, and runs on each:

- naive: read a frame, JPEG-encode it, send it, wait for the reply, track, repeat;
- pipelined: the tool's own path (reader thread, ``--concurrency`` requests,
  in-order reassembly, tracking), for each in-flight count.

It also times the JPEG round trip of one frame (the client's encode, the
server's decode, the same code the served preprocess runs) and the CPU that
the client and the server's processes spent per frame, which bounds what
sending raw frames through shared memory could gain: at most the JPEG share
of the CPU per frame, when the CPU is the limit.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from perf import processes
from perf.inputs import CROWD_PHOTO, SAMPLE_IMAGE
from perf.tables import markdown_table
from rtmo_triton import spec
from rtmo_triton.client.people import parse_outputs
from rtmo_triton.client.tracking import PoseTracker
from rtmo_triton.client.transport import PROTOCOLS, connect
from rtmo_triton.client.video_io import FrameSource
from rtmo_triton.client.video_outputs import Outputs
from rtmo_triton.client.video_pipeline import stream
from rtmo_triton.client.video_sender import DEFAULT_JPEG_QUALITY, FrameSender
from rtmo_triton.served.image_io import decode_bgr

SIZES = ((1280, 720), (1920, 1080))
PHOTOS = (CROWD_PHOTO, SAMPLE_IMAGE)
FPS = 25.0
PAN_PX = 4


def write_panning_video(path: Path, photo: np.ndarray, size: tuple[int, int], frames: int) -> Path:
    """A camera panning across ``photo``: consecutive frames differ like a real video's."""
    w, h = size
    wide = cv2.resize(photo, (w + PAN_PX * frames, h), interpolation=cv2.INTER_AREA)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), FPS, size)
    for i in range(frames):
        writer.write(np.ascontiguousarray(wide[:, PAN_PX * i:PAN_PX * i + w]))
    writer.release()
    return path


class CpuMeter:
    """CPU seconds spent by this process and by the server's process tree (Python stubs included)."""

    def __init__(self, server_pid: int | None) -> None:
        self.server_pid = server_pid

    def sample(self) -> tuple[float, float]:
        own = os.times()
        server = processes.cpu_seconds(processes.tree(self.server_pid)) if self.server_pid else 0.0
        return own.user + own.system, server


def naive(video: Path, url: str, protocol: str, quality: int) -> dict[str, float]:
    """One frame at a time, as the simplest client would do it (tracking too, as the tool does)."""
    client = connect(url, protocol)
    tracker = PoseTracker()
    cap = cv2.VideoCapture(str(video))
    latencies, frames = [], 0
    start = time.perf_counter()
    try:
        while True:
            ok, image = cap.read()
            if not ok:
                break
            t0 = time.perf_counter()
            jpeg = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])[1].tobytes()
            [outcome] = client.infer([[jpeg]])
            if outcome.error is not None:
                raise RuntimeError(f"request failed: {outcome.error}")
            tracker.update(parse_outputs(outcome.outputs)[0])
            latencies.append((time.perf_counter() - t0) * 1e3)
            frames += 1
    finally:
        cap.release()
        client.close()
    wall = time.perf_counter() - start
    return {"frames": frames, "fps": frames / wall, "p50_ms": _pct(latencies, 50),
            "p95_ms": _pct(latencies, 95)}


def pipelined(video: Path, url: str, protocol: str, quality: int, in_flight: int) -> dict[str, float]:
    """The tool's own path, tracking included, without output files."""
    sender = FrameSender(url, protocol, jpeg_quality=quality)
    source = FrameSource(str(video), queue_size=2 * in_flight)
    try:
        source.open()
        stats, status, message = stream(source, sender, Outputs(tracker=PoseTracker()), in_flight=in_flight)
    finally:
        source.close()
        sender.close()
    if status != 0 or stats.failed:
        raise RuntimeError(f"pipelined run failed: "
                           f"{message or f'{stats.failed} frame(s) failed, last: {stats.last_error}'}")
    p50, p95 = stats.percentiles()
    return {"frames": stats.processed, "fps": stats.fps, "p50_ms": p50, "p95_ms": p95}


def jpeg_costs(image: np.ndarray, quality: int, repeats: int = 20) -> dict[str, float]:
    """Median CPU ms of the client's encode and of the server's decode of one frame.

    Thread CPU time, not wall time, so other work on the machine does not
    inflate it; OpenCV is held to one thread so all of the encode's work is
    in this thread.
    """
    jpeg = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])[1].tobytes()
    encode, decode = [], []
    threads = cv2.getNumThreads()
    cv2.setNumThreads(1)
    try:
        for _ in range(repeats):
            t0 = time.thread_time()
            cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
            t1 = time.thread_time()
            decode_bgr(jpeg, spec.DEFAULT_MAX_PIXELS)
            t2 = time.thread_time()
            encode.append((t1 - t0) * 1e3)
            decode.append((t2 - t1) * 1e3)
    finally:
        cv2.setNumThreads(threads)
    return {"encode_ms": statistics.median(encode), "decode_ms": statistics.median(decode),
            "jpeg_kb": len(jpeg) / 1e3, "raw_kb": image.nbytes / 1e3}


def _pct(values: Sequence[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def measure(url: str, protocol: str, *, frames: int, in_flights: Sequence[int], quality: int, rounds: int,
            server_pid: int | None, workdir: Path, photo: np.ndarray, log=sys.stderr) -> list[dict]:
    """One row per run. The clients take turns, round after round (each round in a rotated order), so
    a burst of other work on the machine falls on all of them rather than on one."""
    client = connect(url, protocol)
    try:
        client.ready(wait_s=60)
    finally:
        client.close()
    meter = CpuMeter(server_pid)
    rows = []
    for size in SIZES:
        label = f"{size[0]}x{size[1]}"
        video = write_panning_video(workdir / f"pan_{label}.mp4", photo, size, frames)
        costs = jpeg_costs(cv2.resize(photo, size, interpolation=cv2.INTER_AREA), quality)
        warm = write_panning_video(workdir / f"warm_{label}.mp4", photo, size, 4)
        pipelined(warm, url, protocol, quality, 2)  # first requests of a size pay one-off costs
        clients = [("naive", 1)] + [("pipelined", n) for n in in_flights]
        for round_ in range(rounds):
            shift = round_ % len(clients)
            for kind, n in clients[shift:] + clients[:shift]:
                load_before = os.getloadavg()[0]
                before = meter.sample()
                result = naive(video, url, protocol, quality) if kind == "naive" else \
                    pipelined(video, url, protocol, quality, n)
                after = meter.sample()
                client_cpu, server_cpu = (a - b for a, b in zip(after, before))
                row = {"size": label, "client": kind, "in_flight": n, "round": round_, **result,
                       "client_cpu_ms": client_cpu * 1e3 / result["frames"],
                       "server_cpu_ms": server_cpu * 1e3 / result["frames"] if server_pid else float("nan"),
                       **costs, "load_before": load_before, "load_after": os.getloadavg()[0]}
                rows.append(row)
                print(f"{label} round {round_ + 1}/{rounds} {kind:9s} in flight {n}: {row['fps']:.2f} "
                      f"frames/s, p50 {row['p50_ms']:.0f} ms, p95 {row['p95_ms']:.0f} ms",
                      file=log, flush=True)
    return rows


def summarize(rows: list[dict]) -> list[dict]:
    """Per size and client: medians over the rounds."""
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["size"], r["client"], r["in_flight"]), []).append(r)
    keys = ("fps", "p50_ms", "p95_ms", "client_cpu_ms", "server_cpu_ms")
    return [{"size": size, "client": kind, "in_flight": n, "runs": len(rs),
             "fps_min": min(r["fps"] for r in rs), "fps_max": max(r["fps"] for r in rs),
             **{k: statistics.median(r[k] for r in rs) for k in keys},
             **{k: rs[0][k] for k in ("encode_ms", "decode_ms", "jpeg_kb", "raw_kb")}}
            for (size, kind, n), rs in groups.items()]


def report(rows: list[dict], protocol: str, frames: int, quality: int) -> str:
    loads = [r["load_before"] for r in rows] + [r["load_after"] for r in rows]
    table = summarize(rows)
    lines = [f"rtmo-video, {protocol}, {frames} frames per run, JPEG quality {quality}, "
             f"{os.cpu_count()} CPUs; medians of {table[0]['runs']} alternating runs; load average "
             f"{min(loads):.1f}-{max(loads):.1f} during the runs (other work on the machine slows them)",
             "",
             ""]
    naive_fps = {r["size"]: r["fps"] for r in table if r["client"] == "naive"}
    lines.append(markdown_table(
        ("frames", "client", "in flight", "frames/s (min-max)", "vs naive", "latency p50 / p95 ms",
         "CPU ms per frame: client / server"),
        [(r["size"], r["client"], r["in_flight"], f"{r['fps']:.2f} ({r['fps_min']:.2f}-{r['fps_max']:.2f})",
          f"{r['fps'] / naive_fps[r['size']]:.2f}x", f"{r['p50_ms']:.0f} / {r['p95_ms']:.0f}",
          f"{r['client_cpu_ms']:.0f} / {r['server_cpu_ms']:.0f}") for r in table]))
    lines += ["", "JPEG round trip of one frame (client encode + server decode, CPU time, median) "
              "against all CPU that the client and the server spent per frame in the fastest client:", ""]
    for size in dict.fromkeys(r["size"] for r in table):
        best = max((r for r in table if r["size"] == size), key=lambda r: r["fps"])
        jpeg = best["encode_ms"] + best["decode_ms"]
        total = best["client_cpu_ms"] + best["server_cpu_ms"]
        share = jpeg / total if total > 0 else float("nan")
        lines.append(f"- {size}: encode {best['encode_ms']:.1f} ms + decode {best['decode_ms']:.1f} ms = "
                     f"{jpeg:.1f} ms of {total:.0f} ms CPU per frame ({100 * share:.1f} %); frames/s gain "
                     f"from dropping JPEG at most {100 * (1 / (1 - share) - 1):.1f} % where CPU is the limit "
                     f"({best['jpeg_kb']:.0f} kB JPEG vs {best['raw_kb']:.0f} kB raw)")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m perf.video_bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-repository", type=Path, default=Path(spec.DEFAULT_REPOSITORY),
                        help="served on free loopback ports unless --url is given (default %(default)s)")
    parser.add_argument("--url", help="use this running server instead (no server CPU figures)")
    parser.add_argument("--protocol", choices=PROTOCOLS, default="grpc")
    parser.add_argument("--frames", type=int, default=24, help="frames per run (default %(default)s)")
    parser.add_argument("--rounds", type=int, default=3,
                        help="runs of each client, taken in turns (default %(default)s)")
    parser.add_argument("--concurrency", default="2,4",
                        help="requests in flight of each pipelined run, comma-separated "
                             "(default %(default)s)")
    parser.add_argument("--jpeg-quality", type=int, default=DEFAULT_JPEG_QUALITY)
    parser.add_argument("--photo", type=Path, help="picture to pan over (default: a fixture crowd photo)")
    parser.add_argument("--json", type=Path, help="also write the rows here")
    parser.add_argument("--server-log", type=Path, help="keep the server's log here")
    args = parser.parse_args(argv)
    photo_path = args.photo or next((p for p in PHOTOS if p.is_file()), None)
    if photo_path is None:
        parser.error(f"no photo found ({', '.join(map(str, PHOTOS))}); pass --photo")
    photo = cv2.imread(str(photo_path), cv2.IMREAD_COLOR)
    in_flights = [int(n) for n in args.concurrency.split(",") if n]

    with tempfile.TemporaryDirectory(prefix="rtmo-video-bench-") as tmp:
        workdir = Path(tmp)
        if args.url:
            rows = measure(args.url, args.protocol, frames=args.frames, in_flights=in_flights,
                           quality=args.jpeg_quality, rounds=args.rounds, server_pid=None, workdir=workdir,
                           photo=photo)
        else:
            from rtmo_triton.serve.local import TritonServer, exit_on_sigterm

            exit_on_sigterm()
            log = args.server_log or workdir / "tritonserver.log"
            with TritonServer(args.model_repository, log_path=log) as server:
                rows = measure(server.url(args.protocol), args.protocol, frames=args.frames,
                               in_flights=in_flights, quality=args.jpeg_quality, rounds=args.rounds,
                               server_pid=server.process.pid, workdir=workdir, photo=photo)
    print(report(rows, args.protocol, args.frames, args.jpeg_quality))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
