"""Measure what the engine's K (candidates per image) and FP16 logits change.

For each image the deploy graph runs once with every cell as a candidate;
since TopK is sorted and greedy NMS decides each candidate from better-ranked
ones only, the first K rows are exactly what an engine exported with that K
returns. Prints a markdown table: people kept against K = all cells, the
engine's output bytes per image, and the keypoint drift from FP16 logits.

    python perf/topk_effect.py [--checkpoint PATH] [--images DIR|FILES...]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
import numpy as np
import torch

from rtmo_triton.letterbox import letterbox
from rtmo_triton.model import load_checkpoint
from rtmo_triton.model.deploy import DeployRTMO
from rtmo_triton.postprocess import decode_people
from rtmo_triton.spec import ENGINE_OUTPUTS, NUM_BINS, num_cells

SHARED = Path(__file__).resolve().parents[2] / "shared" / "fixtures"


def output_bytes(k: int, j: int, logit_bytes: int = 4) -> int:
    return k * (1 + 4 + j) * 4 + k * j * sum(NUM_BINS) * logit_bytes


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", default=str(SHARED / "rtmo-t" / "rtmo-t_random_seed0.pth"))
    ap.add_argument("--images", nargs="*", default=[str(SHARED / "images")])
    ap.add_argument("--ks", default="10,20,50,100,200,400")
    ap.add_argument("--score-thr", type=float, default=0.3)
    ap.add_argument("--nms-thr", type=float, default=0.65)
    args = ap.parse_args(argv)

    files = []
    for p in map(Path, args.images):
        images = (f for f in p.rglob("*") if f.suffix.lower() in {".jpg", ".png"})
        files += sorted(images) if p.is_dir() else [p]
    model, info = load_checkpoint(args.checkpoint)
    size = model.variant.input_size
    deploy = DeployRTMO(model, num_cells(size)).eval()
    ks = [int(k) for k in args.ks.split(",")] + [num_cells(size)]
    j = info.num_keypoints

    kept = {k: 0 for k in ks}
    worst_image = {k: 1.0 for k in ks}
    fp16_err: list[np.ndarray] = []
    for f in files:
        img = cv2.imread(str(f), cv2.IMREAD_COLOR)
        x, box = letterbox(img, size)
        with torch.no_grad():
            outs = [o[0].numpy() for o in deploy(torch.from_numpy(x)[None])]
        full = decode_people(*outs, box.as_array(), args.score_thr, args.nms_thr)
        for k in ks:
            n = len(decode_people(*(o[:k] for o in outs), box.as_array(), args.score_thr, args.nms_thr).boxes)
            kept[k] += n
            if len(full.boxes):
                worst_image[k] = min(worst_image[k], n / len(full.boxes))
        half = dict(zip(ENGINE_OUTPUTS, outs))
        half["x_logits"] = half["x_logits"].astype(np.float16).astype(np.float32)
        half["y_logits"] = half["y_logits"].astype(np.float16).astype(np.float32)
        h = decode_people(*half.values(), box.as_array(), args.score_thr, args.nms_thr)
        if len(h.boxes):
            fp16_err.append(np.abs(h.keypoints - full.keypoints).ravel())

    total = kept[ks[-1]]
    print(f"checkpoint: {args.checkpoint} (RTMO-{info.variant}, {size}x{size}, {num_cells(size)} cells)")
    print(f"images: {len(files)}, people at K=all: {total}, score_thr={args.score_thr}\n")
    print("| K | people kept | worst image | engine output / image (fp32 logits) | (fp16 logits) |")
    print("|---|---|---|---|---|")
    for k in ks:
        print(f"| {k} | {kept[k]}/{total} ({kept[k] / max(total, 1):.1%}) | {worst_image[k]:.1%} "
              f"| {output_bytes(k, j) / 2**20:.2f} MiB | {output_bytes(k, j, 2) / 2**20:.2f} MiB |")
    if fp16_err:
        e = np.concatenate(fp16_err)
        print(f"\nFP16 logits vs FP32, keypoints in original pixels: p50 {np.median(e):.4f}, "
              f"p99 {np.percentile(e, 99):.4f}, max {e.max():.4f} px")


if __name__ == "__main__":
    sys.exit(main())
