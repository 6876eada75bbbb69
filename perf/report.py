"""``make report``: reports/benchmark.md, from what the perf targets wrote.

Reads reports/perf/ (perf_analyzer CSVs and the server statistics around each run, the alternated
served/bare runs, CPU per process, the stage micro-benchmarks), reports/load/ (locust) and
reports/model-analyzer/ (its summaries and tuned file). Whatever is missing is reported as not run.

    python -m perf.report [--reports reports]
"""
from __future__ import annotations

import argparse
import csv
import json
import statistics
import sys
from datetime import datetime, timezone
from pathlib import Path

from perf.inputs import SIZES
from perf.tables import markdown_table
from rtmo_triton import spec

ROOT = Path(__file__).resolve().parents[1]
STAGES = (spec.PREPROCESS_NAME, spec.ENGINE_NAME, spec.DECODE_NAME)
PHASES = ("queue", "compute_input", "compute_infer", "compute_output")
LABELS = [f"{w}x{h}" for w, h in SIZES]


def read_csv(path: Path) -> list[dict[str, str]]:
    if not path.is_file():
        return []
    with path.open() as f:
        return list(csv.DictReader(f))


def perf_rows(path: Path) -> list[dict[str, float]]:
    """perf_analyzer CSV rows by concurrency; latencies in ms."""
    rows = [{"concurrency": int(r["Concurrency"]), "throughput": float(r["Inferences/Second"]),
             **{f"p{q}": float(r[f"p{q} latency"]) / 1e3 for q in (50, 95, 99)}} for r in read_csv(path)]
    return sorted(rows, key=lambda r: r["concurrency"])


def stage_times(stats_path: Path) -> dict[str, dict[str, float]]:
    """Per composing model, mean ms per request of each phase during one perf_analyzer run."""
    if not stats_path.is_file():
        return {}
    data = json.loads(stats_path.read_text())
    by = {k: {m["name"]: m["inference_stats"] for m in v["model_stats"]} for k, v in data.items()}
    was, now = by["before"], by["after"]
    out = {}
    for name in (n for n in STAGES if n in now):
        count = int(now[name]["success"]["count"]) - int(was[name]["success"]["count"])
        if count > 0:
            out[name] = {p: (int(now[name][p]["ns"]) - int(was[name][p]["ns"])) / count / 1e6 for p in PHASES}
    return out


