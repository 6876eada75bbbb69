#!/usr/bin/env python3
"""``make demo``: build the default model if needed, serve it, run the client, stop the server.

Everything a newcomer needs to see the stack work end to end on a CPU: the
outputs (one JSON and one overlay per image) and the server log stay in
``--out-dir``.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from rtmo_triton.build import repository as build
from rtmo_triton.client.cli import main as client_main
from rtmo_triton.serve.local import TritonServer, exit_on_sigterm
from rtmo_triton.spec import ENSEMBLE_NAME


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("paths", nargs="+", help="images or folders to send")
    parser.add_argument("--model-repository", type=Path, default=build.DEFAULT_REPOSITORY)
    parser.add_argument("--out-dir", type=Path, default=Path("out/demo"))
    args = parser.parse_args(argv)
    exit_on_sigterm()
    if not (args.model_repository / ENSEMBLE_NAME / "config.pbtxt").is_file():
        print(f"[demo] no model in {args.model_repository}: building the default one", flush=True)
        if build.main(["--model-repository", str(args.model_repository), "--engine", "onnx"]) != 0:
            return 1
    args.out_dir.mkdir(parents=True, exist_ok=True)
    log = args.out_dir / "tritonserver.log"
    print(f"[demo] starting tritonserver on {args.model_repository} (log: {log})", flush=True)
    with TritonServer(args.model_repository, log_path=log) as server:
        print(f"[demo] server ready in {server.start_seconds:.1f} s at {server.http_url}", flush=True)
        status = client_main(["--url", server.http_url, "--out-dir", str(args.out_dir), "--overlay",
                              *map(str, args.paths)])
    print("[demo] server stopped", flush=True)
    outputs = sorted(p for p in args.out_dir.iterdir() if p.suffix in (".json", ".png"))
    print("[demo] outputs:\n" + "\n".join(f"  {p}" for p in outputs), flush=True)
    return status


if __name__ == "__main__":
    sys.exit(main())
