"""The GPU-resident stages on the device: what each batched JPEG decoder (``spec.JPEG_DECODERS``:
torchvision's nvJPEG, nvImageCodec) does to pixels and people, its throughput and host CPU per image,
and the stream-hazard corruption test; the letterbox and the decoder against their CPU forms there.
The served decoder is chosen from these figures (docs/gpu.md).

GPU JPEG decoding is not bit-exact with libjpeg-turbo (chroma upsampling, IDCT), so its pixels are
measured, and what they do to people: the same weights on the same device over CPU-decoded and
GPU-decoded pixels, through the same decoder. The letterbox and the decoder are written to be exact
(CI proves them on CPU torch); here they are checked on CUDA. nvJPEG's hardware decode has written into
memory that kernels queued on the stream were still reading (pytorch/vision PR 9606): the corruption
test frees the decoder's own output tensors while reads of them are queued and decodes at once, with
the stream wait the served decoders have and without it, the control that shows whether this host has
the hazard.
"""
from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np
import simplejpeg
import torch

from perf.inputs import FIXTURES
from rtmo_triton import spec
from rtmo_triton.served.gpu.decode import decode_batch as decode_on_device
from rtmo_triton.served.gpu.jpeg_decoders import DECODERS, JpegDecoder, drained, jpeg_decoder, torchvision_rgb
from rtmo_triton.served.gpu.letterbox import letterbox as letterbox_on_device
from rtmo_triton.served.gpu.preprocess import GpuPreprocess
from rtmo_triton.served.image_io import decode_bgr
from rtmo_triton.served.letterbox import letterbox, opencv_difference
from rtmo_triton.served.postprocess import decode_batch, stack_people

from .numerics import compare, deploy_graph

SIZES = ((640, 480), (1280, 720), (1920, 1080))
"""The served check's JPEG sizes: VGA, 720p, 1080p."""
JPEG_QUALITY = 90


def sized_jpegs(sizes=SIZES) -> dict[str, list[bytes]]:
    """The fixture photos resized to each size (aspect ignored: these are throughput inputs) and
    re-encoded, ``"WxH"`` → JPEGs."""
    photos = [cv2.imread(str(p)) for p in sorted((FIXTURES / "images").rglob("*.jpg"))]
    return {f"{w}x{h}": [cv2.imencode(".jpg", cv2.resize(p, (w, h), interpolation=cv2.INTER_AREA),
                                      [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])[1].tobytes() for p in photos]
            for w, h in sizes}


def libjpeg_decoder(device: torch.device) -> JpegDecoder:
    """libjpeg-turbo's pixels uploaded to ``device``: the dry run's stand-in for a GPU decoder."""
    def decode(encoded: list[bytes]) -> list[torch.Tensor]:
        return [torch.from_numpy(simplejpeg.decode_jpeg(d, colorspace="BGR")).to(device) for d in encoded]
    return decode


def measured_decoder(name: str, device: torch.device) -> tuple[JpegDecoder | None, str]:
    """The served preprocess's decoder ``name`` on ``device``; on the CPU, where torchvision leaves JPEGs
    to the CPU path, libjpeg-turbo stands in. None (with why) where a GPU host cannot run it."""
    decoder, how = jpeg_decoder(name, device)
    if decoder is None and device.type != "cuda":
        return libjpeg_decoder(device), f"{how}; libjpeg-turbo stands in"
    return decoder, how


def library_outputs(name: str, device: torch.device) -> JpegDecoder:
    """The decoder ``name`` as its library answers, without the stream wait and before any copy of ours:
    the tensors nvJPEG wrote, which the corruption test frees and watches (on the CPU, where there is no
    stream, the measured decoder)."""
    if device.type != "cuda":
        return measured_decoder(name, device)[0]
    return torchvision_rgb(device) if name == "torchvision" else DECODERS[name](device)


