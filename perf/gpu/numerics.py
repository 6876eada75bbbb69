"""How far each torch precision setting moves the served people from the CPU FP32 ONNX path.

Reference: the exported ONNX graph in onnxruntime on the CPU (what the ONNX flavour serves). Each
setting runs the same deploy graph in PyTorch on the device; both go through the served decoder
(``served.postprocess``) and people are matched by box IoU, never by index (near-equal scores may
swap order, and an FP16 TopK may take another candidate at the K-th place).

``dcc_probe`` isolates the review's finding: the DCC's bin code of one set of candidates, FP16 vs
FP32 encoding with everything else FP32, at box sizes 100 to 800 px.
"""
from __future__ import annotations

import copy
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from rtmo_triton import spec
from rtmo_triton.model.deploy import DeployRTMO
from rtmo_triton.model.fuse import fold_batchnorm
from rtmo_triton.model.head import bin_encoding
from rtmo_triton.model.rtmo import RTMO
from rtmo_triton.people import People
from rtmo_triton.served.postprocess import box_iou, decode_batch, softmax_integral
from rtmo_triton.served.torch_engine import prepare, set_tf32

MATCH_IOU = 0.5


@dataclass(frozen=True)
class Setting:
    name: str
    precision: str
    tf32: bool = False
    fp32_geometry: bool = True
    cuda_only: bool = False
    description: str = ""


SETTINGS = (
    Setting("fp32", "fp32", description="FP32, TF32 off"),
    Setting("tf32", "fp32", tf32=True, cuda_only=True, description="FP32, TF32 convolutions and matmuls"),
    Setting("fp16", "fp16", fp32_geometry=False, description="FP16 whole network, bin code included"),
    Setting("fp16_fp32_geometry", "fp16", description="FP16 network, boxes and bin code FP32 (served)"),
)


def deploy_graph(model: RTMO, topk: int) -> DeployRTMO:
    """The folded deploy graph, FP32 on the CPU (the model is folded in place)."""
    return DeployRTMO(fold_batchnorm(model), topk).eval()


def onnx_reference(deploy: DeployRTMO, inputs: np.ndarray, chunk: int = 8) -> dict[str, np.ndarray]:
    """Engine outputs of the exported FP32 graph in the served onnxruntime engine on the CPU."""
    from rtmo_triton.build.export import export_onnx
    from rtmo_triton.served.onnx_engine import OnnxEngine

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "reference.onnx"
        export_onnx(copy.deepcopy(deploy.model), path, deploy.topk)
        engine = OnnxEngine(path)
        parts = [engine.run(inputs[i:i + chunk]) for i in range(0, len(inputs), chunk)]
    return {name: np.concatenate([p[name] for p in parts]) for name in spec.ENGINE_OUTPUTS}


@torch.inference_mode()
def torch_outputs(deploy: DeployRTMO, setting: Setting, device: torch.device, inputs: np.ndarray,
                  chunk: int = 8) -> dict[str, np.ndarray]:
    """Engine outputs of ``deploy`` (copied) in ``setting`` on ``device``."""
    model = prepare(copy.deepcopy(deploy), device, setting.precision, fp32_geometry=setting.fp32_geometry,
                    tf32=setting.tf32)
    parts = []
    for i in range(0, len(inputs), chunk):
        out = model(torch.from_numpy(inputs[i:i + chunk]).to(device))
        parts.append([t.cpu().numpy() for t in out])
    if device.type == "cuda":
        set_tf32(False)
    return {name: np.concatenate([p[k] for p in parts]) for k, name in enumerate(spec.ENGINE_OUTPUTS)}


def match(ref: People, got: People) -> list[tuple[int, int]]:
    """Greedy one-to-one pairs (ref index, got index) by IoU ≥ ``MATCH_IOU``, best reference first."""
    if not len(ref.scores) or not len(got.scores):
        return []
    iou = box_iou(ref.boxes, got.boxes)
    pairs, taken = [], set()
    for r in range(len(ref.scores)):
        order = [g for g in np.argsort(-iou[r]) if g not in taken and iou[r, g] >= MATCH_IOU]
        if order:
            pairs.append((r, int(order[0])))
            taken.add(int(order[0]))
    return pairs


def _stats(values: list[np.ndarray]) -> dict[str, float | None]:
    flat = np.concatenate([v.reshape(-1) for v in values]) if values else np.zeros(0)
    if not flat.size:
        return {"p50": None, "p99": None, "max": None}
    return {"p50": float(np.percentile(flat, 50)), "p99": float(np.percentile(flat, 99)),
            "max": float(flat.max())}