def alternated(rows: list[dict[str, str]]) -> list[list[object]]:
    """Per concurrency: rounds, median served and bare infer/s, median ratio and its range."""
    out = []
    for c in sorted({int(r["concurrency"]) for r in rows}):
        mine = [r for r in rows if int(r["concurrency"]) == c]
        med = [statistics.median(float(r[k]) for r in mine) for k in ("served_per_s", "bare_per_s", "ratio")]
        ratios = [float(r["ratio"]) for r in mine]
        out.append([c, len(mine), *(f"{v:.2f}" for v in med), f"{min(ratios):.2f}–{max(ratios):.2f}"])
        print(f"served/bare at concurrency {c}: median {med[2]:.2f} over {len(mine)} rounds")
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--reports", type=Path, default=ROOT / "reports")
    args = ap.parse_args(argv)
    perf, start = args.reports / "perf", args.reports / "perf" / "server_start.json"
    run = json.loads(start.read_text()) if start.is_file() else {}
    model = run.get("model", "")
    md = [f"# RTMO on Triton: CPU benchmark\n\nGenerated {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC "
          "by `make report`.\n", *(f"- {k.capitalize()}: {run.get(k, 'not recorded')}"
                                   for k in ("machine", "versions", "model")),
          f"- tritonserver start to ensemble ready: {run.get('start_seconds', float('nan')):.2f} s",
          *(["\nWith random weights every one of the engine's K candidates passes the score threshold and "
             "NMS, so the decoder and the response carry K people per image; a trained checkpoint gives only "
             "the people in the picture."] if "random weights" in model and "BENCHMARK" not in model else []),
          *(["\nBENCHMARK weights: random, with the classification bias set so that about as many people "
             "per image as stated pass the score threshold and NMS (`make build-engines BENCHMARK=1`), so "
             "the decoder and the responses carry a real scene's load; the poses are still meaningless."]
            if "BENCHMARK" in model else []),
          "\nRuns minutes apart on a shared machine differ noticeably: quote the alternated served/bare "
          "measurement. In-server times of the Python stages exceed their one-thread micro-benchmarks "
          "because every stage shares the cores with the engine.",
          "\n## Throughput and latency (perf_analyzer, gRPC, one JPEG per request)\n"]
    runs = [(m, f"{m}_{lbl}", lbl) for m in (spec.ENSEMBLE_NAME, spec.PREPROCESS_NAME) for lbl in LABELS]
    runs += [(m, m, "(640x480 tensors)") for m in (spec.ENGINE_NAME, spec.DECODE_NAME)]
    md.append(markdown_table(["model", "image", "concurrency", "infer/s", "p50 ms", "p95 ms", "p99 ms"], [
        [model, lbl, r["concurrency"], f"{r['throughput']:.2f}", f"{r['p50']:.1f}", f"{r['p95']:.1f}",
         f"{r['p99']:.1f}"] for model, stem, lbl in runs for r in perf_rows(perf / f"{stem}.csv")]))

    md += ["\n## Served `rtmo` against bare onnxruntime, alternated (`perf.served_vs_bare`, 640x480)\n",
           "Bare: the same ONNX file in one onnxruntime session with the served engine's threads, N threads "
           "in a closed loop on the preprocessed JPEG; each round runs the served ensemble, then the bare "
           "loop. Target: ratio ≥ 0.9 at concurrency ≥ 2.\n",
           markdown_table(["concurrency", "rounds", "served infer/s", "bare infer/s",
                           "served / bare (median)", "range"],
                          alternated(read_csv(perf / "served_vs_bare.csv"))),
           "\nCPU time per image served, by process (bare: the loop's own):\n",
           markdown_table(["concurrency", "process", "CPU ms / image"], [
               [r["concurrency"], r["process"], r["cpu_ms_per_image"]]
               for r in read_csv(perf / "cpu_per_process.csv")])]

    md += ["\n## Time per stage inside the ensemble (Triton statistics, mean ms per image)\n",
           markdown_table(["image", "model", *PHASES], [
               [lbl, name, *(f"{t[p]:.2f}" for p in PHASES)] for lbl in LABELS
               for name, t in stage_times(perf / f"{spec.ENSEMBLE_NAME}_{lbl}.stats.json").items()])]

    md += ["\n## Stage micro-benchmarks outside the server (`perf.bench_stages`, one thread)\n",
           markdown_table(["stage", "input", "p50 ms", "p95 ms", "target ms"], [
               [r["stage"], r["input"], r["p50_ms"], r["p95_ms"], r["target_ms"] or "–"]
               for r in read_csv(perf / "stages.csv")])]
    md += [f"\nEngine output per image at K={r['topk']}: {int(r['fp32_logits_bytes']) / 2**20:.2f} MiB "
           f"with FP32 logits, {int(r['fp16_logits_bytes']) / 2**20:.2f} MiB with FP16."
           for r in read_csv(perf / "engine_bytes.csv")]

    load = read_csv(args.reports / "load" / "locust_stats.csv")
    md += ["\n## Load test (locust, HTTP, mixed image sizes, every response checked against the contract)\n",
           markdown_table(["name", "requests", "failures", "median ms", "p95 ms", "p99 ms", "req/s"], [
               [r["Name"], r["Request Count"], r["Failure Count"], r["50%"], r["95%"], r["99%"],
                f"{float(r['Requests/s']):.2f}"] for r in load])]

    analyzer = args.reports / "model-analyzer"
    md.append("\n## model-analyzer\n")
    md += [f"- [{f.stem}](model-analyzer/{f.name})" for f in sorted(analyzer.glob("*.md"))] or ["_not run_"]
    md += [f"\n`{f.relative_to(args.reports.parent)}`, applied by `make build-engines TUNED=<this file>`:\n\n"
           f"```json\n{f.read_text().strip()}\n```" for f in sorted(analyzer.glob("tuned_*.json"))]
    md.append("\nMade by `make perf` (perf.perf_sweep, perf.served_vs_bare), `make bench-stages`, "
              "`make load` and `make analyze`; perf/perf.mk has their settings.")
    out = args.reports / "benchmark.md"
    out.write_text("\n".join(md) + "\n")
    print(f"written {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
