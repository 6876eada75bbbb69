"""``make build-engines``: a checkpoint in, a servable Triton model repository out.

Steps: pick the engine flavour, load the checkpoint (or deterministic random
RTMO-s weights, announced loudly; ``--benchmark-weights``: the same with the
classification bias set for a realistic people count, for benchmarks), export the ONNX deploy graph, build the
TensorRT plan when the flavour is ``trt``, install the Python models with the
code and packages they bring (``packages``) and render every config from one
``RepositorySpec``. All of it is written into a staging folder beside the
repository, whose model folders it replaces only when everything succeeded.
Nothing in the result names this machine: copy it anywhere Triton reads a
repository from (a TensorRT plan still needs the GPU model and TensorRT that
built it; the torch flavour, PyTorch in the server's Python).
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from .. import spec
from ..digest import file_sha256
from ..spec import Param
from .configs import FLAVOUR_FILES, RepositorySpec, engine_onnx, load_scheduling, write_configs
from .flavour import FLAVOURS, PREPROCESS_FORMS, Flavour
from .packages import GPU_MODULES, TORCH_ENGINE, PackagingError, default_pythons, install_python_model

if TYPE_CHECKING:
    import numpy as np

    from ..model import RTMO

DEFAULT_REPOSITORY = Path(spec.DEFAULT_REPOSITORY)
DEFAULT_WORKSPACE = Path("build")
"""Packed packages, logs and caches of the build; reused by later builds."""

RANDOM_SEED = 0
RANDOM_WARNING = (
    "NO CHECKPOINT GIVEN: building RTMO-{variant} with DETERMINISTIC RANDOM WEIGHTS (seed {seed}).",
    "The served people are meaningless; use it to try the stack.",
    "To serve a real model:  make build-engines CHECKPOINT=path/to/rtmo.pth",
)
BENCHMARK_WARNING = (
    "NO CHECKPOINT GIVEN: building a BENCHMARK RTMO-{variant}: DETERMINISTIC RANDOM WEIGHTS (seed {seed}),",
    "classification bias set for ~{people} people per image (score > {score_thr}, NMS {nms_thr}, K={topk}).",
    "The served people are meaningless; it loads the decoder as a real scene would, for benchmarks.",
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
    p.add_argument("--benchmark-weights", action="store_true",
                   help="without --checkpoint only: random RTMO-s whose classification bias lets "
                        f"~{spec.BENCHMARK_PEOPLE} people per image pass the score threshold (plain random "
                        "weights pass all K), labelled a benchmark model in the served config")
    p.add_argument("--calibration-images", type=Path, nargs="+", default=[], metavar="PATH",
                   help="with --benchmark-weights: the photos (files or folders of JPEG/PNG) it is "
                        "calibrated on (default: the random weights' synthetic image)")
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
    p.add_argument("--max-queue", type=int, default=None,
                   help="waiting requests per model before more are refused as busy (0: unbounded; "
                        f"default: {spec.QUEUE_BATCHES} × --max-batch)")
    p.add_argument("--engine", default="auto", choices=FLAVOURS,
                   help="trt: TensorRT plan (GPU); torch: PyTorch in a Python model (CUDA where visible, "
                        "else CPU; the server's Python must have torch); onnx: onnxruntime in a Python "
                        "model (CPU); auto: trt, else torch on CUDA, else onnx")
    p.add_argument("--preprocess", default="auto", choices=PREPROCESS_FORMS,
                   help="gpu: JPEG decode, letterbox and decoding in PyTorch on the engine's device (the "
                        "server's Python must have torch); cpu: numpy and OpenCV on the host; auto: gpu "
                        "where the engine is on a GPU")
    p.add_argument("--jpeg-decoder", default=None, choices=spec.JPEG_DECODERS,
                   help="the GPU preprocess's batched JPEG decoder (default: "
                        f"{spec.DEFAULT_JPEG_DECODER}; nvimgcodec needs nvidia-nvimgcodec-cu13 where the "
                        "server's Python models run)")
    p.add_argument("--precision", default=spec.DEFAULT_PRECISION, choices=spec.PRECISIONS,
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
    if args.benchmark_weights and args.checkpoint is not None:
        p.error("--benchmark-weights replaces the random weights a build without --checkpoint serves; "
                "it does not apply to a checkpoint")
    if args.checkpoint is not None and not args.checkpoint.is_file():
        p.error(f"checkpoint not found: {args.checkpoint}")
    if args.max_batch < 1:
        p.error(f"--max-batch must be ≥ 1, got {args.max_batch}")
    if args.max_queue is None:
        args.max_queue = spec.default_max_queue(args.max_batch)
    if args.max_queue < 0:
        p.error(f"--max-queue must be ≥ 0, got {args.max_queue}")
    if not 0 <= args.score_thr < 1 or not 0 < args.nms_thr <= 1:
        p.error(f"--score-thr must be in [0, 1) and --nms-thr in (0, 1], got {args.score_thr}, "
                f"{args.nms_thr}")
    if args.calibration_images and not args.benchmark_weights:
        p.error("--calibration-images calibrates --benchmark-weights: give both, or neither")
    missing = [str(c) for c in args.calibration_images if not c.exists()]
    if missing:
        p.error(f"--calibration-images: not found: {', '.join(missing)}")
    if args.benchmark_weights and args.score_thr == 0:
        p.error("--benchmark-weights sets the people that pass the score threshold: --score-thr 0 passes all")
    if args.benchmark_weights and args.topk < spec.BENCHMARK_PEOPLE:
        p.error(f"--benchmark-weights calibrates for {spec.BENCHMARK_PEOPLE} people per image: --topk "
                f"must be ≥ {spec.BENCHMARK_PEOPLE}, got {args.topk}")
    if args.tuned is not None and not args.tuned.is_file():
        p.error(f"tuned file not found: {args.tuned}")
    try:  # read now: a bad tuned file must stop the build before its minutes of work
        args.scheduling = load_scheduling(args.tuned)
    except (ValueError, TypeError, AttributeError) as exc:
        p.error(f"--tuned {args.tuned}: not a tuned file ({type(exc).__name__}: {exc})")
    args.pythons = () if args.pythons.strip() == "none" else tuple(args.pythons.split())
    bad = [v for v in args.pythons if not re.fullmatch(r"3\.\d+", v)]
    if bad:
        p.error(f"--pythons takes versions like 3.10 or 'none', got {', '.join(bad)}")
    return args


CALIBRATION_SUFFIXES = (".jpg", ".jpeg")  # photos; the fixtures' synthetic PNGs are not people


def calibration_paths(sources: list[Path]) -> list[Path]:
    """The benchmark weights' calibration photos: each file given, and the photos under each folder."""
    found: list[Path] = []
    for source in sources:
        found += (sorted(f for f in source.rglob("*") if f.suffix.lower() in CALIBRATION_SUFFIXES)
                  if source.is_dir() else [source])
    return found


