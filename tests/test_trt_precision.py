"""FP16 plans keep the pixel arithmetic in FP32: the layer selection, on the real exported graph.

TensorRT cannot run here, so its parsed network is stood in for by one layer per ONNX node (named
after the node, outputs named after the node's outputs, as TensorRT's ONNX parser does), one
constant layer per initializer, and unnamed broadcast shuffles before every elementwise operand
that is a constant (helper layers whose names say nothing of the scope they serve).
"""
from __future__ import annotations

import types

import onnx
import pytest
from onnx import TensorProto

from rtmo_triton.build.export import export_onnx
from rtmo_triton.build.trt.precision import constrain, geometry_region, region_layers
from rtmo_triton.model import random_model
from rtmo_triton.model.deploy import GEOMETRY_SCOPE

TRT = types.SimpleNamespace(float32="FLOAT", float16="HALF", int64="INT64", int32="INT32", bool="BOOL")
ONNX_TO_TRT = {TensorProto.FLOAT: TRT.float32, TensorProto.FLOAT16: TRT.float16, TensorProto.INT64: TRT.int64,
               TensorProto.BOOL: TRT.bool}
ELEMENTWISE = {"Add", "Sub", "Mul", "Div"}


class Tensor:
    def __init__(self, name: str, dtype: str) -> None:
        self.name, self.dtype = name, dtype


class Layer:
    def __init__(self, name: str, op: str, inputs: list[Tensor], outputs: list[Tensor]) -> None:
        self.name, self.op, self.inputs, self.outputs = name, op, inputs, outputs
        self.precision = None
        self.output_types: dict[int, str] = {}
        self.num_inputs, self.num_outputs = len(inputs), len(outputs)

    def get_input(self, i):
        return self.inputs[i]

    def get_output(self, i):
        return self.outputs[i]

    def set_output_type(self, i, dtype):
        self.output_types[i] = dtype


class Network:
    def __init__(self, proto: onnx.ModelProto, helpers: bool = True) -> None:
        graph = onnx.shape_inference.infer_shapes(proto).graph
        typed = (*graph.value_info, *graph.input, *graph.output)
        elem = {v.name: v.type.tensor_type.elem_type for v in typed}
        elem |= {i.name: i.data_type for i in graph.initializer}
        tensors: dict[str, Tensor] = {}
        self.layers: list[Layer] = []
        self.inputs = [Tensor(i.name, ONNX_TO_TRT.get(i.type.tensor_type.elem_type, TRT.int32))
                       for i in graph.input]
        tensors |= {t.name: t for t in self.inputs}

        def tensor(name: str) -> Tensor:
            if name not in tensors:
                tensors[name] = Tensor(name, ONNX_TO_TRT.get(elem.get(name), TRT.int32))
            return tensors[name]

        constants = {i.name for i in graph.initializer}
        for init in graph.initializer:
            self.layers.append(Layer(init.name, "Constant", [], [tensor(init.name)]))
        for node in graph.node:
            if node.op_type == "Constant":
                elem[node.output[0]] = node.attribute[0].t.data_type
                constants.add(node.output[0])
            inputs = []
            for name in (n for n in node.input if n):
                t = tensor(name)
                if helpers and node.op_type in ELEMENTWISE and name in constants:
                    unnamed = f"(Unnamed Layer* {len(self.layers)}) [Shuffle]"
                    shuffled = Tensor(f"{unnamed}_output", t.dtype)
                    self.layers.append(Layer(unnamed, "Shuffle", [t], [shuffled]))
                    t = shuffled
                inputs.append(t)
            self.layers.append(Layer(node.name, node.op_type, inputs, [tensor(o) for o in node.output]))
        self.num_layers, self.num_inputs = len(self.layers), len(self.inputs)

    def get_layer(self, i):
        return self.layers[i]

    def get_input(self, i):
        return self.inputs[i]


@pytest.fixture(scope="module")
def graph(tmp_path_factory):
    return export_onnx(random_model("t"), tmp_path_factory.mktemp("g") / "t.onnx", topk=50)


def test_the_region_is_where_data_enters_and_leaves_the_geometry_scope(graph):
    region = geometry_region(graph)
    producers = {o: n for n in graph.graph.node for o in n.output}
    assert {producers[t].op_type for t in region.entries} == {"GatherElements", "TopK"}  # deltas, indices
    assert {producers[t].op_type for t in region.exits} == {"Concat"}  # boxes, x code, y code
    assert len(region.exits) == 3
    ops = {n.op_type for n in graph.graph.node if n.name in region.nodes}
    assert {"Sin", "Cos", "Div", "Exp", "Mul", "Add"} <= ops and not {"Conv", "MatMul", "Gemm"} & ops


