"""``make perf``: perf_analyzer against `rtmo` and each composing model, on a server it starts itself.

For every benchmark image size the ensemble and the preprocess model get a
concurrency sweep; the engine and the decoder see the same tensors whatever
the image size (a 640×640 input, K candidates), so they are swept once on
the 640×480 image's tensors. Each run writes perf_analyzer's CSV and the
server's statistics around it (``/v2/models/stats``), which the report
turns into time per stage.

    python perf/perf_sweep.py [--concurrency 1,2,4] [--out reports/perf]
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from perf.inputs import write_input_data  # noqa: E402
from rtmo_triton import spec  # noqa: E402
from rtmo_triton.serving.server import TritonServer  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
PERF_ANALYZER = ROOT / ".tools" / "bin" / "perf_analyzer"


def server_stats(server: TritonServer) -> dict:
    with urllib.request.urlopen(f"http://{server.http_url}/v2/models/stats", timeout=10) as r:
        return json.loads(r.read())


def perf_analyzer(server: TritonServer, model: str, input_data: Path, concurrency: str, csv: Path,
                  window_ms: int) -> int:
    cmd = [str(PERF_ANALYZER), "-m", model, "-u", server.grpc_url, "-i", "grpc",
           "--input-data", str(input_data), "--concurrency-range", concurrency,
           "--measurement-interval", str(window_ms), "--stability-percentage", "15", "--max-trials", "8",
           "--percentile", "95", "-f", str(csv), "--verbose-csv"]
    print("$ " + " ".join(cmd), flush=True)
    return subprocess.run(cmd).returncode


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model-repository", type=Path, default=ROOT / "model_repository")
    p.add_argument("--concurrency", default="1:4", help="perf_analyzer --concurrency-range start:end[:step]")
    p.add_argument("--window-ms", type=int, default=5000)
    p.add_argument("--out", type=Path, default=ROOT / "reports" / "perf")
    p.add_argument("--models", default=",".join((spec.ENSEMBLE_NAME, spec.PREPROCESS_NAME, spec.ENGINE_NAME,
                                                 spec.DECODE_NAME)))
    args = p.parse_args(argv)
    if not PERF_ANALYZER.exists():
        print(f"{PERF_ANALYZER} missing: run `make setup` (perf/install_tools.sh)", file=sys.stderr)
        return 2
    if not (args.model_repository / spec.ENSEMBLE_NAME / "config.pbtxt").exists():
        print(f"no model in {args.model_repository}: run `make build-engines` first", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    onnx = args.model_repository / spec.ENGINE_NAME / "1" / "model.onnx"
    inputs = write_input_data(args.out / "inputs", onnx if onnx.exists() else None)
    models = args.models.split(",")
    failures = 0
    with TritonServer(args.model_repository, log_path=args.out / "tritonserver.log") as server:
        print(f"tritonserver ready in {server.start_seconds:.2f} s", flush=True)
        (args.out / "server_start.json").write_text(json.dumps({"start_seconds": server.start_seconds}))
        for label, files in inputs.items():
            for model in models:
                per_size = model in (spec.ENSEMBLE_NAME, spec.PREPROCESS_NAME)
                if model not in files or (not per_size and label != next(iter(inputs))):
                    continue
                stem = f"{model}_{label}" if per_size else model
                before = server_stats(server)
                code = perf_analyzer(server, model, files[model], args.concurrency, args.out / f"{stem}.csv",
                                     args.window_ms)
                after = server_stats(server)
                (args.out / f"{stem}.stats.json").write_text(json.dumps({"before": before, "after": after}))
                failures += code != 0
    print(f"perf_analyzer results in {args.out} ({failures} failed runs)")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
