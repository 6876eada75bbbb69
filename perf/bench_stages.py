"""Time the preprocess, decode and NMS steps outside the server, against the issue's CPU targets.

Preprocess: real JPEGs through exactly what ``rtmo_preprocess`` runs, the 1920×1080 one split into JPEG
decode and letterbox, beside what was replaced or rejected (full-frame warp; OpenCV's half-resolution
decode, not the reference's pixels), and the header read: the GPU-resident preprocess's one per-image
host step besides launching its kernels. Decode: one image's engine outputs at K, ``--people`` surviving NMS.
NMS: crowds of overlapping people at K=2000 (every RTMO-s/m/l cell) and at the default K, the shipped
OpenCV ``dnn.NMSBoxes`` against the numpy fixed-point iteration it replaced, once both are checked to
keep the same indices on ``--nms-crowds`` random crowds. One thread, as each Triton instance runs.

    python -m perf.bench_stages [--repeat 200] [--csv reports/perf/stages.csv]
"""
from __future__ import annotations

import argparse
import csv
import time
from pathlib import Path

import cv2
import numpy as np

from perf.inputs import SIZES, benchmark_jpegs
from rtmo_triton import spec
from rtmo_triton.served.heap import keep_freed_buffers
from rtmo_triton.served.image_io import checked_header, decode_bgr
from rtmo_triton.served.letterbox import letterbox, letterbox_matrix
from rtmo_triton.served.postprocess import box_iou, decode_people, nms
from rtmo_triton.served.preprocess import preprocess

TARGET_MS = {"preprocess 1920x1080": 5.0, "decode": 2.0}
NMS_K = 2000


def timings_ms(fn, repeat: int) -> np.ndarray:
    fn()
    out = np.empty(repeat)
    for i in range(repeat):
        t0 = time.perf_counter()
        fn()
        out[i] = time.perf_counter() - t0
    return out * 1e3


def output_bytes(k: int, j: int, logit_bytes: int = 4) -> int:
    """Engine output per image: scores, boxes and keypoint visibilities in FP32, the two logit maps."""
    return k * (1 + 4 + j) * 4 + k * j * sum(spec.NUM_BINS) * logit_bytes


