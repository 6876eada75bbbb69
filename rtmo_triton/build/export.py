"""Export the deploy graph: to ONNX for the onnx and trt engine flavours, as weights for the torch one.

ONNX Runtime runs the ONNX graph directly (CPU serving, tests); TensorRT builds a plan
from it (``rtmo_triton.build.trt``). The graph uses only operators TensorRT 10
parses natively (no plugins, no NMS), has a dynamic batch dimension, and
records how it was made in its metadata so a served model can say what it is.

``precision="fp16"`` writes the strongly typed form: FP16 weights and compute,
with explicit Casts to FP32 around the pixel arithmetic (``model.deploy.
CandidateGeometry``) and on the outputs, so a builder that follows the graph's
types (TensorRT's STRONGLY_TYPED networks) keeps that part FP32 without any
per-layer flag. The torch flavour's engine file (``export_torch``) is the same
deploy graph as PyTorch weights.

``python -m rtmo_triton.build.export --checkpoint rtmo-s.pth --out model_fp16.onnx --precision fp16``
"""
from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

import onnx
import torch

from ..model.deploy import DeployRTMO, save_deploy
from ..model.fuse import fold_batchnorm
from ..model.rtmo import RTMO
from ..spec import (
    DEFAULT_TOPK,
    ENGINE_INPUT,
    ENGINE_INPUT_DTYPE,
    ENGINE_OUTPUTS,
    PRECISIONS,
    OnnxMeta,
    Param,
    engine_output_shapes,
)

OPSET = 17
"""LayerNormalization is native from 17; TensorRT 10 parses 9..20."""


def export_onnx(
    model: RTMO, path: str | Path, topk: int, metadata: dict[str, str] | None = None,
    opset: int = OPSET, precision: str = "fp32",
) -> onnx.ModelProto:
    """Fold BN (in place), wrap in the TopK deploy graph and write ``path``; returns the checked model.

    ``precision="fp16"``: the strongly typed form (module docstring)."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision {precision!r}: choose one of {', '.join(PRECISIONS)}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    deploy = DeployRTMO(fold_batchnorm(model), topk).eval()
    if precision == "fp16":
        deploy.to_half(fp32_geometry=True)
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
        OnnxMeta.VARIANT: model.variant.name,
        OnnxMeta.INPUT_SIZE: str(size),
        OnnxMeta.TOPK: str(deploy.topk),
        OnnxMeta.NUM_KEYPOINTS: str(model.num_keypoints),
        OnnxMeta.INPUT_DTYPE: ENGINE_INPUT_DTYPE,
        OnnxMeta.PRECISION: precision,
        OnnxMeta.OPSET: str(opset),
        **(metadata or {}),
    }
    onnx.helper.set_model_props(proto, info)
    onnx.checker.check_model(proto, full_check=True)
    onnx.save(proto, str(path))
    return proto


def export_torch(model: RTMO, path: str | Path, topk: int, metadata: dict[str, str] | None = None) -> Path:
    """The torch flavour's engine file: the same deploy graph (BN folded in place), as FP32 weights
    with what rebuilds it (``model.deploy.load_deploy``); precision is chosen where it is served."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_deploy(DeployRTMO(fold_batchnorm(model), topk).eval(), path, metadata)
    return path


def _pin_output_shapes(proto: onnx.ModelProto, topk: int, num_keypoints: int) -> None:
    """The exporter leaves K and J symbolic; they are fixed, and static shapes let
    TensorRT and Triton's config check them."""
    shapes = engine_output_shapes(topk, num_keypoints)
    for out in proto.graph.output:
        dims = out.type.tensor_type.shape.dim
        for dim, size in zip(list(dims)[1:], shapes[out.name], strict=True):
            dim.Clear()
            dim.dim_value = size


def onnx_metadata(path: str | Path) -> dict[str, str]:
    """The metadata_props written by ``export_onnx``."""
    proto = onnx.load(str(path), load_external_data=False)
    return {p.key: p.value for p in proto.metadata_props}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m rtmo_triton.build.export", description=__doc__.split("\n")[0])
    p.add_argument("--checkpoint", type=Path, required=True, help="official RTMO checkpoint (.pth)")
    p.add_argument("--out", type=Path, required=True, help="the .onnx file to write")
    p.add_argument("--topk", type=int, default=DEFAULT_TOPK)
    p.add_argument("--precision", choices=PRECISIONS, default="fp32")
    args = p.parse_args(argv)
    from ..model import CheckpointError, load_checkpoint

    try:
        model, _ = load_checkpoint(args.checkpoint)
    except CheckpointError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    export_onnx(model, args.out, args.topk, {Param.CHECKPOINT: args.checkpoint.name},
                precision=args.precision)
    print(f"{args.out}: RTMO-{model.variant.name} K={args.topk} {args.precision}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
