"""``make analyze``: model-analyzer's sweeps, and the settings they find as a tuned file for the build.

Runs ``model-analyzer profile -f perf/analyzer/<search>.yaml`` (composing: each composing model alone on
the CPU; ensemble: the quick search over `rtmo` from the repository's current configs; gpu: on a GPU
host), then reads what it exports: the measurements (``<export_path>/results/metrics-model-inference.csv``)
and each configuration measured (``<output_model_repository_path>/<config>/config.pbtxt``). Writes
reports/model-analyzer/summary.md (ensemble.md, summary_gpu.md) with every measurement and, for a
composing sweep, tuned_cpu.json (tuned_gpu.json): per model, the fastest configuration (within 3 % of
it, the one with fewer instances), which ``make build-engines TUNED=<that file>`` applies.
"""
from __future__ import annotations

import argparse
import csv
import json
import shutil
import subprocess
import sys
from dataclasses import asdict, fields
from pathlib import Path

import yaml
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from perf.inputs import write_input_data
from perf.tables import head, row
from rtmo_triton import spec
from rtmo_triton.build.configs import Scheduling, engine_onnx
from rtmo_triton.spec import Param as P

ROOT = Path(__file__).resolve().parents[1]
MODEL_ANALYZER = ROOT / ".tools" / "bin" / "model-analyzer"
OUT = ROOT / "reports" / "model-analyzer"
SEARCHES = {"composing": ("cpu_composing.yaml", "summary.md", "tuned_cpu.json"),
            "ensemble": ("cpu_ensemble.yaml", "ensemble.md", None),
            "gpu": ("gpu_composing.yaml", "summary_gpu.md", "tuned_gpu.json")}
NEAR_BEST = 0.97
SETTINGS = tuple(f.name for f in fields(Scheduling))
"""The keys of a tuned file: what ``make build-engines TUNED=`` reads."""


def settings(config_pbtxt: Path) -> dict[str, int]:
    """Instance count, max batch, batching delay and (CPU engine) intra-op threads of one config."""
    c = text_format.Parse(config_pbtxt.read_text(), mc.ModelConfig())
    threads = c.parameters[P.INTRA_OP_THREADS].string_value if P.INTRA_OP_THREADS in c.parameters else ""
    found = Scheduling(instances=sum(max(1, g.count) for g in c.instance_group) or 1,
                       max_batch=c.max_batch_size,
                       max_queue_delay_us=c.dynamic_batching.max_queue_delay_microseconds,
                       intra_op_threads=int(threads) if threads.isdigit() else None)
    return {k: v for k, v in asdict(found).items() if v is not None}


def measurements(results_csv: Path, configs: Path) -> list[dict]:
    """One row per (model, configuration, concurrency); an ensemble's also carries ``composing``:
    each composing model's settings in that trial (model-analyzer names them after a colon)."""
    def of(name: str) -> dict[str, int]:
        return settings(configs / name.strip() / "config.pbtxt")

    with results_csv.open() as f:
        table = list(csv.DictReader(f))
    rows = []
    for r in table:
        variant, _, composing = r["Model Config Path"].partition(":")
        parts = {name.strip(): of(name) for name in composing.split(",") if name.strip()}
        extra = {"composing": parts} if parts else {}
        rows.append({"model": r["Model"], "config": variant, **of(variant), **extra,
                     "concurrency": int(r["Concurrency"]), "throughput": float(r["Throughput (infer/sec)"]),
                     "p99_ms": float(r["p99 Latency (ms)"])})
    return rows


def choose(rows: list[dict]) -> dict[str, dict[str, int]]:
    """Per composing model: the fastest configuration, or within 3 % of it the one with fewer instances."""
    tuned = {}
    for model in sorted({r["model"] for r in rows if "composing" not in r} - {spec.ENSEMBLE_NAME}):
        mine = [r for r in rows if r["model"] == model]
        best = max(r["throughput"] for r in mine)
        pick = min((r for r in mine if r["throughput"] >= NEAR_BEST * best),
                   key=lambda r: (r["instances"], -r["throughput"]))
        tuned[model] = {k: pick[k] for k in SETTINGS if k in pick}
    return tuned


