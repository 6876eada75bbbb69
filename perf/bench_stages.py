"""Time the preprocess and decode steps outside the server, against the issue's CPU targets.

Preprocess: real JPEGs of each benchmark size, through exactly what
``rtmo_preprocess`` runs. Decode: one 1920×1080 image's engine outputs at
K candidates with a given number of people surviving NMS (every survivor
has near-duplicates ranked below it that NMS must remove, as real heads
produce). One thread, as each Triton instance runs. Prints p50/p95 and
writes a CSV; asserts nothing.

Where the 1920×1080 preprocess goes is split out: JPEG decode, the shipped
letterbox (warping only the picture's rectangle), the full-frame warp it
replaced (same pixels), and OpenCV's half-resolution JPEG decode (faster, but
not the reference's pixels, so not shipped). The engine's output bytes per
image at K with FP32 and FP16 logits come from perf/topk_effect.py's formula.

    python perf/bench_stages.py [--repeat 200] [--csv reports/perf/stages.csv]
"""
from __future__ import annotations

import argparse
import csv
import sys
import time
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from perf.inputs import SIZES, benchmark_jpegs  # noqa: E402
from perf.topk_effect import output_bytes  # noqa: E402
from rtmo_triton import spec  # noqa: E402
from rtmo_triton.image_io import decode_bgr  # noqa: E402
from rtmo_triton.letterbox import letterbox, letterbox_matrix  # noqa: E402
from rtmo_triton.postprocess import decode_people  # noqa: E402
from rtmo_triton.preprocess import preprocess  # noqa: E402
from rtmo_triton.serving.heap import keep_freed_buffers  # noqa: E402

TARGET_MS = {"preprocess 1920x1080": 5.0, "decode": 2.0}


def timings_ms(fn, repeat: int) -> np.ndarray:
    fn()
    out = np.empty(repeat)
    for i in range(repeat):
        t0 = time.perf_counter()
        fn()
        out[i] = time.perf_counter() - t0
    return out * 1e3