def pixel_differences(jpegs: list[bytes], decoder: JpegDecoder, device: torch.device) -> dict:
    """GPU-decoded BGR pixels against the CPU path's, over every value of every image it decoded; the
    images it refused (answered None) are counted, not compared."""
    diffs, refused = [], 0
    for data in jpegs:
        [bgr] = decoder([data])
        if bgr is None:
            refused += 1
            continue
        cpu = decode_bgr(data, spec.DEFAULT_MAX_PIXELS).astype(np.int16)
        diffs.append(np.abs(bgr.cpu().numpy().astype(np.int16) - cpu).reshape(-1))
    if not diffs:
        return {"images": len(jpegs), "refused": refused, "values": 0}
    flat = np.concatenate(diffs)
    return {"images": len(jpegs), "refused": refused, "values": int(flat.size),
            "differing_share": float((flat > 0).mean()), "mean_abs": float(flat.mean()),
            "p99_abs": float(np.percentile(flat, 99)), "max_abs": int(flat.max())}


def letterbox_exactness(jpegs: list[bytes], size: int, device: torch.device) -> dict:
    """The device letterbox on the same decoded pixels against the same integer warp on CPU torch (0
    values differ, whatever the host) and against this host's OpenCV (0 under OpenCV 4, whose warp it
    ports; another major rounds differently, named in ``opencv_difference``)."""
    against_cpu = against_opencv = 0
    for data in jpegs:
        bgr = decode_bgr(data, spec.DEFAULT_MAX_PIXELS)
        got = letterbox_on_device(torch.from_numpy(bgr).to(device), size)[0].cpu().numpy()
        against_cpu += int((got != letterbox_on_device(torch.from_numpy(bgr), size)[0].numpy()).sum())
        against_opencv += int((got != letterbox(bgr, size)[0]).sum())
    return {"images": len(jpegs), "differing_values": against_opencv, "differing_from_cpu_torch": against_cpu,
            "opencv": cv2.__version__, "opencv_difference": opencv_difference()}


@dataclass
class EngineRun:
    """One request of JPEGs through a preprocess and the FP32 deploy graph: its rows' affines, the graph's
    outputs and the numpy decoder's people."""

    affines: np.ndarray
    outputs: dict[str, np.ndarray]
    people: list

    @classmethod
    @torch.inference_mode()
    def of(cls, jpegs: list[bytes], decoder: JpegDecoder | None, *, device: torch.device, model,
           graph) -> EngineRun:
        from .numerics import SETTINGS, torch_outputs

        stage = GpuPreprocess(input_size=model.variant.input_size, max_pixels=spec.DEFAULT_MAX_PIXELS,
                              device=device, decoder=decoder)
        [rows] = stage.run([jpegs])
        fp32 = next(s for s in SETTINGS if s.name == "fp32")
        outputs = torch_outputs(graph, fp32, device, rows.inputs.cpu().numpy())
        people = decode_batch(outputs, rows.affines, spec.DEFAULT_SCORE_THR, spec.DEFAULT_NMS_THR)
        return cls(rows.affines, outputs, people)


def people_effect(decoded: EngineRun, baseline: EngineRun) -> dict:
    """People from GPU-decoded pixels against people from CPU-decoded ones (``baseline``): the same FP32
    weights on the device, the numpy decoder for both."""
    return compare(baseline.people, decoded.people, decoded.outputs)


def device_decoder_exactness(baseline: EngineRun, device: torch.device, model) -> dict:
    """The decoder on the device against the numpy one, on the same engine outputs."""
    want = stack_people(baseline.people, model.num_keypoints)
    got = decode_on_device({n: torch.as_tensor(v, device=device) for n, v in baseline.outputs.items()},
                           torch.as_tensor(baseline.affines, device=device), score_thr=spec.DEFAULT_SCORE_THR,
                           nms_thr=spec.DEFAULT_NMS_THR, num_keypoints=model.num_keypoints)
    got = [g.cpu().numpy() for g in got]
    same_counts = bool(np.array_equal(got[0], want[0]))
    return {
        "same_people_counts": same_counts,
        "max_abs_keypoint_px": float(np.abs(got[3] - want[3]).max()) if same_counts else None,
        "max_abs_score": float(np.abs(got[2] - want[2]).max()) if same_counts else None,
    }


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def libjpeg_throughput(jpegs: dict[str, list[bytes]], budget_s: float) -> dict[str, float]:
    """Images/s of the CPU path's libjpeg-turbo on one core, per size: what a GPU decoder replaces."""
    out = {}
    for size, images in jpegs.items():
        start, n = time.perf_counter(), 0
        while time.perf_counter() - start < budget_s or n < len(images):
            decode_bgr(images[n % len(images)], spec.DEFAULT_MAX_PIXELS)
            n += 1
        out[size] = n / (time.perf_counter() - start)
    return out


