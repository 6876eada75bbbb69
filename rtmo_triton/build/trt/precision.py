"""Which layers of an FP16 plan must stay FP32: the pixel arithmetic of ``model.deploy.CandidateGeometry``.

The DCC encodes each bin's position (pixels, up to several hundred) as sin/cos of angles up to about
±400 rad; FP16 spaces such numbers 0.25 rad apart, so an FP16 encoding moves the keypoints of large
people by pixels. The exported graph names that part's nodes under ``/geometry/``. Here the region
is found on the graph by where data enters and leaves that scope (``GeometryRegion``), and in
TensorRT's parsed network as every layer on a path from an entry tensor to an exit tensor (and not
itself upstream of an entry), plus the constants only they read: helper layers the parser adds
(broadcast shuffles, casts) are caught whatever they are named. ``constrain`` pins those layers
and their float outputs to FP32; the build adds ``OBEY_PRECISION_CONSTRAINTS`` so TensorRT may not
override them.
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from ...model.deploy import GEOMETRY_SCOPE


@dataclass(frozen=True)
class GeometryRegion:
    """The geometry scope of an exported graph, by tensor name."""

    entries: frozenset[str]
    """Tensors made outside the scope and read inside it (the candidates' box deltas and cell indices)."""
    exits: frozenset[str]
    """Tensors made inside and read outside it, or graph outputs (boxes, the bins' sin/cos codes)."""
    nodes: frozenset[str]


def geometry_region(proto) -> GeometryRegion:
    """The region of an ONNX ``ModelProto`` exported by ``build.export``; ``ValueError`` without one."""
    graph = proto.graph
    inside = [n for n in graph.node if n.name.startswith(GEOMETRY_SCOPE)]
    if not inside:
        raise ValueError(f"the graph has no nodes under {GEOMETRY_SCOPE!r}: export it with this version "
                         "of rtmo_triton.build.export")
    made_inside = {t for n in inside for t in n.output}
    constants = {i.name for i in graph.initializer}
    constants |= {t for n in graph.node if n.op_type == "Constant" for t in n.output}
    entries = {t for n in inside for t in n.input if t and t not in made_inside and t not in constants}
    outputs = {o.name for o in graph.output}
    read_outside = {t for n in graph.node if not n.name.startswith(GEOMETRY_SCOPE) for t in n.input}
    exits = {t for t in made_inside if t in read_outside or t in outputs}
    return GeometryRegion(frozenset(entries), frozenset(exits), frozenset(n.name for n in inside))


def _inputs(layer) -> list:
    return [t for t in (layer.get_input(i) for i in range(layer.num_inputs)) if t is not None]


def _outputs(layer) -> list:
    return [layer.get_output(i) for i in range(layer.num_outputs)]


def region_layers(network, region: GeometryRegion) -> list:
    """Layers of a parsed TensorRT network on a path from an entry to an exit tensor, and the
    constant layers (and any layer computing only from constants) read only by those; in network
    order."""
    layers = [network.get_layer(i) for i in range(network.num_layers)]
    producer = {t.name: i for i, layer in enumerate(layers) for t in _outputs(layer)}
    consumers: dict[str, list[int]] = {}
    for i, layer in enumerate(layers):
        for t in _inputs(layer):
            consumers.setdefault(t.name, []).append(i)
    missing = sorted((region.entries | region.exits) - set(producer) - {
        network.get_input(i).name for i in range(network.num_inputs)})
    if missing:
        raise ValueError(f"the parsed network lacks the geometry's boundary tensors {missing}")

    def walk(start: Iterable[int], step) -> set[int]:
        seen, todo = set(), list(start)
        while todo:
            i = todo.pop()
            if i not in seen:
                seen.add(i)
                todo.extend(step(i))
        return seen

    def up(tensors: Iterable[str]) -> set[int]:
        return walk((producer[t] for t in tensors if t in producer),
                    lambda i: (producer[t.name] for t in _inputs(layers[i]) if t.name in producer))

    down = walk((c for t in region.entries for c in consumers.get(t, ())),
                lambda i: (c for t in _outputs(layers[i]) for c in consumers.get(t.name, ())))
    # what makes an entry is outside, even when it also descends from another entry (the gather of
    # the box deltas reads the TopK indices)
    chosen = (down & up(region.exits)) - up(region.entries)
    # constants (bins, frequencies, priors, slice bounds) and what reshapes them, read only here;
    # network order is topological, so in reverse every reader is decided before its producer
    network_inputs = [network.get_input(i).name for i in range(network.num_inputs)]
    variable = walk((c for t in network_inputs for c in consumers.get(t, ())),
                    lambda i: (c for t in _outputs(layers[i]) for c in consumers.get(t.name, ())))
    for i in reversed(range(len(layers))):
        readers = {c for t in _outputs(layers[i]) for c in consumers.get(t.name, ())}
        if i not in variable and readers and readers <= chosen:
            chosen.add(i)
    return [layers[i] for i in sorted(chosen)]


def constrain(trt, network, region: GeometryRegion) -> list[str]:
    """Pin the region's layers and their float outputs to FP32 (the build must also set
    ``OBEY_PRECISION_CONSTRAINTS``); returns the names of the pinned layers."""
    floats = (trt.float32, trt.float16)
    pinned = []
    for layer in region_layers(network, region):
        float_outputs = [i for i, t in enumerate(_outputs(layer)) if t.dtype in floats]
        if not float_outputs:
            continue  # shapes and indices: integer layers have no precision to keep
        layer.precision = trt.float32
        for i in float_outputs:
            layer.set_output_type(i, trt.float32)
        pinned.append(layer.name)
    return pinned
