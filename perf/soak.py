"""``make soak``: sustained load of mixed image sizes on the served ``rtmo``, watching for failures
and for memory that keeps growing.

Every ``--every-s`` seconds it records the requests done and failed, latency p50/p99 of that
window and the resident memory of tritonserver and each Python stub, to a CSV; at the end it
prints the verdict: failures (must be 0) and RSS growth after the warm-up (must stay under 10 %).
``python -m perf.soak --model-repository R [--minutes 30] [--clients 4]``
"""
from __future__ import annotations

import argparse
import csv
import threading
import time
from pathlib import Path

import cv2
import numpy as np

from perf import processes
from perf.closed_loop import closed_loop
from rtmo_triton import spec
from rtmo_triton.serve.local import TritonServer, exit_on_sigterm

SIZES = ((640, 480), (1280, 720), (1920, 1080), (457, 331))
WARM_UP_MIN = 3.0
"""RSS growth is measured from the first sample after this many minutes."""


def jpegs(seed: int = 0) -> list[bytes]:
    """One random-texture JPEG per size: real decode and letterbox work for each."""
    rng = np.random.default_rng(seed)
    return [cv2.imencode(".jpg", cv2.GaussianBlur(rng.integers(0, 255, (h, w, 3), np.uint8), (9, 9), 0))[1]
            .tobytes() for w, h in SIZES]


def server_rss_mib(server: TritonServer) -> float:
    """Resident memory of tritonserver and its Python stubs, MiB."""
    return processes.rss_bytes(processes.tree(server.process.pid)) / 2**20


FIELDS = ("minute", "requests", "failed", "p50_ms", "p99_ms", "rss_mib")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m perf.soak", description=__doc__.split("\n")[0])
    p.add_argument("--model-repository", type=Path, default=Path(spec.DEFAULT_REPOSITORY))
    p.add_argument("--minutes", type=float, default=30.0)
    p.add_argument("--clients", type=int, default=4)
    p.add_argument("--every-s", type=float, default=30.0)
    p.add_argument("--out", type=Path, default=Path("reports/soak"))
    args = p.parse_args(argv)
    exit_on_sigterm()
    args.out.mkdir(parents=True, exist_ok=True)
    images, lock, window, rows = jpegs(), threading.Lock(), [], []

    def record(outcome) -> None:
        with lock:
            window.append(outcome)

    with (TritonServer(args.model_repository, log_path=args.out / "tritonserver.log") as server,
          closed_loop(server.grpc_url, images, clients=args.clients, record=record),
          open(args.out / "soak.csv", "w", newline="") as f):  # row by row: a stopped soak keeps its rows
        writer = csv.DictWriter(f, FIELDS)
        writer.writeheader()
        start = time.monotonic()
        while time.monotonic() - start < args.minutes * 60:
            time.sleep(args.every_s)
            with lock:
                done, window[:] = list(window), []
            ok = [o.latency_ms for o in done if o.error is None]
            rows.append({"minute": round((time.monotonic() - start) / 60, 2), "requests": len(done),
                         "failed": len(done) - len(ok),
                         "p50_ms": round(float(np.percentile(ok, 50)), 1) if ok else "",
                         "p99_ms": round(float(np.percentile(ok, 99)), 1) if ok else "",
                         "rss_mib": round(server_rss_mib(server), 1)})
            writer.writerow(rows[-1])
            f.flush()
            print("  ".join(f"{k} {v}" for k, v in rows[-1].items()), flush=True)
    if not rows:
        print(f"soak: no row ({args.minutes:g} min is shorter than one --every-s {args.every_s:g} s)")
        return 1
    failed = sum(r["failed"] for r in rows)
    settled = [r["rss_mib"] for r in rows if r["minute"] >= WARM_UP_MIN] or [rows[-1]["rss_mib"]]
    growth = 100 * (settled[-1] - settled[0]) / settled[0]
    print(f"soak: {sum(r['requests'] for r in rows)} requests, {failed} failed, RSS {rows[0]['rss_mib']} -> "
          f"{rows[-1]['rss_mib']} MiB, growth after {WARM_UP_MIN:g} min {growth:+.1f} % (limit 10 %)")
    return 0 if failed == 0 and growth < 10 else 1


if __name__ == "__main__":
    raise SystemExit(main())
