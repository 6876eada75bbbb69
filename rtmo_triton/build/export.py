"""Export the deploy graph to ONNX: the one file both engine flavours start from.

ONNX Runtime runs it directly (CPU serving, tests); TensorRT builds a plan
from it (``rtmo_triton.trt``). The graph uses only operators TensorRT 10
parses natively (no plugins, no NMS), has a dynamic batch dimension, and
records how it was made in its metadata so a served model can say what it is.
"""
from __future__ import annotations

import hashlib
import warnings
from pathlib import Path

import onnx
import torch

from .model.deploy import DeployRTMO
from .model.fuse import fold_batchnorm
from .model.rtmo import RTMO
from .spec import ENGINE_INPUT, ENGINE_INPUT_DTYPE, ENGINE_OUTPUTS, NUM_BINS

OPSET = 17
"""LayerNormalization is native from 17; TensorRT 10 parses 9..20."""


def export_onnx(
    model: RTMO, path: str | Path, topk: int, metadata: dict[str, str] | None = None,
    opset: int = OPSET,
) -> onnx.ModelProto:
    """Fold BN, wrap in the TopK deploy graph and write ``path``; returns the checked model."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    deploy = DeployRTMO(fold_batchnorm(model), topk).eval()
    size = model.variant.input_size
    dummy = torch.zeros(2, 3, size, size, dtype=getattr(torch, ENGINE_INPUT_DTYPE))
    batch = {0: "batch"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
        torch.onnx.export(
            deploy, (dummy,), str(path), dynamo=False, opset_version=opset,
            input_names=[ENGINE_INPUT], output_names=list(ENGINE_OUTPUTS),
            dynamic_axes={name: batch for name in (ENGINE_INPUT, *ENGINE_OUTPUTS)},
            do_constant_folding=True,
        )
    proto = onnx.load(str(path))
    _pin_output_shapes(proto, deploy.topk, model.num_keypoints)
    info = {
        "variant": model.variant.name,
        "input_size": str(size),
        "topk": str(deploy.topk),
        "num_keypoints": str(model.num_keypoints),
        "input_dtype": ENGINE_INPUT_DTYPE,
        "opset": str(opset),
        **(metadata or {}),
    }
    onnx.helper.set_model_props(proto, info)
    onnx.checker.check_model(proto, full_check=True)
    onnx.save(proto, str(path))
    return proto


def output_shapes(topk: int, num_keypoints: int) -> dict[str, tuple[int, ...]]:
    """Per-image output shapes (batch dim excluded), in ``ENGINE_OUTPUTS`` order."""
    shapes = ((topk,), (topk, 4), (topk, num_keypoints), (topk, num_keypoints, NUM_BINS[0]),
              (topk, num_keypoints, NUM_BINS[1]))
    return dict(zip(ENGINE_OUTPUTS, shapes, strict=True))


def _pin_output_shapes(proto: onnx.ModelProto, topk: int, num_keypoints: int) -> None:
    """The exporter leaves K and J symbolic; they are fixed, and static shapes let
    TensorRT and Triton's config check them."""
    shapes = output_shapes(topk, num_keypoints)
    for out in proto.graph.output:
        dims = out.type.tensor_type.shape.dim
        for dim, size in zip(list(dims)[1:], shapes[out.name], strict=True):
            dim.Clear()
            dim.dim_value = size


def onnx_metadata(path: str | Path) -> dict[str, str]:
    """The metadata_props written by ``export_onnx``."""
    proto = onnx.load(str(path), load_external_data=False)
    return {p.key: p.value for p in proto.metadata_props}


def sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
