"""``make perf``, second part: served `rtmo` against the bare engine in alternation, and where the CPU goes.

Bare: the repository's ONNX graph in one onnxruntime session in this process with the served engine's
threads (``auto`` resolved as the served engine resolves it), N threads running the preprocessed
640×480 JPEG back to back (a closed loop, like perf_analyzer's concurrency). It skips the JPEG decode,
letterbox and decode that the ensemble runs on the same cores.

On a shared CPU two sweeps minutes apart compare the machine's moods, so each round measures the served
ensemble (perf_analyzer) and then the bare loop at each concurrency, and takes the ratio within the
round. Around each served run every server process's CPU time (and perf_analyzer's) is divided by the
images the ensemble served (Triton's statistics): CPU ms per image by process, beside the bare loop's.

    python -m perf.served_vs_bare [--concurrency 2,4] [--rounds 3] [--seconds 15]
"""
from __future__ import annotations

import argparse
import csv
import os
import statistics
import sys
import threading
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from perf import processes
from perf.inputs import benchmark_jpegs, write_input_data
from perf.perf_sweep import perf_analyzer, perf_analyzer_missing, server_stats
from rtmo_triton import spec
from rtmo_triton.build.configs import engine_onnx
from rtmo_triton.build.export import onnx_metadata
from rtmo_triton.serve.local import TritonServer, exit_on_sigterm
from rtmo_triton.served.cpus import engine_threads
from rtmo_triton.served.onnx_engine import OnnxEngine
from rtmo_triton.served.preprocess import preprocess

ROOT = Path(__file__).resolve().parents[1]
IMAGE = (640, 480)
BARE = "bare onnxruntime engine"


def served_threads(repo: Path) -> int:
    """The served CPU engine's intra-op threads; 0 (every core) for a TensorRT repository, which has none."""
    config = text_format.Parse((repo / spec.ENGINE_NAME / "config.pbtxt").read_text(), mc.ModelConfig())
    if spec.Param.INTRA_OP_THREADS not in config.parameters:
        return 0
    threads = config.parameters[spec.Param.INTRA_OP_THREADS].string_value
    if threads == spec.AUTO_THREADS:
        return engine_threads(sum(max(1, g.count) for g in config.instance_group))
    return int(threads)


def bare_engine(repo: Path) -> tuple[OnnxEngine, np.ndarray]:
    """The repository's graph in a session of its own, warmed up on the preprocessed benchmark JPEG."""
    onnx = engine_onnx(repo)
    engine = OnnxEngine(onnx, served_threads(repo))
    size = int(onnx_metadata(onnx)[spec.OnnxMeta.INPUT_SIZE])
    x = preprocess(benchmark_jpegs()[IMAGE], size, spec.DEFAULT_MAX_PIXELS)[0][None]
    engine.run(x)
    return engine, x


def engine_closed_loop(engine: OnnxEngine, x: np.ndarray, concurrency: int, seconds: float) -> int:
    """Inferences completed by ``concurrency`` threads running back to back for ``seconds``."""
    done, stop = [0] * concurrency, time.perf_counter() + seconds

    def worker(i: int) -> None:
        while time.perf_counter() < stop:
            engine.run(x)
            done[i] += 1

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(done)


def cpu_by_role(procs: list) -> dict[str, float]:
    """The server tree's CPU seconds by role, and perf_analyzer's (this process's waited-for children)."""
    found = processes.cpu_by_role(procs)
    own = os.times()
    found["perf_analyzer (client)"] = own.children_user + own.children_system
    return found


def served_images(server: TritonServer) -> int:
    [ensemble] = [m for m in server_stats(server)["model_stats"] if m["name"] == spec.ENSEMBLE_NAME]
    return int(ensemble["inference_stats"]["success"]["count"])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model-repository", type=Path, default=ROOT / spec.DEFAULT_REPOSITORY)
    p.add_argument("--concurrency", default="2,4")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--seconds", type=float, default=15.0, help="bare loop length per measurement")
    p.add_argument("--window-requests", type=int, default=24)
    p.add_argument("--out", type=Path, default=ROOT / "reports" / "perf")
    args = p.parse_args(argv)
    if missing := perf_analyzer_missing():
        print(missing, file=sys.stderr)
        return 2
    exit_on_sigterm()
    args.out.mkdir(parents=True, exist_ok=True)
    data = write_input_data(args.out / "inputs")["{}x{}".format(*IMAGE)][spec.ENSEMBLE_NAME]
    engine, x = bare_engine(args.model_repository)
    levels = [int(c) for c in args.concurrency.split(",")]
    rows: list[dict] = []
    cpu_s: dict[int, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    images: dict[tuple[int, str], int] = defaultdict(int)
    failed: list[str] = []
    with TritonServer(args.model_repository, log_path=args.out / "tritonserver_ratio.log") as server:
        procs = processes.tree(server.process.pid)
        for rnd, c in ((r, c) for r in range(args.rounds) for c in levels):
            part = args.out / f"ratio_r{rnd}_c{c}.csv"
            cpu0, n0 = cpu_by_role(procs), served_images(server)
            if perf_analyzer(server, spec.ENSEMBLE_NAME, data, c, part, args.window_requests) != 0:
                failed.append(f"round {rnd} concurrency {c}")
                continue
            for name, seconds in cpu_by_role(procs).items():
                cpu_s[c][name] += seconds - cpu0[name]
            images[c, "served"] += served_images(server) - n0
            with part.open() as f:
                served = float(next(csv.DictReader(f))["Inferences/Second"])
            part.unlink()
            t0, own0 = time.perf_counter(), os.times()
            runs = engine_closed_loop(engine, x, c, args.seconds)
            own1, bare = os.times(), runs / (time.perf_counter() - t0)
            cpu_s[c][BARE] += processes.own_cpu_seconds(own0, own1)
            images[c, BARE] += runs
            rows.append({"round": rnd, "concurrency": c, "served_per_s": served, "bare_per_s": bare,
                         "ratio": served / bare})
            print(f"round {rnd} concurrency {c}: served {served:.2f}, bare {bare:.2f} infer/s, "
                  f"ratio {served / bare:.2f}", flush=True)
    with (args.out / "served_vs_bare.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, ["round", "concurrency", "served_per_s", "bare_per_s", "ratio"])
        writer.writeheader()
        writer.writerows(rows)
    with (args.out / "cpu_per_process.csv").open("w", newline="") as f:
        out = csv.writer(f)
        out.writerow(["concurrency", "process", "cpu_ms_per_image"])
        for c in sorted(cpu_s):
            ratios = [r["ratio"] for r in rows if r["concurrency"] == c]
            print(f"concurrency {c}: median served/bare {statistics.median(ratios):.2f} over {len(ratios)} "
                  f"rounds (min {min(ratios):.2f}, max {max(ratios):.2f}); CPU ms per image:")
            for name, seconds in sorted(cpu_s[c].items(), key=lambda kv: (kv[0] != BARE, -kv[1])):
                ms = 1e3 * seconds / max(1, images[c, BARE if name == BARE else "served"])
                print(f"  {name:40s} {ms:8.1f}")
                out.writerow([c, name, f"{ms:.2f}"])
    print(f"written {args.out / 'served_vs_bare.csv'}, {args.out / 'cpu_per_process.csv'}")
    if failed:  # the CSVs hold the rounds that ran; the run as a whole did not
        print(f"perf_analyzer failed in {len(failed)} run(s): {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
