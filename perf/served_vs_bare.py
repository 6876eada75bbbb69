"""Served `rtmo` against bare onnxruntime, measured in alternation so both see the same machine.

On a shared or throttled CPU, two sweeps run minutes apart compare the
machine's moods, not the server. Here each round measures the served
ensemble (perf_analyzer, 640×480 JPEG) and then the bare session
(``perf/bare_onnxruntime.py``'s closed loop, same thread setting) at each
concurrency, and the ratio is taken within the round; the median over
rounds is what the report shows. The server idles while the bare loop runs.

    python perf/served_vs_bare.py [--concurrency 2,4] [--rounds 3] [--seconds 15]
"""
from __future__ import annotations

import argparse
import csv
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from perf.bare_onnxruntime import bare_engine, closed_loop  # noqa: E402
from perf.inputs import write_input_data  # noqa: E402
from perf.perf_sweep import perf_analyzer  # noqa: E402
from rtmo_triton import spec  # noqa: E402
from rtmo_triton.serving.server import TritonServer, exit_on_sigterm  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
LABEL = "640x480"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model-repository", type=Path, default=ROOT / "model_repository")
    p.add_argument("--concurrency", default="2,4")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--seconds", type=float, default=15.0, help="bare loop length per measurement")
    p.add_argument("--window-requests", type=int, default=24)
    p.add_argument("--out", type=Path, default=ROOT / "reports" / "perf")
    args = p.parse_args(argv)
    exit_on_sigterm()
    args.out.mkdir(parents=True, exist_ok=True)
    data = write_input_data(args.out / "inputs")[LABEL][spec.ENSEMBLE_NAME]
    engine, x = bare_engine(args.model_repository, tuple(int(v) for v in LABEL.split("x")))
    levels = [int(c) for c in args.concurrency.split(",")]
    rows = []
    with TritonServer(args.model_repository, log_path=args.out / "tritonserver_ratio.log") as server:
        for rnd in range(args.rounds):
            for c in levels:
                part = args.out / f"ratio_r{rnd}_c{c}.csv"
                if perf_analyzer(server, spec.ENSEMBLE_NAME, data, c, part, args.window_requests) != 0:
                    continue
                with part.open() as f:
                    served = float(next(csv.DictReader(f))["Inferences/Second"])
                part.unlink()
                t0 = time.perf_counter()
                bare = len(closed_loop(engine, x, c, args.seconds)) / (time.perf_counter() - t0)
                rows.append({"round": rnd, "concurrency": c, "served_per_s": served, "bare_per_s": bare,
                             "ratio": served / bare})
                print(f"round {rnd} concurrency {c}: served {served:.2f}, bare {bare:.2f} infer/s, "
                      f"ratio {served / bare:.2f}", flush=True)
    out = args.out / "served_vs_bare.csv"
    with out.open("w", newline="") as f:
        writer = csv.DictWriter(f, ["round", "concurrency", "served_per_s", "bare_per_s", "ratio"])
        writer.writeheader()
        writer.writerows(rows)
    for c in levels:
        ratios = [r["ratio"] for r in rows if r["concurrency"] == c]
        if ratios:
            print(f"concurrency {c}: median served/bare {statistics.median(ratios):.2f} over "
                  f"{len(ratios)} rounds (min {min(ratios):.2f}, max {max(ratios):.2f})")
    print(f"written {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
