"""``make analyze``: model-analyzer's CPU sweep, and the settings it finds shipped as the CPU defaults.

Runs ``model-analyzer profile`` with perf/analyzer/cpu_composing.yaml (and,
with ``--ensemble``, the quick search over the ensemble), reads every
measurement from its checkpoint, and writes:

- reports/model-analyzer/summary.md: every configuration and concurrency measured;
- perf/tuned_cpu.json: per composing model, the instance count and batching delay of the
  configuration with the highest throughput (within 3 % of it, the one using fewer instances),
  which ``rtmo_triton.serving.configs.load_scheduling`` applies at the next ``make build-engines``.
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from perf.inputs import write_input_data  # noqa: E402
from rtmo_triton import spec  # noqa: E402
from rtmo_triton.serving.configs import TUNED_CPU  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
MODEL_ANALYZER = ROOT / ".tools" / "bin" / "model-analyzer"
CONFIGS = {"composing": ROOT / "perf" / "analyzer" / "cpu_composing.yaml",
           "ensemble": ROOT / "perf" / "analyzer" / "cpu_ensemble.yaml"}
OUT = ROOT / "reports" / "model-analyzer"
NEAR_BEST = 0.97


def measurements(checkpoint: Path) -> list[dict]:
    """One row per (model, configuration, concurrency) from model-analyzer's checkpoint."""
    results = json.loads(checkpoint.read_text())["ResultManager.results"]["_results"]
    rows = []
    for model, variants in results.items():
        for variant, (run_config, by_command) in variants.items():
            config = run_config["_model_run_configs"][0]["_model_config_variant"]["model_config"]
            instances = sum(int(g.get("count", 1)) for g in config.get("instanceGroup", [{}]))
            delay = int(config.get("dynamicBatching", {}).get("maxQueueDelayMicroseconds", 0))
            for measurement in by_command.values():
                for m in measurement["_model_config_measurements"]:
                    data = {name: value["_value"] for name, value in m["_non_gpu_data"]}
                    rows.append({
                        "model": model, "config": variant, "instances": instances,
                        "max_batch": int(config.get("maxBatchSize", 0)), "max_queue_delay_us": delay,
                        "concurrency": int(m["_model_specific_pa_params"]["concurrency-range"]),
                        "throughput": float(data.get("perf_throughput", 0.0)),
                        "p99_ms": float(data.get("perf_latency_p99", 0.0)),
                    })
    return rows


def choose(rows: list[dict]) -> dict[str, dict[str, int]]:
    tuned = {}
    for model in sorted({r["model"] for r in rows}):
        if model == spec.ENSEMBLE_NAME:
            continue
        mine = [r for r in rows if r["model"] == model]
        best = max(r["throughput"] for r in mine)
        near = [r for r in mine if r["throughput"] >= NEAR_BEST * best]
        pick = min(near, key=lambda r: (r["instances"], -r["throughput"]))
        tuned[model] = {k: pick[k] for k in ("instances", "max_queue_delay_us", "max_batch")}
    return tuned


def summary(rows: list[dict], tuned: dict) -> str:
    lines = ["# model-analyzer on CPU\n", "Every configuration and concurrency measured "
             "(`make analyze`; perf_analyzer inside model-analyzer, gRPC, real 640x480 inputs).\n",
             "| model | config | instances | max batch | queue delay µs | concurrency | infer/s | p99 ms |",
             "|---|---|---|---|---|---|---|---|"]
    for r in sorted(rows, key=lambda r: (r["model"], -r["throughput"])):
        cells = [r["model"], r["config"], r["instances"], r["max_batch"], r["max_queue_delay_us"],
                 r["concurrency"], f"{r['throughput']:.2f}", f"{r['p99_ms']:.1f}"]
        lines.append("| " + " | ".join(map(str, cells)) + " |")
    lines += ["", "Chosen (highest throughput; within 3 % of it, fewest instances), shipped in "
              "`perf/tuned_cpu.json`:", "", "```json", json.dumps(tuned, indent=2), "```"]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model-repository", type=Path, default=ROOT / "model_repository")
    p.add_argument("--ensemble", action="store_true", help="also run the (slow) quick search over `rtmo`")
    p.add_argument("--summarize-only", action="store_true", help="re-read the last run's checkpoint")
    args = p.parse_args(argv)
    if not args.summarize_only:
        if not MODEL_ANALYZER.exists():
            print(f"{MODEL_ANALYZER} missing: run `make setup`", file=sys.stderr)
            return 2
        onnx = args.model_repository / spec.ENGINE_NAME / "1" / "model.onnx"
        write_input_data(ROOT / "reports" / "perf" / "inputs", onnx)
        for name in ["composing"] + (["ensemble"] if args.ensemble else []):
            shutil.rmtree(OUT / ("checkpoints" if name == "composing" else "checkpoints_ensemble"),
                          ignore_errors=True)
            cmd = [str(MODEL_ANALYZER), "profile", "-f", str(CONFIGS[name]),
                   "--model-repository", str(args.model_repository.resolve())]
            print("$ " + " ".join(cmd), flush=True)
            if subprocess.run(cmd, cwd=ROOT).returncode != 0:
                print(f"model-analyzer {name} sweep failed; see {OUT}", file=sys.stderr)
                return 1
    rows = measurements(OUT / "checkpoints" / "0.ckpt")
    ensemble_ckpt = OUT / "checkpoints_ensemble" / "0.ckpt"
    if ensemble_ckpt.is_file():
        rows += measurements(ensemble_ckpt)
    tuned = choose(rows)
    TUNED_CPU.write_text(json.dumps(tuned, indent=2) + "\n")
    (OUT / "summary.md").write_text(summary(rows, tuned))
    print(summary(rows, tuned))
    print(f"written {TUNED_CPU} (applied by the next `make build-engines`) and {OUT / 'summary.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
