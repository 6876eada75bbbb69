"""``make build-engines``: a checkpoint in, a servable Triton model repository out.

Steps: pick the engine flavour, load the checkpoint (or deterministic random
RTMO-s weights, announced loudly), export the ONNX deploy graph, build the
TensorRT plan when the flavour is ``trt``, install the Python models with the
code and packages they bring (``packages``) and render every config from one
``RepositorySpec``. The result depends on nothing of this machine: copy it
anywhere Triton reads a repository from.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from .. import spec
from .configs import FLAVOUR_FILES, RepositorySpec, load_scheduling, write_configs
from .packages import TORCH_ENGINE, PackagingError, default_pythons, install_python_model

DEFAULT_REPOSITORY = Path(spec.DEFAULT_REPOSITORY)
DEFAULT_WORKSPACE = Path("build")
"""Packed packages, logs and caches of the build; reused by later builds."""

RANDOM_SEED = 0
RANDOM_WARNING = (
    "NO CHECKPOINT GIVEN: building RTMO-{variant} with DETERMINISTIC RANDOM WEIGHTS (seed {seed}).",
    "The served people are meaningless; use it to try the stack.",
    "To serve a real model:  make build-engines CHECKPOINT=path/to/rtmo.pth",
)


def banner(lines: tuple[str, ...], **values: object) -> str:
    text = [line.format(**values) for line in lines]
    width = max(map(len, text))
    rule = "#" * (width + 6)
    return "\n".join([rule, *(f"#  {t:<{width}}  #" for t in text), rule])


def log(message: str) -> None:
    print(f"[build-engines] {message}", flush=True)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m rtmo_triton.build",
                                description=__doc__.split("\n")[0])
    p.add_argument("--checkpoint", type=Path, help="official RTMO checkpoint (.pth); omit for random RTMO-s")
    p.add_argument("--model-repository", type=Path, default=DEFAULT_REPOSITORY)
    p.add_argument("--workspace", type=Path, default=DEFAULT_WORKSPACE,
                   help="build workspace: packed packages are kept there and reused")
    p.add_argument("--pythons", default=" ".join(default_pythons()),
                   help="CPython versions the Python models carry packages for, e.g. '3.10 3.12'; "
                        "'none': rely on the server interpreter's own packages (default: %(default)s)")
    p.add_argument("--topk", type=int, default=spec.DEFAULT_TOPK, help="candidate cells per image (K)")
    p.add_argument("--score-thr", type=float, default=spec.DEFAULT_SCORE_THR)
    p.add_argument("--nms-thr", type=float, default=spec.DEFAULT_NMS_THR)
    p.add_argument("--max-batch", type=int, default=spec.DEFAULT_MAX_BATCH, help="images per request")
    p.add_argument("--max-pixels", type=int, default=spec.DEFAULT_MAX_PIXELS,
                   help="images declaring more pixels are refused before decoding")
    p.add_argument("--max-queue", type=int, default=spec.DEFAULT_MAX_QUEUE,
                   help="waiting requests per model before more are refused as busy (0: unbounded)")
    p.add_argument("--engine", default="auto", choices=("auto", "trt", "torch", "onnx"),
                   help="trt: TensorRT plan (GPU); torch: PyTorch in a Python model (CUDA where visible, "
                        "else CPU; the server's Python must have torch); onnx: onnxruntime in a Python "
                        "model (CPU); auto: trt, else torch on CUDA, else onnx")
    p.add_argument("--precision", default="fp16", choices=("fp16", "fp32"),
                   help="GPU compute (TensorRT, or torch on CUDA): fp16 keeps the DCC's bin code FP32; "
                        "fp32 is without TF32")
    p.add_argument("--engine-threads", type=int, default=None,
                   help="onnxruntime intra-op threads per CPU-engine instance (0: onnxruntime's default; "
                        "default: the serving host's usable cores shared among the engine instances)")
    p.add_argument("--tuned", type=Path, default=None,
                   help="JSON of instances, batching delays and engine threads per model (make analyze "
                        "writes one) overriding the shipped defaults")
    args = p.parse_args(argv)
    if args.topk < 1:
        p.error(f"--topk must be ≥ 1, got {args.topk}")
    if args.engine_threads is not None and args.engine_threads < 0:
        p.error(f"--engine-threads must be ≥ 0, got {args.engine_threads}")
    if args.checkpoint is not None and not args.checkpoint.is_file():
        p.error(f"checkpoint not found: {args.checkpoint}")
    if args.tuned is not None and not args.tuned.is_file():
        p.error(f"tuned file not found: {args.tuned}")
    args.pythons = () if args.pythons.strip() == "none" else tuple(args.pythons.split())
    bad = [v for v in args.pythons if not v.replace(".", "").isdigit() or v.count(".") != 1]
    if bad:
        p.error(f"--pythons takes versions like 3.10 or 'none', got {', '.join(bad)}")
    return args


def load_weights(checkpoint: Path | None):
    """The model and what to say about its weights in the served config."""
    from ..model import load_checkpoint, random_model
    from .export import sha256

    if checkpoint is None:
        print(banner(RANDOM_WARNING, variant=spec.DEFAULT_VARIANT.upper(), seed=RANDOM_SEED), file=sys.stderr,
              flush=True)
        model = random_model(spec.DEFAULT_VARIANT, seed=RANDOM_SEED)
        return model, {"random_weights": "true",
                       "weights": f"deterministic random RTMO-{spec.DEFAULT_VARIANT} (seed {RANDOM_SEED}), "
                                  "not a trained model"}
    model, info = load_checkpoint(checkpoint)
    log(f"loaded {checkpoint}: RTMO-{info.variant}, {info.num_keypoints} keypoints"
        + (", deploy form" if info.deploy_form else ""))
    return model, {"random_weights": "false", "checkpoint": checkpoint.name,
                   "checkpoint_sha256": sha256(checkpoint)}


def build_or_reuse_plan(onnx_path: Path, plan: Path, precision: str, max_batch: int) -> None:
    """Rebuilding takes minutes: keep a plan built from this very graph, for this host, as asked."""
    from .export import sha256
    from .trt.build import build_plan, typical_batch
    from .trt.compat import EngineMismatch, check_compat, current_platform, read_record

    if plan.is_file():
        try:
            record = read_record(plan)
        except EngineMismatch:
            record = None
        wanted = (sha256(onnx_path), precision, typical_batch(max_batch), max_batch)
        if record and (record.onnx_sha256, record.precision, record.opt_batch, record.max_batch) == wanted:
            problems, _ = check_compat(record, current_platform())
            if not problems:
                log(f"TensorRT plan up to date, kept: {plan}")
                return
            log("existing plan does not match this host (" + "; ".join(problems) + "): rebuilding")
    log(f"building the TensorRT {precision} plan (minutes) ...")
    build_plan(onnx_path, plan, precision=precision, opt_batch=typical_batch(max_batch), max_batch=max_batch)


def build(args: argparse.Namespace) -> Path:
    from .export import export_onnx, export_torch
    from .flavour import choose_flavour

    start = time.perf_counter()
    flavour = choose_flavour(args.engine)
    log(f"engine flavour: {flavour.name} ({flavour.reason})")
    repo = args.model_repository
    model, provenance = load_weights(args.checkpoint)
    version_dir = repo / spec.ENGINE_NAME / "1"
    version_dir.mkdir(parents=True, exist_ok=True)
    # ONNX flavour: the graph is the served file. TensorRT: it stays beside the
    # version folder (Triton ignores it there) as the plan's source.
    served_onnx = version_dir / FLAVOUR_FILES["onnx"]
    onnx_path = served_onnx if flavour.name == "onnx" else repo / spec.ENGINE_NAME / FLAVOUR_FILES["onnx"]
    weights = version_dir / FLAVOUR_FILES["torch"]
    if flavour.name == "torch":  # the deploy graph's weights: PyTorch runs them in the server
        log(f"saving the PyTorch deploy graph (K={args.topk}) to {weights} ...")
        export_torch(model, weights.with_suffix(".partial.pt"), topk=args.topk, metadata=provenance)
        weights.with_suffix(".partial.pt").replace(weights)
        served_onnx.unlink(missing_ok=True)
    else:
        weights.unlink(missing_ok=True)
        partial = onnx_path.with_suffix(".partial.onnx")
        log(f"exporting the ONNX deploy graph (K={args.topk}) to {onnx_path} ...")
        export_onnx(model, partial, topk=args.topk, metadata=provenance)
        partial.replace(onnx_path)  # a failed export never replaces a working graph
    topk = spec.served_topk(args.topk, model.variant.input_size)
    scheduling = load_scheduling(args.tuned)
    if flavour.name == "trt":
        # the plan's profile must cover the engine's max_batch_size, which tuning may raise
        plan_batch = max(args.max_batch, scheduling[spec.ENGINE_NAME].max_batch)
        build_or_reuse_plan(onnx_path, version_dir / FLAVOUR_FILES["trt"], args.precision, plan_batch)
        served_onnx.unlink(missing_ok=True)
    else:
        (version_dir / FLAVOUR_FILES["trt"]).unlink(missing_ok=True)
    python_models = [spec.PREPROCESS_NAME, spec.DECODE_NAME]
    for name in python_models + ([spec.ENGINE_NAME] if flavour.name == "onnx" else []):
        install_python_model(repo, name, pythons=args.pythons, workspace=args.workspace, log=log)
    if flavour.name == "torch":
        install_python_model(repo, spec.ENGINE_NAME, pythons=args.pythons, workspace=args.workspace, log=log,
                             module=TORCH_ENGINE)
    repo_spec = RepositorySpec(
        variant=model.variant.name, input_size=model.variant.input_size, num_keypoints=model.num_keypoints,
        topk=topk, flavour=flavour.name, engine_device=flavour.device, engine_precision=args.precision,
        max_batch=args.max_batch, score_thr=args.score_thr,
        nms_thr=args.nms_thr, max_pixels=args.max_pixels, max_queue=args.max_queue,
        engine_threads=args.engine_threads, scheduling=scheduling, provenance=provenance,
    )
    write_configs(repo, repo_spec)
    log(f"model repository ready in {time.perf_counter() - start:.1f} s: {repo}")
    log(f"  RTMO-{repo_spec.variant} {repo_spec.input_size}px, K={topk}, score>{args.score_thr}, "
        f"NMS {args.nms_thr}, max batch {args.max_batch}, engine {flavour.name}")
    carried = ", ".join(args.pythons) or "none (the server's interpreter provides them)"
    log(f"  Python models carry packages for Python {carried}")
    log(f"serve it: tritonserver --model-repository {repo}")
    return repo


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from ..model import CheckpointError
    from .flavour import FlavourError
    from .trt.build import BuildError
    from .trt.compat import NoPlatform

    try:
        build(args)
    except (CheckpointError, FlavourError, BuildError, NoPlatform, PackagingError) as exc:
        print(f"[build-engines] error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
