"""``make analyze``: model-analyzer's sweeps, and the settings they find shipped as the defaults.

Runs ``model-analyzer profile`` with perf/analyzer/cpu_composing.yaml
(``--search ensemble``: cpu_ensemble.yaml, the quick search over `rtmo`,
which starts from the repository's current configs, so run it after the
composing sweep and a rebuild; ``--search gpu``: gpu_composing.yaml on a GPU
host), reads every measurement from its checkpoint (kept under
reports/model-analyzer/ as the run's raw data), and writes:

- reports/model-analyzer/summary.md (summary_gpu.md): every configuration and concurrency measured;
- reports/model-analyzer/ensemble.md: the ensemble's trials, against the shipped configs;
- perf/tuned_cpu.json (tuned_gpu.json): per composing model, the instance count and batching
  delay (and, for the CPU engine, onnxruntime's intra-op threads per instance; 0 = every core)
  of the configuration with the highest throughput (within 3 % of it, the one using fewer instances), which
  ``rtmo_triton.serving.configs.load_scheduling`` applies at the next ``make build-engines``.
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
from rtmo_triton.serving.configs import TUNED_CPU, TUNED_GPU, engine_onnx  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
MODEL_ANALYZER = ROOT / ".tools" / "bin" / "model-analyzer"
CONFIGS = {"composing": ROOT / "perf" / "analyzer" / "cpu_composing.yaml",
           "ensemble": ROOT / "perf" / "analyzer" / "cpu_ensemble.yaml",
           "gpu": ROOT / "perf" / "analyzer" / "gpu_composing.yaml"}
OUT = ROOT / "reports" / "model-analyzer"
NEAR_BEST = 0.97


def _settings(config: dict) -> dict:
    """Instance count, max batch, batching delay and (engine) intra-op threads of one model config."""
    threads = config.get("parameters", {}).get("intra_op_threads", {}).get("stringValue")
    return {
        "instances": sum(int(g.get("count", 1)) for g in config.get("instanceGroup", [{}])),
        "max_batch": int(config.get("maxBatchSize", 0)),
        "max_queue_delay_us": int(config.get("dynamicBatching", {}).get("maxQueueDelayMicroseconds", 0)),
        **({"intra_op_threads": int(threads)} if threads is not None else {}),
    }


def measurements(checkpoint: Path) -> list[dict]:
    """One row per (model, configuration, concurrency) from model-analyzer's checkpoint.

    An ensemble's row also carries ``composing``: each composing model's settings in that trial.
    """
    results = json.loads(checkpoint.read_text())["ResultManager.results"]["_results"]
    rows = []
    for model, variants in results.items():
        for variant, (run_config, by_command) in variants.items():
            model_run = run_config["_model_run_configs"][0]
            settings = _settings(model_run["_model_config_variant"]["model_config"])
            composing = {c["model_config"]["name"]: _settings(c["model_config"])
                         for c in model_run.get("_composing_config_variants", [])}
            for measurement in by_command.values():
                for m in measurement["_model_config_measurements"]:
                    data = {name: value["_value"] for name, value in m["_non_gpu_data"]}
                    rows.append({
                        "model": model, "config": variant, **settings,
                        **({"composing": composing} if composing else {}),
                        "concurrency": int(m["_model_specific_pa_params"]["concurrency-range"]),
                        "throughput": float(data.get("perf_throughput", 0.0)),
                        "p99_ms": float(data.get("perf_latency_p99", 0.0)),
                    })
    return rows


def layout(composing: dict) -> str:
    """``rtmo_engine 2×b8 (1 thr)`` etc.: one trial's composing settings, compactly."""
    parts = []
    for name, c in composing.items():
        threads = f" {c['intra_op_threads']} thr" if "intra_op_threads" in c else ""
        delay = f" {c['max_queue_delay_us']}µs" if c["max_queue_delay_us"] else ""
        parts.append(f"{name.removeprefix('rtmo_')} {c['instances']}×b{c['max_batch']}{threads}{delay}")
    return ", ".join(parts)


def choose(rows: list[dict]) -> dict[str, dict[str, int]]:
    tuned = {}
    for model in sorted({r["model"] for r in rows if "composing" not in r} - {spec.ENSEMBLE_NAME}):
        mine = [r for r in rows if r["model"] == model]
        best = max(r["throughput"] for r in mine)
        near = [r for r in mine if r["throughput"] >= NEAR_BEST * best]
        pick = min(near, key=lambda r: (r["instances"], -r["throughput"]))
        keys = ("instances", "max_queue_delay_us", "max_batch", "intra_op_threads")
        tuned[model] = {k: pick[k] for k in keys if k in pick}
    return tuned