def compare(ref_people: list[People], got_people: list[People], got_raw: dict[str, np.ndarray]) -> dict:
    """People found/missed/extra and the deltas of matched people (image pixels), plus NaN/inf."""
    kpt, box, score = [], [], []
    found = missed = extra = 0
    for ref, got in zip(ref_people, got_people, strict=True):
        pairs = match(ref, got)
        found += len(pairs)
        missed += len(ref.scores) - len(pairs)
        extra += len(got.scores) - len(pairs)
        if pairs:
            r, g = (np.array(x) for x in zip(*pairs))
            kpt.append(np.linalg.norm(got.keypoints[g] - ref.keypoints[r], axis=-1))
            box.append(np.abs(got.boxes[g] - ref.boxes[r]).max(-1))
            score.append(np.abs(got.scores[g] - ref.scores[r]))
    nonfinite = {name: int((~np.isfinite(v)).sum()) for name, v in got_raw.items()}
    return {"people": {"reference": found + missed, "found": found, "missed": missed, "extra": extra},
            "keypoint_px": _stats(kpt), "box_px": _stats(box), "score_abs": _stats(score),
            "nonfinite": nonfinite, "nonfinite_total": sum(nonfinite.values())}


def run_model(name: str, model: RTMO, images: list[bytes], device: torch.device, *, topk: int,
              score_thr: float, nms_thr: float, log=print) -> dict:
    """Every setting of ``SETTINGS`` (the CUDA-only ones on CUDA) against the ONNX reference."""
    from rtmo_triton.served.preprocess import preprocess_batch

    size = model.variant.input_size
    inputs, affines = preprocess_batch(images, size, spec.DEFAULT_MAX_PIXELS)
    deploy = deploy_graph(model, topk)
    t0 = time.perf_counter()
    reference = onnx_reference(deploy, inputs)
    ref_people = decode_batch(reference, affines, score_thr, nms_thr)
    result = {"model": name, "images": len(images), "input_size": size, "topk": deploy.topk,
              "score_thr": score_thr, "nms_thr": nms_thr, "reference": "onnxruntime CPU FP32",
              "reference_s": round(time.perf_counter() - t0, 2), "settings": {}}
    log(f"[numerics] {name}: reference done ({sum(len(p.scores) for p in ref_people)} people, "
        f"{result['reference_s']} s)")
    torch_cpu = Setting("torch_cpu_fp32", "fp32", description="PyTorch FP32 on the CPU (the floor)")
    settings = [torch_cpu] + [s for s in SETTINGS if device.type == "cuda" or not s.cuda_only]
    for setting in settings:
        where = torch.device("cpu") if setting is torch_cpu else device
        if setting is torch_cpu and device.type == "cpu":
            continue  # the same as "fp32" here
        t0 = time.perf_counter()
        raw = torch_outputs(deploy, setting, where, inputs)
        people = decode_batch(raw, affines, score_thr, nms_thr)
        entry = compare(ref_people, people, raw)
        entry |= {"device": str(where), "description": setting.description,
                  "seconds": round(time.perf_counter() - t0, 2)}
        result["settings"][setting.name] = entry
        k = entry["keypoint_px"]
        log(f"[numerics] {name} {setting.name}: people {entry['people']}, keypoint px p99 {k['p99']} "
            f"max {k['max']}, non-finite {entry['nonfinite_total']}")
    return result


@torch.inference_mode()
def dcc_probe(model: RTMO, pose_vecs: np.ndarray, grids: np.ndarray, centres: np.ndarray,
              device: torch.device, sizes: tuple[int, ...] = (100, 200, 400, 800)) -> dict:
    """Keypoints of the same candidates with the bin code computed in FP16 vs FP32, the rest FP32.

    ``pose_vecs`` [N, C], ``grids`` [N, 2] (cell centres), ``centres`` [N, 2] (box centres), all in
    input pixels; each candidate's box is set to ``size`` px square for each size.
    """
    dcc = copy.deepcopy(model.head.dcc).float().to(device).eval()
    pose = torch.from_numpy(pose_vecs).float().to(device)
    grid = torch.from_numpy(grids).float().to(device)
    centre = torch.from_numpy(centres).float().to(device)
    bins = (dcc.x_bins, dcc.y_bins, dcc.spe.dim_t)
    unit = [np.linspace(-0.5, 0.5, n, dtype=np.float32) for n in spec.NUM_BINS]
    def keypoints(cs: torch.Tensor, half: bool) -> tuple[np.ndarray, list[torch.Tensor]]:
        args = [t.half() if half else t for t in (cs, grid, *bins)]
        enc = [e.float() for e in bin_encoding(*args)]
        xl, yl = (t.cpu().numpy() for t in dcc.logits(pose, *enc))
        c = cs.cpu().numpy()
        k = np.stack((softmax_integral(xl, unit[0], c[:, 0], c[:, 2]),
                      softmax_integral(yl, unit[1], c[:, 1], c[:, 3])), -1)
        return k, enc

    out = {}
    for size in sizes:
        cs = torch.cat((centre, torch.full_like(centre, size * spec.BBOX_PADDING)), -1)
        k32, e32 = keypoints(cs, False)
        k16, e16 = keypoints(cs, True)
        code_err = max(float((a - b).abs().max()) for a, b in zip(e16, e32))
        delta = np.linalg.norm(k16 - k32, axis=-1)
        out[str(size)] = {"code_abs_max": code_err, "keypoint_px": _stats([delta])}
    return {"candidates": int(len(pose_vecs)), "device": str(device), "box_sizes_px": out}
