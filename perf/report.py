"""``make report``: reports/benchmark.md and its plots, from what the perf targets wrote.

Reads perf_analyzer CSVs and the server statistics around each run
(reports/perf/), the bare-onnxruntime baseline, the stage micro-benchmarks,
locust's CSV (reports/load/) and model-analyzer's choice (perf/tuned_cpu.json).
Whatever is missing is reported as not run. Prints the headline figures.

    python perf/report.py [--reports reports]
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import sys
from datetime import datetime, timezone
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from perf.inputs import SIZES  # noqa: E402
from rtmo_triton import spec  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
STAGES = (spec.PREPROCESS_NAME, spec.ENGINE_NAME, spec.DECODE_NAME)
PHASES = ("queue", "compute_input", "compute_infer", "compute_output")
SIZE_LABELS = [f"{w}x{h}" for w, h in SIZES]


def read_csv(path: Path) -> list[dict[str, str]]:
    if not path.is_file():
        return []
    with path.open() as f:
        return list(csv.DictReader(f))


def perf_rows(path: Path) -> list[dict[str, float]]:
    """perf_analyzer CSV rows by concurrency; latencies in ms."""
    rows = []
    for r in read_csv(path):
        rows.append({"concurrency": int(r["Concurrency"]), "throughput": float(r["Inferences/Second"]),
                     **{f"p{q}": float(r[f"p{q} latency"]) / 1e3 for q in (50, 95, 99)}})
    return sorted(rows, key=lambda r: r["concurrency"])


def stage_times(stats_path: Path) -> dict[str, dict[str, float]]:
    """Per composing model, mean ms per request of each phase during one perf_analyzer run."""
    if not stats_path.is_file():
        return {}
    data = json.loads(stats_path.read_text())
    by_name = [{m["name"]: m["inference_stats"] for m in data[k]["model_stats"]} for k in ("before", "after")]
    out = {}
    for name in STAGES:
        before, after = by_name[0].get(name), by_name[1].get(name)
        if not after:
            continue
        count = int(after["success"]["count"]) - int(before["success"]["count"])
        if count > 0:
            out[name] = {p: (int(after[p]["ns"]) - int(before[p]["ns"])) / count / 1e6 for p in PHASES}
    return out


def table(header: list[str], rows: list[list[object]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def plot_throughput(series: dict[str, list[dict[str, float]]], bare: list[dict[str, str]],
                    path: Path) -> None:
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    for label, rows in series.items():
        c = [r["concurrency"] for r in rows]
        ax1.plot(c, [r["throughput"] for r in rows], marker="o", label=label)
        ax2.plot(c, [r["p50"] for r in rows], marker="o", label=f"{label} p50")
        ax2.plot(c, [r["p99"] for r in rows], linestyle="--", label=f"{label} p99")
    if bare:
        ax1.plot([int(r["concurrency"]) for r in bare], [float(r["throughput_per_s"]) for r in bare],
                 marker="s", color="black", label="bare onnxruntime")
    ax1.set(xlabel="concurrency", ylabel="images / s", title="throughput")
    ax2.set(xlabel="concurrency", ylabel="ms", title="latency")
    ax1.legend(fontsize=7)
    ax2.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_stages(stages: dict[str, dict[str, dict[str, float]]], path: Path) -> None:
    fig, ax = plt.subplots(figsize=(7, 3.5))
    labels = list(stages)
    bottom = [0.0] * len(labels)
    for name in STAGES:
        for phase in ("queue", "compute_infer"):
            values = [stages[lbl].get(name, {}).get(phase, 0.0) for lbl in labels]
            ax.bar(labels, values, bottom=bottom, label=f"{name} {phase}")
            bottom = [b + v for b, v in zip(bottom, values)]
    ax.set(ylabel="ms per image", title="time per stage in the ensemble (Triton statistics)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def machine() -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    import onnxruntime

    return (f"{cpu}, {os.cpu_count()} cores, {platform.system()} {platform.release()}, "
            f"Python {platform.python_version()}, onnxruntime {onnxruntime.__version__}, "
            "Triton 2.51 (nvidia-pytriton 0.7.0)")


def served_model() -> str:
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2 as mc

    path = ROOT / "model_repository" / spec.ENSEMBLE_NAME / "config.pbtxt"
    if not path.is_file():
        return "no model built"
    config = text_format.Parse(path.read_text(), mc.ModelConfig())
    p = {k: v.string_value for k, v in config.parameters.items()}
    weights = "random weights" if p.get("random_weights") == "true" else p.get("checkpoint", "?")
    return f"RTMO-{p['variant']} {p['input_size']}px, K={p['topk']}, engine {p['engine_flavour']}, {weights}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--reports", type=Path, default=ROOT / "reports")
    args = ap.parse_args(argv)
    perf_dir, out = args.reports / "perf", args.reports / "benchmark.md"
    md = [f"# RTMO on Triton: CPU benchmark\n\nGenerated {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC "
          "by `make report` from the outputs of `make perf`, `make bench-stages`, `make load` and "
          "`make analyze`.\n",
          f"- Machine: {machine()}", f"- Served model: {served_model()}"]
    start = perf_dir / "server_start.json"
    if start.is_file():
        seconds = json.loads(start.read_text())["start_seconds"]
        md.append(f"- tritonserver start to ensemble ready: {seconds:.2f} s")

    ensemble = {lbl: perf_rows(perf_dir / f"{spec.ENSEMBLE_NAME}_{lbl}.csv") for lbl in SIZE_LABELS}
    ensemble = {k: v for k, v in ensemble.items() if v}
    bare = read_csv(perf_dir / "bare_onnxruntime.csv")
    md.append("\n## Throughput and latency (perf_analyzer, gRPC, one JPEG per request)\n")
    if ensemble:
        plot_throughput({f"rtmo {k}": v for k, v in ensemble.items()}, bare, args.reports / "throughput.png")
        md.append("![throughput and latency](throughput.png)\n")
    rows = []
    for model in (spec.ENSEMBLE_NAME, *STAGES):
        for lbl in SIZE_LABELS:
            stem = f"{model}_{lbl}" if model in (spec.ENSEMBLE_NAME, spec.PREPROCESS_NAME) else model
            for r in perf_rows(perf_dir / f"{stem}.csv"):
                rows.append([model, lbl if stem != model else "(640x480 tensors)", r["concurrency"],
                             f"{r['throughput']:.2f}", *(f"{r[q]:.1f}" for q in ("p50", "p95", "p99"))])
            if stem == model:
                break
    md.append(table(["model", "image", "concurrency", "infer/s", "p50 ms", "p95 ms", "p99 ms"], rows)
              if rows else "_not run: `make perf`_")

    md.append("\n## Served ensemble against bare onnxruntime (640x480 JPEG)\n")
    served = {r["concurrency"]: r["throughput"] for r in ensemble.get("640x480", [])}
    ratio_rows = []
    for b in bare:
        c, rate = int(b["concurrency"]), float(b["throughput_per_s"])
        if c in served:
            ratio_rows.append([c, f"{served[c]:.2f}", f"{rate:.2f}", f"{served[c] / rate:.2f}"])
    md.append("Bare: the same ONNX file in one onnxruntime session with the served engine's thread "
              "setting, N threads in a closed loop (`perf/bare_onnxruntime.py`). "
              "Target: ratio ≥ 0.9 at concurrency ≥ 2.\n")
    md.append(table(["concurrency", "served infer/s", "bare infer/s", "served / bare"], ratio_rows)
              if ratio_rows else "_not run_")
    for c, s, b, ratio in ratio_rows:
        print(f"served/bare at concurrency {c}: {ratio} ({s} vs {b} infer/s)")

    md.append("\n## Time per stage inside the ensemble (Triton statistics, mean ms per image)\n")
    stages = {}
    for lbl in SIZE_LABELS:
        times = stage_times(perf_dir / f"{spec.ENSEMBLE_NAME}_{lbl}.stats.json")
        if times:
            stages[lbl] = times
    if stages:
        plot_stages(stages, args.reports / "stages.png")
        md.append("![time per stage](stages.png)\n")
        md.append(table(["image", "model", *PHASES], [[lbl, name, *(f"{t[name][p]:.2f}" for p in PHASES)]
                                                       for lbl, t in stages.items() for name in t]))
    else:
        md.append("_not run: `make perf`_")

    md.append("\n## Stage micro-benchmarks outside the server (`perf/bench_stages.py`, one thread)\n")
    bench = read_csv(perf_dir / "stages.csv")
    md.append(table(["stage", "input", "p50 ms", "p95 ms", "target ms"],
                    [[r["stage"], r["input"], r["p50_ms"], r["p95_ms"], r["target_ms"] or "–"]
                     for r in bench])
              if bench else "_not run: `make bench-stages`_")
    for r in bench:
        target = f" (target {r['target_ms']})" if r["target_ms"] else ""
        print(f"{r['stage']}: p50 {r['p50_ms']} ms{target}")

    md.append("\n## Load test (locust, HTTP, mixed image sizes)\n")
    load = [r for r in read_csv(args.reports / "load" / "locust_stats.csv")]
    md.append(table(["name", "requests", "failures", "median ms", "p95 ms", "p99 ms", "req/s"],
                    [[r["Name"], r["Request Count"], r["Failure Count"], r["50%"], r["95%"], r["99%"],
                      f"{float(r['Requests/s']):.2f}"] for r in load]) if load else "_not run: `make load`_")

    md.append("\n## model-analyzer's choice (shipped as the CPU defaults)\n")
    tuned = ROOT / "perf" / "tuned_cpu.json"
    summary = args.reports / "model-analyzer" / "summary.md"
    md.append(f"```json\n{tuned.read_text().strip()}\n```" if tuned.is_file()
              else "_not run: `make analyze`_")
    if summary.is_file():
        md.append("\nSee [model-analyzer summary](model-analyzer/summary.md).")
    out.write_text("\n".join(md) + "\n")
    print(f"written {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