def calibration_images(sources: list[Path], input_size: int) -> list[np.ndarray]:
    """``calibration_paths`` letterboxed as the served preprocess does it."""
    from ..served.preprocess import preprocess_batch

    data = [p.read_bytes() for p in calibration_paths(sources)]
    return list(preprocess_batch(data, input_size, spec.DEFAULT_MAX_PIXELS)[0]) if data else []


def load_weights(checkpoint: Path | None, *, benchmark: bool = False, calibration: list[Path] = (),
                 topk: int = spec.DEFAULT_TOPK,
                 score_thr: float = spec.DEFAULT_SCORE_THR, nms_thr: float = spec.DEFAULT_NMS_THR):
    """The model and what to say about its weights in the served config. ``benchmark``: the random
    weights calibrated at these decode settings for ``spec.BENCHMARK_PEOPLE`` per image."""
    from ..model import load_checkpoint, random_model

    if checkpoint is None and benchmark:
        return benchmark_weights(calibration, topk=topk, score_thr=score_thr, nms_thr=nms_thr)
    if checkpoint is None:
        print(banner(RANDOM_WARNING, variant=spec.DEFAULT_VARIANT.upper(), seed=RANDOM_SEED), file=sys.stderr,
              flush=True)
        model = random_model(spec.DEFAULT_VARIANT, seed=RANDOM_SEED)
        weights = (f"deterministic random RTMO-{spec.DEFAULT_VARIANT} (seed {RANDOM_SEED}), "
                   "not a trained model")
        return model, {Param.RANDOM_WEIGHTS: "true", Param.WEIGHTS: weights}
    model, info = load_checkpoint(checkpoint)
    log(f"loaded {checkpoint}: RTMO-{info.variant}, {info.num_keypoints} keypoints"
        + (", deploy form" if info.deploy_form else ""))
    return model, {Param.RANDOM_WEIGHTS: "false", Param.CHECKPOINT: checkpoint.name,
                   Param.CHECKPOINT_SHA256: file_sha256(checkpoint)}