def decode_throughput(jpegs: dict[str, list[bytes]], decoder: JpegDecoder, device: torch.device,
                      batches: tuple[int, ...], budget_s: float) -> dict:
    """Images/s of the batched device decode per size and batch, and the whole GPU preprocess's host CPU
    per image (what the served stage costs the host)."""
    out: dict = {}
    for size, images in jpegs.items():
        row: dict = {}
        for b in batches:
            batch = [images[i % len(images)] for i in range(b)]
            decoder(batch)
            _synchronize(device)
            start, calls = time.perf_counter(), 0
            while time.perf_counter() - start < budget_s / len(batches) / 2 or calls < 2:
                decoder(batch)
                calls += 1
            _synchronize(device)
            row[f"decode_batch_{b}_images_per_s"] = b * calls / (time.perf_counter() - start)
            stage = GpuPreprocess(input_size=spec.VARIANTS[spec.DEFAULT_VARIANT].input_size,
                                  max_pixels=spec.DEFAULT_MAX_PIXELS, device=device, decoder=decoder)
            requests = [[images[i % len(images)]] for i in range(b)]
            stage.run(requests)
            _synchronize(device)
            wall, cpu, calls = time.perf_counter(), time.process_time(), 0
            while time.perf_counter() - wall < budget_s / len(batches) / 2 or calls < 2:
                stage.run(requests)
                calls += 1
            _synchronize(device)
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            row[f"preprocess_batch_{b}_images_per_s"] = b * calls / wall
            row[f"preprocess_batch_{b}_host_cpu_ms_per_image"] = 1000 * cpu / (b * calls)
        out[size] = row
    return out


def queued_work(device: torch.device, ms: float) -> tuple[Callable[[], None], float]:
    """A function that queues about ``ms`` of matmuls on the current stream, and the ms it measured."""
    work = torch.randn((2048, 2048) if device.type == "cuda" else (64, 64), device=device)
    work = work @ work  # cuBLAS's first call is not what a matmul costs
    _synchronize(device)
    start = time.perf_counter()
    for _ in range(4):
        work = (work @ work).clamp_(-1, 1)
    _synchronize(device)
    matmuls = max(1, math.ceil(ms / 1e3 / ((time.perf_counter() - start) / 4)))

    def queue() -> None:
        nonlocal work
        for _ in range(matmuls):
            work = (work @ work).clamp_(-1, 1)

    start = time.perf_counter()
    queue()
    _synchronize(device)
    return queue, 1e3 * (time.perf_counter() - start)


def corruption(jpegs: list[bytes], decoder: JpegDecoder, device: torch.device, *, iterations: int,
               queued_ms: float) -> dict:
    """The hazard as it bites: the previous call's output tensors are inverted (so the next decode cannot
    write their own values back), summed once before and once behind ``queued_ms`` of queued work, and
    freed while that second sum waits; the decoder is called at once. Counts the iterations where a
    new output took a freed tensor's memory (the hazard needs it), where the queued sum saw other values
    (0 expected), and the decodes that differ from the first."""
    batch = list(jpegs)
    first = [None if t is None else t.clone() for t in decoder(batch)]
    out = {"batch": len(batch), "iterations": iterations, "refused_images": sum(t is None for t in first),
           "reused_iterations": 0, "corrupted_iterations": 0, "changed_images": 0}
    if out["refused_images"] == len(batch):
        return out
    queue, out["queued_ms"] = queued_work(device, queued_ms)
    held = decoder(batch)
    for _ in range(iterations):
        live = [t.bitwise_not_() for t in held if t is not None]
        want = [t.sum(dtype=torch.int64) for t in live]
        _synchronize(device)
        queue()
        seen = [t.sum(dtype=torch.int64) for t in live]  # runs after the queued work
        freed = {t.untyped_storage().data_ptr() for t in live}
        del live, held  # freed while those sums wait
        held = decoder(batch)
        taken = {t.untyped_storage().data_ptr() for t in held if t is not None}
        out["reused_iterations"] += bool(taken & freed)
        out["corrupted_iterations"] += int(not all(torch.equal(a, b) for a, b in zip(want, seen)))
        out["changed_images"] += sum((a is None) != (b is None) or (a is not None and not torch.equal(a, b))
                                     for a, b in zip(first, held))
    _synchronize(device)
    return out


