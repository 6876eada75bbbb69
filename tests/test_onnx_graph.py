"""The exported graph is fit for TensorRT: checked, opset >= 17, dynamic batch,
static per-image shapes, only natively parsed operators."""
import onnx
import pytest

from rtmo_triton.build.export import OPSET, export_onnx
from rtmo_triton.model import random_model
from rtmo_triton.spec import ENGINE_INPUT, ENGINE_OUTPUTS, engine_output_shapes

# ONNX operators TensorRT 10's parser supports natively that this graph may use
TENSORRT_NATIVE = {
    "Add", "Cast", "Clip", "Concat", "Constant", "ConstantOfShape", "Conv", "Cos", "Div", "Erf",
    "Exp", "Expand", "Gather", "GatherElements", "Gemm", "Identity", "LayerNormalization", "MatMul",
    "MaxPool", "Mul", "ReduceL2", "Relu", "Reshape", "Resize", "Shape", "Sigmoid", "Sin", "Slice",
    "Softmax", "Split", "Sqrt", "Sub", "Tile", "TopK", "Transpose", "Unsqueeze",
}


@pytest.fixture(scope="module")
def graph(tmp_path_factory):
    path = tmp_path_factory.mktemp("g") / "t.onnx"
    return export_onnx(random_model("t"), path, topk=50)


def test_checked_and_opset(graph):
    onnx.checker.check_model(graph, full_check=True)
    assert max(o.version for o in graph.opset_import if o.domain in ("", "ai.onnx")) >= OPSET >= 17


def test_only_native_operators(graph):
    ops = {n.op_type for n in graph.graph.node}
    assert ops <= TENSORRT_NATIVE, f"not TensorRT-native: {sorted(ops - TENSORRT_NATIVE)}"
    assert not {"If", "Loop", "NonMaxSuppression", "NonZero"} & ops


def test_io_shapes(graph):
    (inp,) = graph.graph.input
    assert inp.name == ENGINE_INPUT
    dims = inp.type.tensor_type.shape.dim
    assert dims[0].dim_param and [d.dim_value for d in dims[1:]] == [3, 416, 416]
    expected = engine_output_shapes(50, 17)
    assert [o.name for o in graph.graph.output] == list(ENGINE_OUTPUTS)
    for out in graph.graph.output:
        dims = out.type.tensor_type.shape.dim
        assert dims[0].dim_param, f"{out.name}: batch dim must be dynamic"
        assert tuple(d.dim_value for d in dims[1:]) == expected[out.name]
