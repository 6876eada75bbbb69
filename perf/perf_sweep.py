"""``make perf``: perf_analyzer against `rtmo` and each composing model, on a server it starts itself.

The ensemble and the preprocess model are swept at every benchmark image size; the engine and the
decoder see the same tensors whatever the size (640×640 in, K candidates out), so once, on the 640×480
image's. Each run writes perf_analyzer's CSV and the server's statistics around it, which the report
turns into time per stage; server_start.json records the start time, machine, versions and model.

    python -m perf.perf_sweep [--concurrency 1,2,4] [--out reports/perf]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import urllib.request
from importlib.metadata import distributions
from pathlib import Path

from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from perf.inputs import write_input_data
from rtmo_triton import spec
from rtmo_triton.build.configs import engine_onnx
from rtmo_triton.serve.local import TritonServer, exit_on_sigterm

ROOT = Path(__file__).resolve().parents[1]
PERF_ANALYZER = ROOT / ".tools" / "bin" / "perf_analyzer"
MODELS = (spec.ENSEMBLE_NAME, spec.PREPROCESS_NAME, spec.ENGINE_NAME, spec.DECODE_NAME)


def server_stats(server: TritonServer) -> dict:
    with urllib.request.urlopen(f"http://{server.http_url}/v2/models/stats", timeout=10) as r:
        return json.loads(r.read())


def perf_analyzer(server: TritonServer, model: str, input_data: Path, concurrency: int, csv: Path,
                  requests_per_window: int) -> int:
    """One concurrency level; windows hold a fixed number of requests so slow models get long windows."""
    cmd = [str(PERF_ANALYZER), "-m", model, "-u", server.grpc_url, "-i", "grpc",
           "--input-data", str(input_data), "--concurrency-range", str(concurrency),
           "--measurement-mode", "count_windows", "--measurement-request-count", str(requests_per_window),
           "--stability-percentage", "20", "--max-trials", "10", "-f", str(csv), "--verbose-csv",
           # works on CPU too: the GPU columns stay empty (perf_analyzer warns it found no nv_gpu_* metric)
           "--collect-metrics", "--metrics-url", server.metrics_url, "--metrics-interval", "1000"]
    print("$ " + " ".join(cmd), flush=True)
    return subprocess.run(cmd).returncode


def sweep(server: TritonServer, model: str, input_data: Path, levels: list[int], csv: Path,
          requests_per_window: int) -> int:
    """Each level on its own, so one level that never stabilises does not lose the others."""
    header, rows, failures = None, [], 0
    for level in levels:
        part = csv.with_suffix(f".c{level}.csv")
        code = perf_analyzer(server, model, input_data, level, part, requests_per_window)
        if code != 0 or not part.exists():
            failures += 1
            continue
        header, *lines = part.read_text().splitlines()
        rows += lines
        part.unlink()
    if header:
        csv.write_text("\n".join([header, *rows]) + "\n")
    return failures


def perf_analyzer_missing() -> str | None:
    """What to do where the tools ``make setup`` installs are not there, or None."""
    if PERF_ANALYZER.exists():
        return None
    return f"{PERF_ANALYZER} missing: run `make setup` (perf/install_tools.sh)"


def run_facts(repo: Path) -> dict[str, str]:
    """What the figures depend on, recorded when they are measured."""
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    installed = {d.metadata["Name"].lower(): d.version for d in distributions()}
    dists = ("nvidia-pytriton", "tritonclient", "onnxruntime", "opencv-python-headless", "simplejpeg")
    config = text_format.Parse((repo / spec.ENSEMBLE_NAME / "config.pbtxt").read_text(), mc.ModelConfig())
    p = {k: v.string_value for k, v in config.parameters.items()}
    P = spec.Param
    weights = "random weights" if p.get(P.RANDOM_WEIGHTS) == "true" else p.get(P.CHECKPOINT, "?")
    if P.BENCHMARK_PEOPLE in p:
        weights = f"BENCHMARK random weights (~{p[P.BENCHMARK_PEOPLE]} people per image)"
    return {"machine": f"{cpu}, {os.cpu_count()} cores, {platform.platform()}, "
                       f"Python {platform.python_version()}",
            "versions": ", ".join(f"{d} {installed[d]}" for d in (*dists, "numpy") if d in installed),
            "model": f"RTMO-{p[P.VARIANT]} {p[P.INPUT_SIZE]}px, {p[P.KEYPOINT_DATASET]} keypoints, "
                     f"K={p[P.TOPK]}, engine {p[P.ENGINE_FLAVOUR]}, {weights}"}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model-repository", type=Path, default=ROOT / spec.DEFAULT_REPOSITORY)
    p.add_argument("--concurrency", default="1,2,3,4", help="comma-separated concurrency levels")
    p.add_argument("--window-requests", type=int, default=24,
                   help="requests per measurement window for the ensemble and the engine (4x for the rest)")
    p.add_argument("--out", type=Path, default=ROOT / "reports" / "perf")
    p.add_argument("--models", default=",".join(MODELS))
    args = p.parse_args(argv)
    exit_on_sigterm()
    if missing := perf_analyzer_missing():
        print(missing, file=sys.stderr)
        return 2
    if not (args.model_repository / spec.ENSEMBLE_NAME / "config.pbtxt").exists():
        print(f"no model in {args.model_repository}: run `make build-engines` first", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    onnx = engine_onnx(args.model_repository)
    inputs = write_input_data(args.out / "inputs", onnx if onnx.exists() else None)
    levels = [int(c) for c in args.concurrency.split(",")]
    failures = 0
    with TritonServer(args.model_repository, log_path=args.out / "tritonserver.log") as server:
        print(f"tritonserver ready in {server.start_seconds:.2f} s", flush=True)
        (args.out / "server_start.json").write_text(json.dumps(
            {"start_seconds": server.start_seconds, **run_facts(args.model_repository)}, indent=1))
        for label, files in inputs.items():
            for model in args.models.split(","):
                per_size = model in (spec.ENSEMBLE_NAME, spec.PREPROCESS_NAME)
                if model not in files or (not per_size and label != next(iter(inputs))):
                    continue
                stem = f"{model}_{label}" if per_size else model
                before = server_stats(server)
                slow = model in (spec.ENSEMBLE_NAME, spec.ENGINE_NAME)
                failures += sweep(server, model, files[model], levels, args.out / f"{stem}.csv",
                                  args.window_requests * (1 if slow else 4))
                after = server_stats(server)
                (args.out / f"{stem}.stats.json").write_text(json.dumps({"before": before, "after": after}))
    print(f"perf_analyzer results in {args.out} ({failures} failed runs)")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