def summary(rows: list[dict], tuned: dict, tuned_file: Path = TUNED_CPU) -> str:
    """A composing-model sweep: every measurement and the choice written to the tuned file."""
    where = "GPU" if tuned_file == TUNED_GPU else "CPU"
    lines = [f"# model-analyzer on {where}: composing models\n",
             "Every configuration and concurrency measured (each composing model alone, perf_analyzer "
             "inside model-analyzer, gRPC, real 640x480 inputs). The ensemble's quick search is in "
             "[ensemble.md](ensemble.md).\n",
             "| model | config | instances | intra-op threads | max batch | queue delay µs | concurrency "
             "| infer/s | p99 ms |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in sorted(rows, key=lambda r: (r["model"], -r["throughput"])):
        cells = [r["model"], r["config"], r["instances"], r.get("intra_op_threads", "–"), r["max_batch"],
                 r["max_queue_delay_us"],
                 r["concurrency"], f"{r['throughput']:.2f}", f"{r['p99_ms']:.1f}"]
        lines.append("| " + " | ".join(map(str, cells)) + " |")
    lines += ["", "Chosen (highest throughput; within 3 % of it, fewest instances), shipped in "
              f"`{tuned_file.relative_to(ROOT)}`:", "", "```json", json.dumps(tuned, indent=2), "```"]
    return "\n".join(lines) + "\n"


def ensemble_summary(rows: list[dict]) -> str:
    """The quick search over `rtmo`: each trial's composing layout, best first, against the shipped one."""
    lines = ["# model-analyzer on CPU: the `rtmo` ensemble (quick search)\n",
             "`make analyze-ensemble`: model-analyzer varies the composing models' instance counts and max "
             "batch sizes together, starting from the repository's configs (`rtmo_config_default`: the "
             "shipped ones, engine threads included, which the search keeps). A max batch below the "
             "ensemble's contract (8) is not shippable; the search uses it to tell whether batching helps.\n",
             "| config | ensemble max batch | composing (instances×max batch) | concurrency | infer/s "
             "| p99 ms |", "|---|---|---|---|---|---|"]
    for r in sorted(rows, key=lambda r: -r["throughput"]):
        cells = [r["config"], r["max_batch"], layout(r["composing"]), r["concurrency"],
                 f"{r['throughput']:.2f}", f"{r['p99_ms']:.1f}"]
        lines.append("| " + " | ".join(map(str, cells)) + " |")
    best = max(rows, key=lambda r: r["throughput"])
    default = [r["throughput"] for r in rows if r["config"].endswith("config_default")]
    lines += ["", f"Best trial: {best['config']} at {best['throughput']:.2f} infer/s "
              f"(concurrency {best['concurrency']})"
              + (f"; the shipped configs reach {max(default):.2f} infer/s." if default else ".")]
    return "\n".join(lines) + "\n"


CHECKPOINTS = {"composing": OUT / "checkpoints" / "0.ckpt",
               "ensemble": OUT / "checkpoints_ensemble" / "0.ckpt",
               "gpu": OUT / "checkpoints_gpu" / "0.ckpt"}
TUNED = {"composing": TUNED_CPU, "gpu": TUNED_GPU}
SUMMARIES = {"composing": OUT / "summary.md", "ensemble": OUT / "ensemble.md", "gpu": OUT / "summary_gpu.md"}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model-repository", type=Path, default=ROOT / "model_repository")
    p.add_argument("--search", choices=tuple(CONFIGS), default="composing",
                   help="composing: sweep each composing model (writes perf/tuned_cpu.json); ensemble: "
                        "quick search over `rtmo` from the current repository's configs (slow); gpu: the "
                        "GPU host's sweep (writes perf/tuned_gpu.json)")
    p.add_argument("--summarize-only", action="store_true", help="re-read the last runs' checkpoints")
    args = p.parse_args(argv)
    if not args.summarize_only:
        if not MODEL_ANALYZER.exists():
            print(f"{MODEL_ANALYZER} missing: run `make setup`", file=sys.stderr)
            return 2
        onnx = engine_onnx(args.model_repository)
        write_input_data(ROOT / "reports" / "perf" / "inputs", onnx)
        shutil.rmtree(CHECKPOINTS[args.search].parent, ignore_errors=True)
        cmd = [str(MODEL_ANALYZER), "profile", "-f", str(CONFIGS[args.search]),
               "--model-repository", str(args.model_repository.resolve())]
        print("$ " + " ".join(cmd), flush=True)
        if subprocess.run(cmd, cwd=ROOT).returncode != 0:
            print(f"model-analyzer {args.search} search failed; see {OUT}", file=sys.stderr)
            return 1
    searches = ([k for k, v in CHECKPOINTS.items() if v.is_file()] if args.summarize_only
                else [args.search])
    if not searches or not CHECKPOINTS[searches[0]].is_file():
        print(f"no model-analyzer checkpoint under {OUT}: run `make analyze` first", file=sys.stderr)
        return 1
    for search in searches:
        rows = measurements(CHECKPOINTS[search])
        if search in TUNED:
            tuned = choose(rows)
            TUNED[search].write_text(json.dumps(tuned, indent=2) + "\n")
            text = summary(rows, tuned, TUNED[search])
            print(f"written {TUNED[search]} (applied by the next `make build-engines`)")
        else:
            text = ensemble_summary(rows)
        path = SUMMARIES[search]
        path.write_text(text)
        print(text)
        print(f"written {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
