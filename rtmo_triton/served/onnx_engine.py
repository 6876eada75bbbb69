"""The engine step where no TensorRT exists: the exported ONNX graph in onnxruntime.

Triton's dynamic batcher hands ``execute`` several requests at once; they are
concatenated into one session run so the CPU sees real batches, then split
back per request.
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnxruntime as ort

from ..spec import ENGINE_INPUT, ENGINE_OUTPUTS


class OnnxEngine:
    def __init__(self, path: str | Path, intra_op_threads: int = 0) -> None:
        options = ort.SessionOptions()
        options.intra_op_num_threads = intra_op_threads
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def run(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        """[B,3,S,S] images (``spec.ENGINE_INPUT_DTYPE``) → the engine outputs, batch first."""
        return dict(zip(ENGINE_OUTPUTS, self.session.run(list(ENGINE_OUTPUTS), {ENGINE_INPUT: batch})))

    def run_requests(self, inputs: Sequence[np.ndarray]) -> list[dict[str, np.ndarray]]:
        """One session run over every request's rows; outputs split back in request order."""
        batch = inputs[0] if len(inputs) == 1 else np.concatenate(inputs)
        outputs = self.run(batch)
        bounds = np.cumsum([len(x) for x in inputs])[:-1]
        split = {name: np.split(value, bounds) for name, value in outputs.items()}
        return [{name: parts[i] for name, parts in split.items()} for i in range(len(inputs))]