def test_layers_found_on_the_parsed_network_are_the_scope_and_its_helpers(graph):
    region = geometry_region(graph)
    network = Network(graph)
    chosen = region_layers(network, region)
    names = {layer.name for layer in chosen}
    scoped = {layer.name for layer in network.layers if layer.name.startswith(GEOMETRY_SCOPE)}
    assert names & scoped == scoped, f"scope layers missed: {sorted(scoped - names)}"
    outside = {layer.name: layer.op for layer in chosen if layer.name not in scoped}
    # outside the scope's names: only unnamed helpers and the module's own FP32 constants
    assert set(outside.values()) <= {"Shuffle", "Constant"}, outside
    assert {n for n, op in outside.items() if op == "Constant"} == {
        "geometry.x_bins", "geometry.y_bins", "geometry.dim_t"}
    assert any(op == "Shuffle" for op in outside.values())
    # nothing of the network around it
    entries = {layer.name for layer in network.layers
               if any(t.name in region.entries for t in layer.outputs)}
    assert not entries & names and not {"Conv", "MatMul", "Gemm", "TopK"} & {layer.op for layer in chosen}


def test_without_helper_layers_the_same_scope_is_found(graph):
    region = geometry_region(graph)
    plain = {layer.name for layer in region_layers(Network(graph, helpers=False), region)}
    helped = {layer.name for layer in region_layers(Network(graph), region)}
    assert plain == {n for n in helped if not n.startswith("(Unnamed")}


def test_constrain_pins_float_layers_and_outputs_to_fp32(graph):
    network = Network(graph)
    pinned = set(constrain(TRT, network, geometry_region(graph)))
    by_name = {layer.name: layer for layer in network.layers}
    assert {n.split("/")[-1].rstrip("_0123456789") for n in pinned if n.startswith(GEOMETRY_SCOPE)} >= {
        "Sin", "Cos", "Div", "Exp", "Mul", "Add", "Sub", "Concat"}
    for name in pinned:
        layer = by_name[name]
        assert layer.precision == TRT.float32
        floats = {i for i, t in enumerate(layer.outputs) if t.dtype in (TRT.float32, TRT.float16)}
        assert floats and layer.output_types == dict.fromkeys(floats, TRT.float32)
    untouched = [layer for layer in network.layers if layer.name not in pinned]
    assert all(layer.precision is None and not layer.output_types for layer in untouched)
    # integer layers of the scope (slice bounds) are left alone: they have no precision to keep
    assert any(layer.name.startswith(GEOMETRY_SCOPE) for layer in untouched)


def test_a_graph_without_the_scope_is_refused():
    h = onnx.helper
    node = h.make_node("Relu", ["x"], ["y"], name="/model/Relu")
    proto = h.make_model(h.make_graph([node], "g", [h.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                                      [h.make_tensor_value_info("y", TensorProto.FLOAT, [1])]))
    with pytest.raises(ValueError, match="no nodes under '/geometry/'"):
        geometry_region(proto)


def test_fp16_export_is_typed_fp16_with_fp32_geometry_and_outputs(tmp_path):
    """The strongly typed form: FP16 weights, the geometry's constants FP32, explicit Casts at its
    boundary and on every output."""
    proto = export_onnx(random_model("t"), tmp_path / "t16.onnx", topk=50, precision="fp16")
    inits = {i.name: i.data_type for i in proto.graph.initializer}
    geometry = {n for n in inits if n.startswith("geometry.")}
    assert geometry == {"geometry.x_bins", "geometry.y_bins", "geometry.dim_t"}
    assert all(inits[n] == TensorProto.FLOAT for n in geometry)
    others = [t for n, t in inits.items() if n not in geometry]
    assert others and all(t == TensorProto.FLOAT16 for t in others)
    casts = {n.output[0]: (n.input[0], n.attribute[0].i) for n in proto.graph.node if n.op_type == "Cast"}
    region = geometry_region(proto)
    # the codes leave the geometry as FP32 and are cast to FP16 for the network's linear layers
    to_half = {src for src, to in casts.values() if to == TensorProto.FLOAT16}
    codes = [t for t in region.exits if t in to_half]
    assert len(codes) == 2
    # the box deltas enter it through a cast to FP32
    scoped_casts = [n for n in proto.graph.node if n.op_type == "Cast" and n.name.startswith(GEOMETRY_SCOPE)]
    assert [n.attribute[0].i for n in scoped_casts] == [TensorProto.FLOAT]
    for out in proto.graph.output:
        assert out.type.tensor_type.elem_type == TensorProto.FLOAT
        assert casts[out.name][1] == TensorProto.FLOAT
    assert {p.key: p.value for p in proto.metadata_props}["precision"] == "fp16"


def test_fp32_export_has_nothing_in_fp16(graph):
    assert {p.key: p.value for p in graph.metadata_props}["precision"] == "fp32"
    assert all(i.data_type != TensorProto.FLOAT16 for i in graph.graph.initializer)
    assert all(n.attribute[0].i != TensorProto.FLOAT16 for n in graph.graph.node if n.op_type == "Cast")
