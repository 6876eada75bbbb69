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
import statistics
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
                    path: Path, log: bool = False) -> None:
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    for label, rows in series.items():
        c = [r["concurrency"] for r in rows]
        ax1.plot(c, [r["throughput"] for r in rows], marker="o", label=label)
        [line] = ax2.plot(c, [r["p50"] for r in rows], marker="o", label=f"{label} p50")
        ax2.plot(c, [r["p99"] for r in rows], linestyle="--", color=line.get_color(), label=f"{label} p99")
    if bare:
        ax1.plot([int(r["concurrency"]) for r in bare], [float(r["throughput_per_s"]) for r in bare],
                 marker="s", color="black", label="bare onnxruntime")
    ax1.set(xlabel="concurrency", ylabel="images / s", title="throughput")
    if log:  # composing models: the engine is ~30x slower than the Python stages
        ax1.set_yscale("log")
        ax2.set_yscale("log")
    else:
        ax1.set_ylim(bottom=0)
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
    return (f"{cpu}, {os.cpu_count()} cores, {platform.system()} {platform.release()}, "
            f"Python {platform.python_version()}")


def versions() -> str:
    """Installed versions of what the numbers depend on: the project's venv and the tools' own places."""
    from importlib.metadata import PackageNotFoundError, version

    found = []
    for dist in ("nvidia-pytriton", "tritonclient", "onnxruntime", "opencv-python-headless", "opencv-python",
                 "simplejpeg", "numpy"):
        try:
            found.append(f"{dist} {version(dist)}")
        except PackageNotFoundError:
            pass
    tools, site = ROOT / ".tools", "lib/python*/site-packages"
    for label, pattern in (("perf_analyzer (tritonclient wheel)", "perf_analyzer/tritonclient-*.dist-info"),
                           ("model-analyzer", f"model-analyzer/{site}/triton_model_analyzer-*.dist-info"),
                           ("locust", f"locust/{site}/locust-*.dist-info")):
        hits = sorted(tools.glob(pattern))
        if hits:
            found.append(f"{label} {hits[0].name.removesuffix('.dist-info').split('-')[1]}")
    return ", ".join(found)