def engine_outputs(people: int, topk: int, size: int, seed: int = 0) -> dict[str, np.ndarray]:
    """One image's engine outputs: ``people`` separated boxes, the other cells near-duplicates of them."""
    rng = np.random.default_rng(seed)
    j = spec.NUM_KEYPOINTS
    grid = int(np.ceil(np.sqrt(people)))
    cell = size / grid
    idx = np.arange(people)
    centres = np.stack([(idx % grid + 0.5) * cell, (idx // grid + 0.5) * cell], 1)
    owner = np.concatenate([idx, rng.integers(0, people, topk - people)])
    jitter = rng.uniform(-0.03, 0.03, (topk, 2)) * cell
    half = 0.3 * cell
    c = centres[owner] + jitter
    boxes = np.concatenate([c - half, c + half], 1).astype(np.float32)
    scores = np.sort(rng.uniform(0.5, 0.99, topk))[::-1].astype(np.float32)
    return {
        "scores": scores, "boxes": boxes, "kpt_vis": rng.uniform(0, 1, (topk, j)).astype(np.float32),
        "x_logits": rng.normal(0, 3, (topk, j, spec.NUM_BINS[0])).astype(np.float32),
        "y_logits": rng.normal(0, 3, (topk, j, spec.NUM_BINS[1])).astype(np.float32),
    }


def breakdown(data: bytes, size: int, repeat: int) -> list[tuple[str, str, np.ndarray]]:
    """Where one image's preprocess time goes, and what the proposed variants take."""
    image = decode_bgr(data, spec.DEFAULT_MAX_PIXELS)
    h, w = image.shape[:2]
    reduced = cv2.IMREAD_REDUCED_COLOR_2
    buf = np.frombuffer(data, np.uint8)
    decode = lambda: decode_bgr(data, spec.DEFAULT_MAX_PIXELS)  # noqa: E731
    m, _ = letterbox_matrix(w, h, size)
    full_warp = lambda: np.ascontiguousarray(cv2.warpAffine(  # noqa: E731
        image, m, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
        borderValue=(spec.PAD_VALUE,) * 3).transpose(2, 0, 1))
    cases = [
        (f"  decode {w}x{h}", "simplejpeg (shipped, exact)", decode),
        (f"  letterbox {w}x{h}", "picture-only warp (shipped)", lambda: letterbox(image, size)),
        (f"  letterbox {w}x{h}", "full-frame warp (replaced)", full_warp),
        (f"  decode {w}x{h}", "cv2 REDUCED_2 (not exact)", lambda: cv2.imdecode(buf, reduced)),
    ]
    return [(stage, what, timings_ms(fn, repeat)) for stage, what, fn in cases]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--repeat", type=int, default=200)
    p.add_argument("--people", type=int, default=20)
    p.add_argument("--topk", type=int, default=spec.DEFAULT_TOPK)
    p.add_argument("--variant", default=spec.DEFAULT_VARIANT, choices=sorted(spec.VARIANTS))
    p.add_argument("--csv", type=Path, default=Path("reports/perf/stages.csv"))
    args = p.parse_args(argv)
    keep_freed_buffers()  # as the served Python models do
    cv2.setNumThreads(1)
    size = spec.VARIANTS[args.variant].input_size
    rows = []
    for (w, h), data in benchmark_jpegs().items():
        t = timings_ms(lambda d=data: preprocess(d, size, spec.DEFAULT_MAX_PIXELS), args.repeat)
        rows.append((f"preprocess {w}x{h}", f"{len(data)} B JPEG", t))
    w, h = SIZES[-1]
    rows += breakdown(benchmark_jpegs()[(w, h)], size, args.repeat)
    outputs = engine_outputs(args.people, args.topk, size)
    affine = letterbox_matrix(w, h, size)[1].as_array()
    found = decode_people(*outputs.values(), affine, spec.DEFAULT_SCORE_THR, spec.DEFAULT_NMS_THR)
    assert len(found.scores) == args.people, f"synthetic outputs gave {len(found.scores)} people"
    t = timings_ms(lambda: decode_people(*outputs.values(), affine, spec.DEFAULT_SCORE_THR,
                                         spec.DEFAULT_NMS_THR), args.repeat)
    rows.append(("decode", f"{w}x{h}, K={args.topk}, {args.people} people", t))

    print(f"{'stage':28s} {'input':32s} {'p50 ms':>8s} {'p95 ms':>8s} {'target':>8s}")
    args.csv.parent.mkdir(parents=True, exist_ok=True)
    with args.csv.open("w", newline="") as f:
        out = csv.writer(f)
        out.writerow(["stage", "input", "p50_ms", "p95_ms", "target_ms", "repeat"])
        for stage, what, t in rows:
            p50, p95 = np.percentile(t, [50, 95])
            target = next((v for k, v in TARGET_MS.items() if stage.startswith(k)), None)
            verdict = "" if target is None else f"≤{target:g} {'met' if p50 <= target else 'MISSED'}"
            print(f"{stage:28s} {what:32s} {p50:8.2f} {p95:8.2f} {verdict:>8s}")
            out.writerow([stage, what, f"{p50:.3f}", f"{p95:.3f}", target or "", args.repeat])
    j = spec.NUM_KEYPOINTS
    fp32, fp16 = output_bytes(args.topk, j), output_bytes(args.topk, j, 2)
    print(f"engine output per image at K={args.topk}: {fp32 / 2**20:.2f} MiB with FP32 logits, "
          f"{fp16 / 2**20:.2f} MiB with FP16 ({1 - fp16 / fp32:.0%} fewer bytes)")
    with args.csv.with_name("engine_bytes.csv").open("w", newline="") as f:
        csv.writer(f).writerows([["topk", "fp32_logits_bytes", "fp16_logits_bytes"], [args.topk, fp32, fp16]])
    print(f"written {args.csv}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