def engine_outputs(people: int, topk: int, size: int, seed: int = 0) -> dict[str, np.ndarray]:
    """One image's engine outputs: ``people`` separated boxes, the other cells near-duplicates of them."""
    rng = np.random.default_rng(seed)
    j, grid = spec.NUM_KEYPOINTS, int(np.ceil(np.sqrt(people)))
    cell = size / grid
    idx = np.arange(people)
    centres = np.stack([(idx % grid + 0.5) * cell, (idx // grid + 0.5) * cell], 1)
    owner = np.concatenate([idx, rng.integers(0, people, topk - people)])
    c = centres[owner] + rng.uniform(-0.03, 0.03, (topk, 2)) * cell
    return {
        "scores": np.sort(rng.uniform(0.5, 0.99, topk))[::-1].astype(np.float32),
        "boxes": np.concatenate([c - 0.3 * cell, c + 0.3 * cell], 1).astype(np.float32),
        "kpt_vis": rng.uniform(0, 1, (topk, j)).astype(np.float32),
        "x_logits": rng.normal(0, 3, (topk, j, spec.NUM_BINS[0])).astype(np.float32),
        "y_logits": rng.normal(0, 3, (topk, j, spec.NUM_BINS[1])).astype(np.float32),
    }


def crowd(k: int, people: int, size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``k`` candidate boxes around ``people`` people of varied sizes who overlap one another."""
    rng = np.random.default_rng(seed)
    owner = rng.integers(0, people, k)
    centre = rng.uniform(0, size, (people, 2))[owner] + rng.normal(0, 8, (k, 2))
    half = rng.uniform(20, 120, (people, 2))[owner] * rng.uniform(0.9, 1.1, (k, 2))
    return (np.concatenate([centre - half, centre + half], 1).astype(np.float32),
            rng.uniform(0.1, 1, k).astype(np.float32))


def fixed_point_nms(boxes: np.ndarray, scores: np.ndarray, iou_thr: float) -> np.ndarray:
    """The replaced NMS: iterate greedy's rule over the K×K overlap matrix from 'keep all'."""
    order = np.argsort(-scores, kind="stable")
    over = np.triu(box_iou(boxes[order]) > iou_thr, k=1)
    keep = np.ones(len(order), bool)
    while not np.array_equal(new := ~(over & keep[:, None]).any(0), keep):
        keep = new
    return order[keep]


def nms_rows(size: int, topk: int, repeat: int, crowds: int) -> list[tuple[str, str, np.ndarray]]:
    thr = spec.DEFAULT_NMS_THR
    for seed in range(crowds):
        boxes, scores = crowd(NMS_K, 200, size, seed)
        if not np.array_equal(nms(boxes, scores, thr), fixed_point_nms(boxes, scores, thr)):
            raise SystemExit(f"NMS: shipped and fixed-point keep different boxes on crowd {seed}")
    print(f"NMS: shipped and fixed-point keep the same indices on {crowds} crowds of K={NMS_K}")
    rows = []
    for k, people in ((NMS_K, 20), (NMS_K, 200), (topk, 20)):
        b, s = crowd(k, people, size, 0)
        kept = len(nms(b, s, thr))
        slow = max(3, repeat // 40) if k > 500 else repeat  # the fixed point takes ~0.5 s at K=2000
        rows += [(f"nms K={k}", f"OpenCV (shipped), {people} people, {kept} kept",
                  timings_ms(lambda b=b, s=s: nms(b, s, thr), repeat)),
                 (f"nms K={k}", "numpy fixed point (replaced)",
                  timings_ms(lambda b=b, s=s: fixed_point_nms(b, s, thr), slow))]
    return rows


def breakdown(data: bytes, size: int, repeat: int) -> list[tuple[str, str, np.ndarray]]:
    """Where one image's preprocess time goes, and what the alternatives take."""
    image = decode_bgr(data, spec.DEFAULT_MAX_PIXELS)
    h, w = image.shape[:2]
    m, _ = letterbox_matrix(w, h, size)
    full_warp = lambda: np.ascontiguousarray(cv2.warpAffine(  # noqa: E731
        image, m, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
        borderValue=(spec.PAD_VALUE,) * 3).transpose(2, 0, 1))
    cases = [
        (f"  header {w}x{h}", "Pillow header (GPU form's host step)",
         lambda: checked_header(data, spec.DEFAULT_MAX_PIXELS)),
        (f"  decode {w}x{h}", "simplejpeg (shipped, exact)",
         lambda: decode_bgr(data, spec.DEFAULT_MAX_PIXELS)),
        (f"  letterbox {w}x{h}", "picture-only warp (shipped)", lambda: letterbox(image, size)),
        (f"  letterbox {w}x{h}", "full-frame warp (replaced)", full_warp),
        (f"  decode {w}x{h}", "cv2 REDUCED_2 (not exact)",
         lambda: cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_REDUCED_COLOR_2)),
    ]
    return [(stage, what, timings_ms(fn, repeat)) for stage, what, fn in cases]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--repeat", type=int, default=200)
    p.add_argument("--people", type=int, default=20)
    p.add_argument("--topk", type=int, default=spec.DEFAULT_TOPK)
    p.add_argument("--nms-crowds", type=int, default=10, help="random crowds on which the two NMS must agree")
    p.add_argument("--csv", type=Path, default=Path("reports/perf/stages.csv"))
    args = p.parse_args(argv)
    keep_freed_buffers()  # as the served Python models do
    cv2.setNumThreads(1)
    size = spec.VARIANTS[spec.DEFAULT_VARIANT].input_size
    rows = []
    for (w, h), data in benchmark_jpegs().items():
        t = timings_ms(lambda d=data: preprocess(d, size, spec.DEFAULT_MAX_PIXELS), args.repeat)
        rows.append((f"preprocess {w}x{h}", f"{len(data)} B JPEG", t))
    w, h = SIZES[-1]
    rows += breakdown(benchmark_jpegs()[(w, h)], size, args.repeat)
    outputs = engine_outputs(args.people, args.topk, size)
    affine = letterbox_matrix(w, h, size)[1].as_array()
    decode = lambda: decode_people(*outputs.values(), affine, spec.DEFAULT_SCORE_THR, spec.DEFAULT_NMS_THR)  # noqa: E731
    assert len(decode().scores) == args.people, f"synthetic outputs gave {len(decode().scores)} people"
    rows.append(("decode", f"{w}x{h}, K={args.topk}, {args.people} people", timings_ms(decode, args.repeat)))
    rows += nms_rows(size, args.topk, args.repeat, args.nms_crowds)

    print(f"{'stage':28s} {'input':40s} {'p50 ms':>8s} {'p95 ms':>8s} {'target':>8s}")
    args.csv.parent.mkdir(parents=True, exist_ok=True)
    with args.csv.open("w", newline="") as f:
        out = csv.writer(f)
        out.writerow(["stage", "input", "p50_ms", "p95_ms", "target_ms", "repeat"])
        for stage, what, t in rows:
            p50, p95 = np.percentile(t, [50, 95])
            target = next((v for k, v in TARGET_MS.items() if stage.startswith(k)), None)
            verdict = "" if target is None else f"≤{target:g} {'met' if p50 <= target else 'MISSED'}"
            print(f"{stage:28s} {what:40s} {p50:8.2f} {p95:8.2f} {verdict:>8s}")
            out.writerow([stage, what, f"{p50:.3f}", f"{p95:.3f}", target or "", len(t)])
    fp32, fp16 = output_bytes(args.topk, spec.NUM_KEYPOINTS), output_bytes(args.topk, spec.NUM_KEYPOINTS, 2)
    print(f"engine output per image at K={args.topk}: {fp32 / 2**20:.2f} MiB with FP32 logits, "
          f"{fp16 / 2**20:.2f} MiB with FP16; written {args.csv}")
    with args.csv.with_name("engine_bytes.csv").open("w", newline="") as f:
        csv.writer(f).writerows([["topk", "fp32_logits_bytes", "fp16_logits_bytes"], [args.topk, fp32, fp16]])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
