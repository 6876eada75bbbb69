"""The engine step in PyTorch: our deploy graph (``rtmo_triton.model``), for GPU hosts without TensorRT.

On CUDA the network runs in FP16 (or FP32 with TF32 off) with its weights channels-last, while the
pixel arithmetic (box decoding, the DCC's sin/cos bin code: ``model.deploy.CandidateGeometry``)
stays FP32 and the outputs are FP32; each batch size gets a CUDA graph on first use, so a batch
costs one graph launch instead of hundreds of kernel launches. On the CPU it is the FP32 graph of
the ONNX flavour, run by PyTorch.

Outputs stay where they were computed: the Python model hands them to Triton through DLPack, so a
GPU result goes to the next model without passing through this process's host memory.

PyTorch is never carried in the repository (GBs): the server's interpreter must have it.
"""
from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from ..model.deploy import DeployRTMO, load_deploy
from ..spec import ENGINE_INPUT_DTYPE, ENGINE_OUTPUTS, PRECISIONS


def set_tf32(enabled: bool) -> None:
    """TF32 for CUDA matmuls and convolutions. cuDNN's convolutions default to TF32 in PyTorch, so FP32
    must switch it off to be FP32. Only the ``fp32_precision`` settings are used: PyTorch refuses a mix
    of them and the older ``allow_tf32`` flags."""
    mode = "tf32" if enabled else "ieee"
    torch.backends.cuda.matmul.fp32_precision = mode
    torch.backends.cudnn.conv.fp32_precision = mode


def prepare(deploy: DeployRTMO, device: torch.device, precision: str, *, fp32_geometry: bool = True,
            tf32: bool = False) -> DeployRTMO:
    """The deploy graph on ``device`` in ``precision`` (``fp16``: the network only, unless
    ``fp32_geometry`` is False), channels-last on CUDA. In place; returns it."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision {precision!r}: choose one of {', '.join(PRECISIONS)}")
    if device.type == "cuda":
        set_tf32(tf32)
    if precision == "fp16":
        deploy.to_half(fp32_geometry=fp32_geometry)
    deploy.to(device)
    if device.type == "cuda":
        deploy.model.to(memory_format=torch.channels_last)
    return deploy.eval()


class CudaGraphs:
    """One CUDA graph per batch size, captured on first use; replays write into static outputs,
    which ``__call__`` copies out so the next replay cannot overwrite what a caller holds.

    All graphs share one memory pool: an instance replays one graph at a time and copies its outputs
    out before the next, so their intermediates may overlap. Separate pools would keep activations
    for every batch size at once (1 + 2 + ... + 8 images' worth at ``max_batch_size`` 8) per instance.
    """

    WARMUP_RUNS = 2

    def __init__(self, module: torch.nn.Module, device: torch.device) -> None:
        self.module, self.device = module, device
        self.graphs: dict[tuple, tuple[torch.cuda.CUDAGraph, torch.Tensor, tuple[torch.Tensor, ...]]] = {}
        self.pool = None  # made at the first capture: a pool handle needs the CUDA context

    def _capture(self, x: torch.Tensor):
        static = torch.zeros_like(x)
        side = torch.cuda.Stream(self.device)
        side.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(side):  # warm-up off the capture: cuDNN picks its algorithms here
            for _ in range(self.WARMUP_RUNS):
                self.module(static)
        torch.cuda.current_stream(self.device).wait_stream(side)
        if self.pool is None:
            self.pool = torch.cuda.graph_pool_handle()
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self.pool):
            outputs = self.module(static)
        return graph, static, outputs

    def __call__(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        key = (tuple(x.shape), x.dtype)
        if key not in self.graphs:
            self.graphs[key] = self._capture(x)
        graph, static, outputs = self.graphs[key]
        static.copy_(x)
        graph.replay()
        return tuple(t.clone() for t in outputs)


class TorchEngine:
    def __init__(self, path: str | Path, device: str = "cpu", precision: str = "fp32", *,
                 cuda_graphs: bool = True, threads: int = 0) -> None:
        """``path``: the flavour's ``model.pt``; ``device``: ``cpu`` or ``cuda[:n]``; ``threads``: intra-op
        threads on the CPU (0: PyTorch's default)."""
        self.device = torch.device(device)
        if self.device.type == "cuda":
            if not torch.cuda.is_available():
                raise RuntimeError(f"the engine is configured for {device}, but PyTorch {torch.__version__} "
                                   "sees no CUDA device: serve it on a GPU host, or rebuild the repository "
                                   "there (ENGINE=torch picks the CPU where no GPU is visible)")
            torch.cuda.set_device(self.device)
        elif threads > 0:
            torch.set_num_threads(threads)
        deploy, self.info = load_deploy(path)
        self.precision = precision if self.device.type == "cuda" else "fp32"
        self.deploy = prepare(deploy, self.device, self.precision)
        on_cuda = self.device.type == "cuda"
        if on_cuda:
            torch.backends.cudnn.benchmark = True  # few input shapes (one per batch size): tune each once
        self.graphs = CudaGraphs(self.deploy, self.device) if cuda_graphs and on_cuda else None

    def describe(self) -> str:
        where = self.device.type if self.device.type == "cpu" else torch.cuda.get_device_name(self.device)
        mode = ", CUDA graphs" if self.graphs else ""
        return (f"PyTorch {torch.__version__}, RTMO-{self.info['variant']} K={self.info['topk']} on {where}, "
                f"{self.precision}{' (geometry fp32)' if self.precision == 'fp16' else ''}{mode}")

    @torch.inference_mode()
    def run(self, batch: np.ndarray | torch.Tensor) -> dict[str, torch.Tensor]:
        """[B,3,S,S] images (``spec.ENGINE_INPUT_DTYPE``, in host memory or already on a device) → the
        engine outputs on the engine's device, finished (the device is synchronised, so any consumer
        may read them)."""
        x = torch.as_tensor(batch).to(self.device)
        outputs = self.graphs(x) if self.graphs else self.deploy(x)
        if self.device.type == "cuda":
            torch.cuda.current_stream(self.device).synchronize()
        return dict(zip(ENGINE_OUTPUTS, outputs))

    def warm_up(self, max_batch: int) -> float:
        """Run every batch size once (cuDNN picks its algorithms, the CUDA graphs are captured), so the
        first requests cost what later ones do; returns the seconds it took."""
        start = time.perf_counter()
        size = int(self.info["input_size"])
        for batch in range(1, max_batch + 1):
            self.run(np.zeros((batch, 3, size, size), dtype=ENGINE_INPUT_DTYPE))
        return time.perf_counter() - start

    def run_requests(self, inputs: Sequence[np.ndarray | torch.Tensor]) -> list[dict[str, torch.Tensor]]:
        """One run over every request's rows; outputs split back per request (contiguous views)."""
        rows = [torch.as_tensor(x).to(self.device) for x in inputs]
        batch = rows[0] if len(rows) == 1 else torch.cat(rows)
        outputs = self.run(batch)
        sizes = [len(x) for x in inputs]
        split = {name: value.split(sizes) for name, value in outputs.items()}
        return [{name: parts[i] for name, parts in split.items()} for i in range(len(inputs))]
