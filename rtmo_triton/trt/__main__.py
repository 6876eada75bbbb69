"""``python -m rtmo_triton.trt``: build a plan, check one against this host, or show the engine flavour.

    python -m rtmo_triton.trt build --onnx model_repository/rtmo_engine/model.onnx \\
        --plan model_repository/rtmo_engine/1/model.plan [--precision fp16] [--max-batch 8]
    python -m rtmo_triton.trt check --plan model_repository/rtmo_engine/1/model.plan
    python -m rtmo_triton.trt flavour [--engine auto|trt|onnx]

Exit status 0: done; 1: the plan does not match this host; 2: TensorRT, a GPU or a file is missing.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .. import spec
from .build import DEFAULT_WORKSPACE_GIB, PRECISIONS, BuildError, build_plan
from .compat import EngineMismatch, NoPlatform, require_compat
from .flavour import FLAVOURS, FlavourError, choose_flavour


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m rtmo_triton.trt", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build", help="ONNX → TensorRT plan (+ build record)")
    b.add_argument("--onnx", type=Path, required=True)
    b.add_argument("--plan", type=Path, required=True)
    b.add_argument("--precision", choices=PRECISIONS, default="fp16")
    b.add_argument("--min-batch", type=int, default=1)
    b.add_argument("--opt-batch", type=int, default=spec.DEFAULT_MAX_BATCH)
    b.add_argument("--max-batch", type=int, default=spec.DEFAULT_MAX_BATCH)
    b.add_argument("--workspace-gib", type=float, default=DEFAULT_WORKSPACE_GIB)
    b.add_argument("--timing-cache", type=Path)
    b.add_argument("--log", type=Path)
    c = sub.add_parser("check", help="does this plan load on this host?")
    c.add_argument("--plan", type=Path, required=True)
    f = sub.add_parser("flavour", help="which engine `make build-engines` would build here")
    f.add_argument("--engine", choices=FLAVOURS, default="auto")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        if args.command == "build":
            if not args.onnx.is_file():
                raise FileNotFoundError(f"ONNX file not found: {args.onnx}")
            build_plan(args.onnx, args.plan, args.precision, args.opt_batch, args.max_batch, args.min_batch,
                       args.workspace_gib, args.timing_cache, args.log)
        elif args.command == "check":
            if not args.plan.is_file():
                raise FileNotFoundError(f"plan not found: {args.plan}")
            for warning in require_compat(args.plan):
                print(f"warning: {warning}")
            print(f"{args.plan}: matches this host")
        else:
            flavour = choose_flavour(args.engine)
            print(f"{flavour.name}: {flavour.reason}")
    except EngineMismatch as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except (BuildError, NoPlatform, FlavourError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