def benchmark_weights(calibration: list[Path], *, topk: int, score_thr: float, nms_thr: float):
    """``load_weights`` of a benchmark build: announced, calibrated, and labelled BENCHMARK in the config."""
    from ..model import benchmark_model

    variant, people = spec.DEFAULT_VARIANT, spec.BENCHMARK_PEOPLE
    size = spec.VARIANTS[variant].input_size
    print(banner(BENCHMARK_WARNING, variant=variant.upper(), seed=RANDOM_SEED, people=people,
                 score_thr=score_thr, nms_thr=nms_thr, topk=spec.served_topk(topk, size)),
          file=sys.stderr, flush=True)
    images = calibration_images(calibration, size)
    start = time.perf_counter()
    model, cal = benchmark_model(variant, seed=RANDOM_SEED, people=people, images=images or None, topk=topk,
                                 score_thr=score_thr, nms_thr=nms_thr)
    on = f"{len(images)} calibration images" if images else "the synthetic image (no --calibration-images)"
    log(f"benchmark weights: classification bias shifted by {cal.shift:+.4f}, a median {cal.median:g} people "
        f"on {on} (per image: {', '.join(map(str, cal.people))}), {time.perf_counter() - start:.1f} s")
    weights = (f"deterministic random RTMO-{variant} (seed {RANDOM_SEED}), classification bias set for "
               f"~{people} people per image: a BENCHMARK model, not a trained model")
    return model, {Param.RANDOM_WEIGHTS: "true", Param.WEIGHTS: weights, Param.BENCHMARK_PEOPLE: str(people)}


def build_or_reuse_plan(onnx_path: Path, plan: Path, precision: str, max_batch: int) -> None:
    """Rebuilding takes minutes: keep a plan built from this very graph, for this host, as asked."""
    from .trt.build import build_plan, typical_batch
    from .trt.compat import EngineMismatch, check_compat, current_platform, read_record

    if plan.is_file():
        try:
            record = read_record(plan)
        except EngineMismatch:
            record = None
        # the profile must start at 1: Triton sends single images too
        wanted = (file_sha256(onnx_path), precision, 1, typical_batch(max_batch), max_batch)
        if record and (record.onnx_sha256, record.precision, record.min_batch, record.opt_batch,
                       record.max_batch) == wanted:
            problems, _ = check_compat(record, current_platform())
            if not problems:
                log(f"TensorRT plan up to date, kept: {plan}")
                return
            log("existing plan does not match this host (" + "; ".join(problems) + "): rebuilding")
    log(f"building the TensorRT {precision} plan (minutes) ...")
    build_plan(onnx_path, plan, precision=precision, opt_batch=typical_batch(max_batch), max_batch=max_batch)


def plan_keepsakes() -> tuple[Path, ...]:
    """What a TensorRT rebuild may take over from the repository it replaces (paths under the engine's
    folder): a plan built from the very same graph is kept, and the timing cache saves minutes."""
    from .trt.build import TIMING_CACHE
    from .trt.compat import record_path

    plan = Path(spec.MODEL_VERSION) / FLAVOUR_FILES["trt"]
    return plan, record_path(plan), Path(TIMING_CACHE)


def staging_for(repo: Path) -> Path:
    """Where a build writes before it replaces ``repo``'s model folders: beside it, same filesystem."""
    repo = repo.resolve()
    return repo.with_name(f".{repo.name}.building")


def start_staging(repo: Path, *, keep_plan: bool) -> Path:
    staging = staging_for(repo)
    shutil.rmtree(staging, ignore_errors=True)  # what a killed build left
    staging.mkdir(parents=True)
    for rel in plan_keepsakes() if keep_plan else ():
        old, new = repo / spec.ENGINE_NAME / rel, staging / spec.ENGINE_NAME / rel
        if old.is_file():
            new.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(old, new)
    return staging


def publish(staging: Path, repo: Path) -> None:
    """Each built model folder replaces the old one, the ensemble last (its config is what tools take
    for a finished build); the old folders go with the staging folder."""
    repo.mkdir(parents=True, exist_ok=True)
    built = sorted(staging.iterdir(), key=lambda d: (d.name == spec.ENSEMBLE_NAME, d.name))
    for folder in built:
        target = repo / folder.name
        if target.exists():
            os.replace(target, staging / f"{folder.name}.replaced")
        os.replace(folder, target)
    shutil.rmtree(staging)


