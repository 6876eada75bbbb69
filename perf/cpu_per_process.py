"""Where the CPU goes: CPU milliseconds per image for each process of the served ensemble.

The served/bare ratio says how much slower the ensemble is than the bare
engine; this says why. A closed loop of N gRPC clients (in this process)
sends the 640×480 JPEG to `rtmo` while every server process's CPU time is
sampled before and after a window; each process's CPU time divided by the
images served in the window is its cost per image. The bare engine's cost
per image (same graph and thread setting, in this process) is measured
the same way, so "engine served" against "engine bare" shows the serving
overhead inside the engine and the other rows show the rest.

    python perf/cpu_per_process.py [--concurrency 2] [--seconds 30]
"""
from __future__ import annotations

import argparse
import csv
import os
import sys
import threading
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from perf.bare_onnxruntime import bare_engine, closed_loop  # noqa: E402
from perf.inputs import benchmark_jpegs  # noqa: E402
from rtmo_triton import spec  # noqa: E402
from rtmo_triton.serving.server import TritonServer, exit_on_sigterm  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
MODELS = (spec.PREPROCESS_NAME, spec.ENGINE_NAME, spec.DECODE_NAME)


def role(cmdline: list[str]) -> str:
    """Which part of the stack a process is: a Python model's stub (by model name), the server, other."""
    text = " ".join(cmdline)
    if "triton_python_backend_stub" in text:
        # the stub's arguments name the instance, e.g. rtmo_engine_0_1
        return next((m for m in MODELS if f" {m}_" in f" {text} "), "python stub (other)")
    if "tritonserver" in text:
        return "tritonserver (core, gRPC, ensemble)"
    return "other"


def cpu_seconds(proc: psutil.Process) -> float:
    try:
        times = proc.cpu_times()
        return times.user + times.system
    except psutil.Error:
        return 0.0


def server_cpu_per_image(server: TritonServer, jpeg: bytes, concurrency: int, warmup: float,
                         seconds: float) -> tuple[float, dict[str, float]]:
    """Images per second and CPU ms per image by role, over one window of a closed loop."""
    import tritonclient.grpc as grpcclient

    done, stop = [0], threading.Event()

    def client() -> None:
        c = grpcclient.InferenceServerClient(server.grpc_url)
        image = grpcclient.InferInput(spec.ENSEMBLE_INPUT, [1, 1], "BYTES")
        image.set_data_from_numpy(np.array([[jpeg]], dtype=object))
        while not stop.is_set():
            c.infer(spec.ENSEMBLE_NAME, [image])
            done[0] += 1

    threads = [threading.Thread(target=client, daemon=True) for _ in range(concurrency)]
    for t in threads:
        t.start()
    time.sleep(warmup)
    root = psutil.Process(server.process.pid)
    procs = [root, *root.children(recursive=True)]
    before = {p.pid: cpu_seconds(p) for p in procs}
    own0, n0, t0 = os.times(), done[0], time.perf_counter()
    time.sleep(seconds)
    elapsed, images = time.perf_counter() - t0, done[0] - n0
    per_role: dict[str, float] = defaultdict(float)
    for p in procs:
        try:
            per_role[role(p.cmdline())] += cpu_seconds(p) - before[p.pid]
        except psutil.Error:
            continue
    own1 = os.times()
    per_role["gRPC clients (this process)"] = own1.user + own1.system - own0.user - own0.system
    stop.set()
    for t in threads:
        t.join()
    return images / elapsed, {k: 1e3 * v / max(images, 1) for k, v in per_role.items()}


def bare_cpu_per_image(repo: Path, concurrency: int, seconds: float) -> tuple[float, float]:
    engine, x = bare_engine(repo)
    t0, c0 = time.perf_counter(), os.times()
    n = len(closed_loop(engine, x, concurrency, seconds))
    c1, elapsed = os.times(), time.perf_counter() - t0
    return n / elapsed, 1e3 * (c1.user + c1.system - c0.user - c0.system) / n


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model-repository", type=Path, default=ROOT / "model_repository")
    p.add_argument("--concurrency", type=int, default=2)
    p.add_argument("--seconds", type=float, default=30.0)
    p.add_argument("--warmup", type=float, default=6.0)
    p.add_argument("--csv", type=Path, default=ROOT / "reports" / "perf" / "cpu_per_process.csv")
    args = p.parse_args(argv)
    exit_on_sigterm()
    args.csv.parent.mkdir(parents=True, exist_ok=True)
    jpeg = benchmark_jpegs()[(640, 480)]
    bare_rate, bare_ms = bare_cpu_per_image(args.model_repository, args.concurrency, args.seconds)
    with TritonServer(args.model_repository, log_path=args.csv.parent / "tritonserver_cpu.log") as server:
        rate, per_role = server_cpu_per_image(server, jpeg, args.concurrency, args.warmup, args.seconds)
    rows = [("bare onnxruntime engine", bare_rate, bare_ms)]
    rows += [(name, rate, ms) for name, ms in sorted(per_role.items(), key=lambda kv: -kv[1]) if ms >= 0.05]
    print(f"concurrency {args.concurrency}: served {rate:.2f} images/s, bare {bare_rate:.2f} images/s")
    print(f"{'process':40s} {'CPU ms / image':>15s}")
    for name, _, ms in rows:
        print(f"{name:40s} {ms:15.1f}")
    served_total = sum(ms for name, _, ms in rows[1:])
    print(f"{'served total':40s} {served_total:15.1f}")
    with args.csv.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["process", "images_per_s", "cpu_ms_per_image", "concurrency", "cores"])
        for name, r, ms in rows:
            w.writerow([name, f"{r:.3f}", f"{ms:.2f}", args.concurrency, os.cpu_count()])
    print(f"written {args.csv}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
