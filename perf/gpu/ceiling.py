"""The engine's ceiling: the deploy graph alone on the device, no server, no pre- or post-processing.

Per variant and batch: eager PyTorch and a replayed CUDA graph (``served.torch_engine.CudaGraphs``,
what the served engine uses), optionally ``torch.compile``. Throughput is timed over back-to-back
runs with one synchronisation at the end; latency is each run timed alone. The host↔device copies
of the engine's input and outputs are timed apart, from pageable and from pinned memory.
"""
from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
import torch

from rtmo_triton import spec
from rtmo_triton.model.deploy import DeployRTMO
from rtmo_triton.served.torch_engine import CudaGraphs, prepare


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_runs(fn: Callable[[], object], device: torch.device, *, warmup: int, iters: int,
              budget_s: float) -> dict:
    """Throughput of ``iters`` back-to-back calls and the latency of calls timed one by one."""
    for _ in range(warmup):
        fn()
    _sync(device)
    single = []
    deadline = time.perf_counter() + budget_s / 2
    for _ in range(iters):
        t0 = time.perf_counter()
        fn()
        _sync(device)
        single.append(time.perf_counter() - t0)
        if time.perf_counter() > deadline:
            break
    n = len(single)
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    _sync(device)
    total = time.perf_counter() - t0
    ms = np.array(single) * 1e3
    return {"iters": n, "batch_ms_mean": total / n * 1e3, "latency_ms_p50": float(np.percentile(ms, 50)),
            "latency_ms_p99": float(np.percentile(ms, 99)), "latency_ms_max": float(ms.max())}


def engine_ceiling(deploy: DeployRTMO, device: torch.device, batches: tuple[int, ...], *, precision: str,
                   modes: tuple[str, ...], warmup: int, iters: int, budget_s: float, log=print) -> dict:
    """images/s and latency of ``deploy`` (prepared here) at each batch, per mode."""
    size = deploy.model.variant.input_size
    model = prepare(deploy, device, precision)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed shapes: let cuDNN pick its fastest algorithms
    runners: dict[str, Callable[[torch.Tensor], object]] = {"eager": model}
    if "cuda_graph" in modes and device.type == "cuda":
        runners["cuda_graph"] = CudaGraphs(model, device)
    if "compile" in modes:
        runners["compile"] = torch.compile(model)
    result: dict = {}
    per = budget_s / max(1, len(batches) * len(runners))
    with torch.inference_mode():
        for batch in batches:
            x = torch.randint(0, 256, (batch, 3, size, size), dtype=getattr(torch, spec.ENGINE_INPUT_DTYPE),
                              device=device)
            row = {}
            for mode, run in runners.items():
                try:
                    timing = time_runs(lambda run=run, x=x: run(x), device, warmup=warmup, iters=iters,
                                       budget_s=per)
                except Exception as exc:  # noqa: BLE001 - one mode failing must not lose the others
                    row[mode] = {"error": f"{type(exc).__name__}: {exc}"[:500]}
                    continue
                timing["images_per_s"] = batch / timing["batch_ms_mean"] * 1e3
                row[mode] = timing
                log(f"[ceiling] RTMO-{deploy.model.variant.name} batch {batch} {mode}: "
                    f"{timing['images_per_s']:.0f} images/s, p50 {timing['latency_ms_p50']:.2f} ms")
            result[str(batch)] = row
    return result


def copy_times(device: torch.device, input_size: int, topk: int, num_keypoints: int,
               batches: tuple[int, ...], repeats: int = 20) -> dict:
    """Median ms of the engine input host→device and of its outputs device→host, pageable and pinned."""

    out: dict = {}
    for batch in batches:
        in_bytes = batch * 3 * input_size * input_size * np.dtype(spec.ENGINE_INPUT_DTYPE).itemsize
        shapes = spec.engine_output_shapes(topk, num_keypoints).values()
        out_elems = sum(batch * int(np.prod(s)) for s in shapes)
        host_in = torch.zeros(in_bytes, dtype=torch.uint8)
        host_out = torch.zeros(out_elems, dtype=torch.float32)
        dev_in = torch.zeros(in_bytes, dtype=torch.uint8, device=device)
        dev_out = torch.zeros(out_elems, dtype=torch.float32, device=device)
        row = {"input_bytes": in_bytes, "output_bytes": out_elems * 4}
        for memory in ("pageable", "pinned"):
            src_in = host_in.pin_memory() if memory == "pinned" else host_in
            dst_out = host_out.pin_memory() if memory == "pinned" else host_out

            def median_ms(fn) -> float:
                times = []
                for _ in range(repeats):
                    _sync(device)
                    t0 = time.perf_counter()
                    fn()
                    _sync(device)
                    times.append(time.perf_counter() - t0)
                return float(np.median(times) * 1e3)

            h2d = median_ms(lambda s=src_in, d=dev_in: d.copy_(s, non_blocking=True))
            d2h = median_ms(lambda s=dev_out, d=dst_out: d.copy_(s, non_blocking=True))
            row[memory] = {"h2d_ms": h2d, "d2h_ms": d2h, "h2d_gb_s": in_bytes / h2d / 1e6,
                           "d2h_gb_s": out_elems * 4 / d2h / 1e6}
        out[str(batch)] = row
    return out
