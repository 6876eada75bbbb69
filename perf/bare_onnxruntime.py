"""The engine's ONNX graph in a bare onnxruntime session: the ceiling the served ensemble is held to.

Same graph file, same intra-op thread setting as the served engine (read
from its config), the same preprocessed 640×480 JPEG; N client threads each
run batch-1 inferences back to back for a fixed time (closed loop, like
perf_analyzer's concurrency). Prints and writes throughput and latency.

    python perf/bare_onnxruntime.py [--concurrency 1,2,4] [--seconds 20]
"""
from __future__ import annotations

import argparse
import csv
import sys
import threading
import time
from pathlib import Path

import numpy as np
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from perf.inputs import benchmark_jpegs  # noqa: E402
from rtmo_triton import spec  # noqa: E402
from rtmo_triton.export import onnx_metadata  # noqa: E402
from rtmo_triton.preprocess import preprocess  # noqa: E402
from rtmo_triton.serving.configs import engine_onnx  # noqa: E402
from rtmo_triton.serving.onnx_engine import OnnxEngine  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def engine_threads(repo: Path) -> int:
    """The served CPU engine's intra-op threads; 0 (every core) for a TensorRT repository, which has none."""
    config = text_format.Parse((repo / spec.ENGINE_NAME / "config.pbtxt").read_text(), mc.ModelConfig())
    threads = config.parameters.get("intra_op_threads")
    return int(threads.string_value) if threads is not None else 0


def bare_engine(repo: Path, image: tuple[int, int] = (640, 480)) -> tuple[OnnxEngine, np.ndarray]:
    """The repository's graph in its own session with the served thread setting, warmed up on the
    preprocessed benchmark JPEG of ``image`` size (returned as a batch of one)."""
    onnx = engine_onnx(repo)
    engine = OnnxEngine(onnx, engine_threads(repo))
    size = int(onnx_metadata(onnx)["input_size"])
    x, _ = preprocess(benchmark_jpegs()[image], size, spec.DEFAULT_MAX_PIXELS)
    engine.run(x[None])  # warm-up
    return engine, x[None]


def closed_loop(engine: OnnxEngine, x: np.ndarray, concurrency: int, seconds: float) -> list[float]:
    latencies: list[float] = []
    lock = threading.Lock()
    stop = time.perf_counter() + seconds

    def worker() -> None:
        mine = []
        while time.perf_counter() < stop:
            t0 = time.perf_counter()
            engine.run(x)
            mine.append(time.perf_counter() - t0)
        with lock:
            latencies.extend(mine)

    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return latencies


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model-repository", type=Path, default=ROOT / "model_repository")
    p.add_argument("--concurrency", default="1,2,4")
    p.add_argument("--seconds", type=float, default=20.0)
    p.add_argument("--csv", type=Path, default=ROOT / "reports" / "perf" / "bare_onnxruntime.csv")
    args = p.parse_args(argv)
    engine, x = bare_engine(args.model_repository)
    threads = engine_threads(args.model_repository)
    args.csv.parent.mkdir(parents=True, exist_ok=True)
    print(f"bare onnxruntime on {engine_onnx(args.model_repository)} "
          f"(intra_op_threads={threads or 'all cores'})")
    with args.csv.open("w", newline="") as f:
        out = csv.writer(f)
        out.writerow(["concurrency", "throughput_per_s", "p50_ms", "p95_ms", "p99_ms", "requests"])
        for c in map(int, args.concurrency.split(",")):
            t0 = time.perf_counter()
            lat = closed_loop(engine, x, c, args.seconds)
            rate = len(lat) / (time.perf_counter() - t0)
            p50, p95, p99 = np.percentile(np.array(lat) * 1e3, [50, 95, 99])
            print(f"concurrency {c}: {rate:.2f} infer/s, p50 {p50:.1f} p95 {p95:.1f} p99 {p99:.1f} ms")
            out.writerow([c, f"{rate:.4f}", f"{p50:.2f}", f"{p95:.2f}", f"{p99:.2f}", len(lat)])
    print(f"written {args.csv}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