def layout(composing: dict) -> str:
    """``engine 2×b8 1 thr, decode 1×b8 2000µs``: one trial's composing settings, compactly."""
    return ", ".join(f"{name.split('_config')[0].removeprefix('rtmo_')} {c['instances']}×b{c['max_batch']}"
                     + (f" {c['intra_op_threads']} thr" if "intra_op_threads" in c else "")
                     + (f" {c['max_queue_delay_us']}µs" if c["max_queue_delay_us"] else "")
                     for name, c in composing.items())


def summary(rows: list[dict], title: str, tuned: dict | None = None, tuned_path: Path | None = None) -> str:
    """Every measurement, best first, with an ensemble trial's composing layout; the tuned choice if any."""
    ensemble = any("composing" in r for r in rows)
    settings_cols = (["composing (instances×max batch)"] if ensemble else
                     ["instances", "intra-op threads", "max batch", "queue delay µs"])
    cols = ["model", "config", *settings_cols, "concurrency", "infer/s", "p99 ms"]
    lines = [f"# model-analyzer: {title}\n", *head(cols)]
    for r in sorted(rows, key=lambda r: (r["model"], -r["throughput"])):
        setting = ([layout(r["composing"])] if ensemble else
                   [r["instances"], r.get("intra_op_threads", "–"), r["max_batch"], r["max_queue_delay_us"]])
        cells = [r["model"], r["config"], *setting, r["concurrency"], f"{r['throughput']:.2f}",
                 f"{r['p99_ms']:.1f}"]
        lines.append(row(*cells))
    best = max(rows, key=lambda r: r["throughput"])
    default = [r["throughput"] for r in rows if r["config"].endswith("config_default")]
    shipped = f"; the repository's configs reach {max(default):.2f}." if default else "."
    lines += ["", f"Best trial: {best['config']} at {best['throughput']:.2f} infer/s (concurrency "
              f"{best['concurrency']}){shipped}"]
    if tuned is not None and tuned_path is not None:
        lines += ["", "Chosen per composing model (highest throughput; within 3 % of it, fewest instances), "
                  f"written to `{tuned_path.relative_to(ROOT)}`:", "", "```json", json.dumps(tuned, indent=2),
                  "```"]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model-repository", type=Path, default=ROOT / spec.DEFAULT_REPOSITORY)
    p.add_argument("--search", choices=tuple(SEARCHES), default="composing")
    p.add_argument("--summarize-only", action="store_true", help="re-read the last run's exported results")
    args = p.parse_args(argv)
    config_name, summary_name, tuned_name = SEARCHES[args.search]
    config_file = ROOT / "perf" / "analyzer" / config_name
    config = yaml.safe_load(config_file.read_text())
    results = ROOT / config["export_path"] / "results" / "metrics-model-inference.csv"
    if not args.summarize_only:
        if not MODEL_ANALYZER.exists():
            print(f"{MODEL_ANALYZER} missing: run `make setup`", file=sys.stderr)
            return 2
        write_input_data(ROOT / "reports" / "perf" / "inputs", engine_onnx(args.model_repository))
        shutil.rmtree(ROOT / config["checkpoint_directory"], ignore_errors=True)
        cmd = [str(MODEL_ANALYZER), "profile", "-f", str(config_file),
               "--model-repository", str(args.model_repository.resolve())]
        print("$ " + " ".join(cmd), flush=True)
        if subprocess.run(cmd, cwd=ROOT).returncode != 0:
            print(f"model-analyzer {args.search} search failed; see {OUT}", file=sys.stderr)
            return 1
    configs = ROOT / config["output_model_repository_path"]
    if not results.is_file() or not configs.is_dir():
        print(f"no model-analyzer results in {results} and {configs}: run it first", file=sys.stderr)
        return 1
    rows = measurements(results, configs)
    tuned, tuned_path = (choose(rows), OUT / tuned_name) if tuned_name else (None, None)
    if tuned_path:
        tuned_path.write_text(json.dumps(tuned, indent=2) + "\n")
        print(f"written {tuned_path}: apply with `make build-engines TUNED={tuned_path.relative_to(ROOT)}`")
    text = summary(rows, f"{args.search} search ({config_name})", tuned, tuned_path)
    (OUT / summary_name).write_text(text)
    print(text + f"written {OUT / summary_name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