COMMANDS = """\
make setup            # .venv, CPU tritonserver, perf tools in .tools/ (perf/install_tools.sh)
make build-engines    # model_repository/ (random RTMO-s weights without CHECKPOINT=...)
make perf             # perf/perf_sweep.py --concurrency $(CONCURRENCY) (default 1,2,3,4), then
                      # perf/bare_onnxruntime.py --concurrency $(CONCURRENCY), then
                      # perf/served_vs_bare.py --concurrency $(RATIO_CONCURRENCY) (2,4) -> reports/perf/
make engine-variants  # perf/engine_variants.py (engine thread layouts)        -> reports/perf/
make bench-stages     # perf/bench_stages.py                                   -> reports/perf/stages.csv
make load             # perf/load.py --users 4 --spawn-rate 2 --duration 60s   -> reports/load/
make analyze          # perf/analyze.py (composing models)  -> reports/model-analyzer/summary.md,
                      #                                        perf/tuned_cpu.json
make analyze-ensemble # perf/analyze.py --search ensemble     -> reports/model-analyzer/ensemble.md
make report           # perf/report.py                                         -> reports/benchmark.md
"""


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
          f"- Machine: {machine()}", f"- Versions: {versions()}", f"- Served model: {served_model()}"]
    start = perf_dir / "server_start.json"
    if start.is_file():
        seconds = json.loads(start.read_text())["start_seconds"]
        md.append(f"- tritonserver start to ensemble ready: {seconds:.2f} s")

    md.append("\nReading notes: with random weights every one of the engine's K candidates scores above "
              "the threshold and survives NMS, so the served decoder works on K people per image (with a "
              "trained checkpoint, only the people in the picture); the micro-benchmark's decode uses 20. "
              "On a small CPU every stage shares the cores with the engine, so in-server times of the "
              "Python stages exceed their one-thread micro-benchmarks. Runs minutes apart on a shared "
              "machine can differ noticeably; the alternated served/bare measurement is the one to quote.")
    ensemble = {lbl: perf_rows(perf_dir / f"{spec.ENSEMBLE_NAME}_{lbl}.csv") for lbl in SIZE_LABELS}
    ensemble = {k: v for k, v in ensemble.items() if v}
    bare = read_csv(perf_dir / "bare_onnxruntime.csv")
    md.append("\n## Throughput and latency (perf_analyzer, gRPC, one JPEG per request)\n")
    if ensemble:
        plot_throughput({f"rtmo {k}": v for k, v in ensemble.items()}, bare, args.reports / "throughput.png")
        md.append("![throughput and latency](throughput.png)\n")
    composing = {f"{spec.PREPROCESS_NAME} {lbl}": perf_rows(perf_dir / f"{spec.PREPROCESS_NAME}_{lbl}.csv")
                 for lbl in SIZE_LABELS}
    composing |= {m: perf_rows(perf_dir / f"{m}.csv") for m in (spec.ENGINE_NAME, spec.DECODE_NAME)}
    composing = {k: v for k, v in composing.items() if v}
    if composing:
        plot_throughput(composing, [], args.reports / "throughput_composing.png", log=True)
        md.append("![composing models alone](throughput_composing.png)\n")
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
    engine = {r["concurrency"]: r["throughput"] for r in perf_rows(perf_dir / f"{spec.ENGINE_NAME}.csv")}
    ratio_rows = []
    for b in bare:
        c, rate = int(b["concurrency"]), float(b["throughput_per_s"])
        if c in served:
            alone = f"{engine[c]:.2f} ({engine[c] / rate:.2f})" if c in engine else "–"
            ratio_rows.append([c, f"{rate:.2f}", f"{served[c]:.2f}", f"{served[c] / rate:.2f}", alone])
    md.append("Bare: the same ONNX file in one onnxruntime session with the served engine's thread "
              "setting, N threads in a closed loop on the preprocessed 640x480 JPEG "
              "(`perf/bare_onnxruntime.py`); it does no JPEG decode, letterbox or decode, which the served "
              "ensemble runs on the same cores. Target: ratio ≥ 0.9 at concurrency ≥ 2.\n")
    alternated = read_csv(perf_dir / "served_vs_bare.csv")
    if alternated:
        md.append("Measured in alternation (`perf/served_vs_bare.py`: each round runs the served ensemble, "
                  "then the bare loop, at each concurrency; median over rounds):\n")
        alt_rows = []
        for c in sorted({int(r["concurrency"]) for r in alternated}):
            mine = [r for r in alternated if int(r["concurrency"]) == c]
            med = {k: statistics.median(float(r[k]) for r in mine)
                   for k in ("served_per_s", "bare_per_s", "ratio")}
            ratios = [float(r["ratio"]) for r in mine]
            alt_rows.append([c, len(mine), f"{med['served_per_s']:.2f}", f"{med['bare_per_s']:.2f}",
                             f"{med['ratio']:.2f}", f"{min(ratios):.2f}–{max(ratios):.2f}"])
            print(f"served/bare (alternated) at concurrency {c}: median {med['ratio']:.2f} "
                  f"over {len(mine)} rounds")
        md.append(table(["concurrency", "rounds", "served infer/s", "bare infer/s", "served / bare (median)",
                         "range"], alt_rows))
        md.append("\nFrom the separate sweeps above (`make perf`; minutes apart, so machine drift enters):\n")
    md.append(table(["concurrency", "bare infer/s", "served `rtmo` infer/s", "served / bare",
                     "`rtmo_engine` served alone (/ bare)"], ratio_rows)
              if ratio_rows else "_not run_")
    for c, rate, s, ratio, alone in ratio_rows:
        print(f"served/bare at concurrency {c}: {ratio} ({s} vs {rate} infer/s); engine alone {alone}")
    cpu = read_csv(perf_dir / "cpu_per_process.csv")
    if cpu:
        served_rows = [r for r in cpu if not r["process"].startswith("bare")]
        total = sum(float(r["cpu_ms_per_image"]) for r in served_rows)
        bare_ms = next(float(r["cpu_ms_per_image"]) for r in cpu if r["process"].startswith("bare"))
        md.append(f"\n### Where the CPU goes (`perf/cpu_per_process.py`, 640x480 JPEG, concurrency "
                  f"{cpu[0]['concurrency']})\n")
        md.append("CPU time of each process of the served stack per image served, beside the bare "
                  f"engine's; on {cpu[0]['cores']} saturated cores served / bare throughput cannot exceed "
                  f"bare / served CPU per image = {bare_ms / total:.2f}.\n")
        md.append(table(["process", "CPU ms / image"], [[r["process"], r["cpu_ms_per_image"]] for r in cpu]
                        + [["served total", f"{total:.1f}"]]))
    for path in sorted(perf_dir.glob("engine_variants*.csv")):
        variants = read_csv(path)
        md.append(f"\n### Engine thread layouts, served `rtmo` (`perf/engine_variants.py`, 640x480 JPEG; "
                  f"{path.name})\n")
        md.append(table(["round", "variant", "engine instances", "intra-op threads (0 = all cores)",
                         "spinning", "batching delay µs", "concurrency", "infer/s", "p50 ms", "p99 ms"],
                        [[r.get("round", "0"), r["variant"], r["engine_instances"], r["intra_op_threads"],
                          "on" if r["spinning"] == "1" else "off", r.get("queue_delay_us") or "shipped",
                          r["concurrency"], f"{float(r['throughput_per_s']):.2f}",
                          f"{int(r['p50_us']) / 1e3:.0f}", f"{int(r['p99_us']) / 1e3:.0f}"]
                         for r in variants]))

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
        print(f"{r['stage'].strip()} [{r['input']}]: p50 {r['p50_ms']} ms{target}")
    if bench:
        md.append("\nIndented rows split the 1920x1080 preprocess: the shipped letterbox warps only "
                  "the picture's rectangle (bit-exact to the full-frame warp it replaced, tested in "
                  "tests/test_letterbox.py); OpenCV's half-resolution JPEG decode is faster but does "
                  "not give the reference's pixels, so it is not shipped.")
    for r in read_csv(perf_dir / "engine_bytes.csv"):
        fp32, fp16 = int(r["fp32_logits_bytes"]), int(r["fp16_logits_bytes"])
        md.append(f"\nEngine output per image at K={r['topk']}: {fp32 / 2**20:.2f} MiB with FP32 logits, "
                  f"{fp16 / 2**20:.2f} MiB with FP16 logits (accuracy effect: `perf/topk_effect.py`).")

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
    ensemble_md = args.reports / "model-analyzer" / "ensemble.md"
    if ensemble_md.is_file():
        lines = ensemble_md.read_text().splitlines()
        best = next((line for line in lines if line.startswith("Best trial")), "")
        md.append(f"\nThe ensemble's quick search ([ensemble.md](model-analyzer/ensemble.md)): {best}")
    md.append("\n## Commands\n\n```sh\n" + COMMANDS + "```")
    out.write_text("\n".join(md) + "\n")
    print(f"written {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