def build(args: argparse.Namespace) -> Path:
    """Builds into a staging folder and swaps the model folders in at the end: a build that fails
    leaves the repository as it was, and one that succeeds leaves no file of another flavour."""
    from .flavour import choose_flavour, choose_jpeg_decoder, choose_preprocess

    start = time.perf_counter()
    flavour = choose_flavour(args.engine)
    log(f"engine flavour: {flavour.name} ({flavour.reason})")
    preprocess = choose_preprocess(args.preprocess, flavour)
    jpeg_decoder = choose_jpeg_decoder(args.jpeg_decoder, preprocess)
    where = (f"PyTorch on {flavour.device}, JPEGs by {jpeg_decoder}" if preprocess == "gpu"
             else "numpy and OpenCV on the host")
    log(f"preprocess and decode: {preprocess} ({where})")
    repo = args.model_repository
    model, provenance = load_weights(args.checkpoint, benchmark=args.benchmark_weights,
                                     calibration=args.calibration_images, topk=args.topk,
                                     score_thr=args.score_thr, nms_thr=args.nms_thr)
    staging = start_staging(repo, keep_plan=flavour.name == "trt")
    try:
        repo_spec = fill(staging, args, model=model, provenance=provenance, flavour=flavour,
                         preprocess=preprocess, jpeg_decoder=jpeg_decoder)
        publish(staging, repo)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    log(f"model repository ready in {time.perf_counter() - start:.1f} s: {repo}")
    log(f"  RTMO-{repo_spec.variant} {repo_spec.input_size}px, K={repo_spec.topk}, score>{args.score_thr}, "
        f"NMS {args.nms_thr}, max batch {args.max_batch}, engine {flavour.name}, preprocess {preprocess}")
    carried = ", ".join(args.pythons) or "none (the server's interpreter provides them)"
    log(f"  Python models carry packages for Python {carried}")
    log(f"serve it: tritonserver --model-repository {repo}")
    return repo


def fill(repo: Path, args: argparse.Namespace, *, model: RTMO, provenance: dict[str, str],
         flavour: Flavour, preprocess: str, jpeg_decoder: str) -> RepositorySpec:
    """Every model folder of the repository, in ``repo`` (the staging folder)."""
    from .export import export_onnx, export_torch

    version_dir = repo / spec.ENGINE_NAME / spec.MODEL_VERSION
    version_dir.mkdir(parents=True, exist_ok=True)
    if flavour.name == "torch":  # the deploy graph's weights: PyTorch runs them in the server
        weights = version_dir / FLAVOUR_FILES["torch"]
        log(f"saving the PyTorch deploy graph (K={args.topk}) to {weights} ...")
        export_torch(model, weights, topk=args.topk, metadata=provenance)
    else:  # ONNX flavour: the graph is the served file; TensorRT: the plan's source, beside the version
        onnx_path = version_dir / FLAVOUR_FILES["onnx"] if flavour.name == "onnx" else engine_onnx(repo)
        log(f"exporting the ONNX deploy graph (K={args.topk}) ...")
        export_onnx(model, onnx_path, topk=args.topk, metadata=provenance)
    topk = spec.served_topk(args.topk, model.variant.input_size)
    if flavour.name == "trt":
        # the plan's profile must cover the engine's max_batch_size, which tuning may raise
        plan_batch = max(args.max_batch, args.scheduling[spec.ENGINE_NAME].max_batch)
        build_or_reuse_plan(onnx_path, version_dir / FLAVOUR_FILES["trt"], args.precision, plan_batch)
    for name in (spec.PREPROCESS_NAME, spec.DECODE_NAME):
        install_python_model(repo, name, pythons=args.pythons, workspace=args.workspace, log=log,
                             module=GPU_MODULES[name] if preprocess == "gpu" else None)
    if flavour.name == "onnx":
        install_python_model(repo, spec.ENGINE_NAME, pythons=args.pythons, workspace=args.workspace, log=log)
    if flavour.name == "torch":
        install_python_model(repo, spec.ENGINE_NAME, pythons=args.pythons, workspace=args.workspace, log=log,
                             module=TORCH_ENGINE)
    repo_spec = RepositorySpec(
        variant=model.variant.name, input_size=model.variant.input_size, num_keypoints=model.num_keypoints,
        topk=topk, flavour=flavour.name, engine_device=flavour.device, engine_precision=args.precision,
        preprocess=preprocess, jpeg_decoder=jpeg_decoder,
        max_batch=args.max_batch, score_thr=args.score_thr,
        nms_thr=args.nms_thr, max_pixels=args.max_pixels, max_queue=args.max_queue,
        engine_threads=args.engine_threads, scheduling=args.scheduling, provenance=provenance,
    )
    write_configs(repo, repo_spec)
    return repo_spec


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
