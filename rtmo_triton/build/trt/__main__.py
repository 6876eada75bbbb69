"""``python -m rtmo_triton.build.trt``: build a plan, check one against this host, or show the engine flavour.

    python -m rtmo_triton.build.trt build --onnx model_repository/rtmo_engine/model.onnx \\
        --plan model_repository/rtmo_engine/1/model.plan [--precision fp16] [--opt-batch 4] [--max-batch 8] \\
        [--strongly-typed]   # with the FP16 graph of `python -m rtmo_triton.build.export --precision fp16`
    python -m rtmo_triton.build.trt check --plan model_repository/rtmo_engine/1/model.plan
    python -m rtmo_triton.build.trt flavour [--engine auto|trt|torch|onnx]

Exit status 0: done; 1: the plan does not match this host; 2: TensorRT, a GPU or a file is missing,
or a bad argument; 130: interrupted.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ... import spec
from ..flavour import FLAVOURS, FlavourError, choose_flavour
from .build import DEFAULT_WORKSPACE_GIB, TYPICAL_BATCH, BuildError, build_plan
from .compat import EngineMismatch, NoPlatform, check_served


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {text}")
    return value


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m rtmo_triton.build.trt", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build", help="ONNX → TensorRT plan (+ build record <plan>.json)")
    b.add_argument("--onnx", type=Path, required=True,
                   help="graph written by python -m rtmo_triton.build.export")
    b.add_argument("--plan", type=Path, required=True, help="e.g. model_repository/rtmo_engine/1/model.plan")
    b.add_argument("--precision", choices=spec.PRECISIONS, default=spec.DEFAULT_PRECISION,
                   help="compute precision (I/O stays)")
    b.add_argument("--min-batch", type=_positive_int, default=1)
    b.add_argument("--opt-batch", type=_positive_int, default=TYPICAL_BATCH,
                   help="the batch TensorRT tunes for (default: %(default)s, capped at --max-batch)")
    b.add_argument("--max-batch", type=_positive_int, default=spec.DEFAULT_MAX_BATCH)
    b.add_argument("--workspace-gib", type=_positive_float, default=DEFAULT_WORKSPACE_GIB)
    b.add_argument("--timing-cache", type=Path, help="default: timing.cache beside the version folder")
    b.add_argument("--log", type=Path, help="default: build.log beside the version folder")
    b.add_argument("--strongly-typed", action="store_true",
                   help="follow the graph's types (the FP16 graph and its FP32 casts), no precision flags")
    c = sub.add_parser("check", help="does this plan load on this host (its TensorRT and GPU)?")
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
            build_plan(args.onnx, args.plan, args.precision, min(args.opt_batch, args.max_batch),
                       args.max_batch, args.min_batch, args.workspace_gib, args.timing_cache, args.log,
                       strongly_typed=args.strongly_typed)
        elif args.command == "check":
            if not args.plan.is_file():
                raise FileNotFoundError(f"plan not found: {args.plan}")
            for warning in check_served(args.plan):
                print(f"warning: {warning}")
            print(f"{args.plan}: matches this host")
        else:
            flavour = choose_flavour(args.engine)
            where = f" ({flavour.device})" if flavour.name == "torch" else ""
            print(f"{flavour.name}{where}: {flavour.reason}")
    except EngineMismatch as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except (BuildError, NoPlatform, FlavourError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