def corruption_tests(name: str, device: torch.device, jpegs: list[bytes], *, dry_run: bool) -> dict:
    """The corruption test of decoder ``name``'s own outputs with the served stream wait and without it;
    one that fails is reported in its place."""
    library = library_outputs(name, device)
    tests = {}
    for variant, decode in (("drained", drained(library, device)), ("undrained", library)):
        try:
            tests[variant] = corruption(jpegs, decode, device, iterations=2 if dry_run else 40,
                                        queued_ms=1 if dry_run else 50)
        except Exception as exc:  # noqa: BLE001 - the decoder's other figures stand
            tests[variant] = {"error": f"{type(exc).__name__}: {exc}"}
    return tests


def decoder_section(name: str, *, device: torch.device, dry_run: bool, model, graph, baseline: EngineRun,
                    jpegs: dict[str, list[bytes]], photos: list[bytes]) -> dict:
    """Pixels, people (against the CPU path's ``baseline`` on the same photos), throughput and the
    corruption test of one of ``spec.JPEG_DECODERS``."""
    decoder, how = measured_decoder(name, device)
    if decoder is None:
        return {"decoder": how, "skipped": how}
    mixed = [j for images in jpegs.values() for j in images] + photos
    return {
        "decoder": how,
        "pixels": {"photos": pixel_differences(photos, decoder, device),
                   **{size: pixel_differences(images, decoder, device) for size, images in jpegs.items()}},
        "people": people_effect(EngineRun.of(photos[:2] if dry_run else photos, decoder, device=device,
                                             model=model, graph=graph), baseline),
        "throughput": decode_throughput(jpegs, decoder, device, (1, 2) if dry_run else (1, 8, 32),
                                        budget_s=0.5 if dry_run else 4.0),
        "corruption": corruption_tests(name, device, (mixed * 4)[:32], dry_run=dry_run),
    }


def jpeg_section(*, device: torch.device, dry_run: bool, model) -> dict:
    """Every measurement above, each decoder on its own (one that fails keeps the other's figures);
    ``model`` gives the weights for the people comparisons."""
    jpegs = sized_jpegs(((64, 48),) if dry_run else SIZES)
    photos = [p.read_bytes() for p in sorted((FIXTURES / "images").rglob("*.jpg"))]
    some = photos[:2] if dry_run else photos
    graph = deploy_graph(model, spec.DEFAULT_TOPK)
    baseline = EngineRun.of(some, None, device=device, model=model, graph=graph)
    decoders = {}
    for name in spec.JPEG_DECODERS:
        try:
            decoders[name] = decoder_section(name, device=device, dry_run=dry_run, model=model, graph=graph,
                                             baseline=baseline, jpegs=jpegs, photos=photos)
        except Exception as exc:  # noqa: BLE001 - reported in its place; the next decoder still runs
            decoders[name] = {"decoder": name, "error": f"{type(exc).__name__}: {exc}"}
    return {
        "decoders": decoders,
        "libjpeg_one_core_images_per_s": libjpeg_throughput(jpegs, budget_s=0.1 if dry_run else 1.0),
        "letterbox": letterbox_exactness(some, model.variant.input_size, device),
        "device_decoder": device_decoder_exactness(baseline, device, model),
    }
