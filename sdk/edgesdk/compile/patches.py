"""Patch-based execution of a model's first, high-resolution stage (after MCUNetV2, NeurIPS 2021).

On a microcontroller the activation peak is usually set by the first layers, where the feature
maps are largest. Running that stage patch by patch (the output of its last layer split into a
grid, each patch computed from the input region its receptive field needs) keeps only one
patch's intermediate tensors alive at a time; the rows and columns where the receptive fields of
neighbouring patches overlap are computed twice (the recomputation).

The rewrite is on the ONNX graph, before TVM imports it, so every device sees ordinary operators:
per patch, a Slice of the stage's input and a copy of the stage's nodes whose convolutions and
pools pad only on the image's own borders (ONNX pads are per side), then Concats of the patches
into the cut tensor, which the rest of the model reads unchanged. The stage is every node the
cut tensor depends on, back to the model inputs; each must be spatially local (a convolution or
pool with explicit pads, or an op that maps each pixel on its own: activations, elementwise
arithmetic with per-channel constants, BatchNormalization, QuantizeLinear/DequantizeLinear per
channel, Concat of channels), and none of its tensors may be read outside it.

``plan`` tries each possible cut (after the largest tensor of the model, where the feature map
has shrunk; shallow cuts first, within a bounded number of rewritten nodes) and grid (2x2 to
8x8), estimates the activation peak in the file's order of the
rewritten graph (a pointwise op on its producer's only output counts as fused into it, as the
compiler will), and chooses the plan that fits the limit with the least recomputation, or, if
none does, the one with the lowest peak. The compiled model's real peak is checked afterwards.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import helper, numpy_helper

from edgesdk.compile.ordering import Node, peak_in_order

WINDOW_OPS = {"Conv", "MaxPool", "AveragePool"}
# Ops that compute each pixel from the same pixel of their inputs.
POINTWISE = {
    "Relu", "LeakyRelu", "PRelu", "Elu", "Selu", "Celu", "Clip", "Sigmoid", "HardSigmoid", "HardSwish", "Tanh", "Softplus", "Mish", "Gelu",
    "Erf", "Exp", "Log", "Sqrt", "Neg", "Abs", "Reciprocal", "Floor", "Ceil", "Round", "Sign",
    "Identity", "Cast", "Add", "Sub", "Mul", "Div", "Pow", "Max", "Min", "Sum", "Mean",
    "BatchNormalization", "QuantizeLinear", "DequantizeLinear", "Concat",
}  # fmt: skip
GRIDS = (2, 3, 4, 5, 6, 8)
# How many patched nodes the search may write in all (stage nodes x patches, summed over the
# candidates, shallow cuts first): bounds its time (about 10 s) on deep stages, deterministically.
SEARCH_NODES = 20_000

Region = tuple[int, int, int, int]  # rows [r0, r1), columns [c0, c1)


@dataclass(frozen=True)
class PatchPlan:
    """A stage run patch by patch: ``cut`` is its output tensor, split into ``grid`` patches."""

    cut: str
    grid: tuple[int, int]
    stage_nodes: int
    estimated_peak_bytes: int  # of the rewritten graph in its own order (ONNX level, pointwise fused)
    macs: int  # of the stage's convolutions, unpatched
    patched_macs: int  # the same, summed over the patches (overlaps computed again)

    @property
    def recompute(self) -> float:
        """Extra multiply-adds of the stage, as a share of the stage's own."""
        return self.patched_macs / self.macs - 1 if self.macs else 0.0


@dataclass
class _Graph:
    proto: onnx.ModelProto
    shapes: dict[str, list[int]]
    itemsize: dict[str, int]
    constants: set[str]  # initializers and Constant outputs
    constant_shapes: dict[str, list[int]]
    producer: dict[str, int]
    consumers: dict[str, list[int]]
    inputs: set[str]
    outputs: set[str]
    windows: dict[int, list[tuple[int, int, int, int]] | None] = field(default_factory=dict)

    def window(self, index: int) -> list[tuple[int, int, int, int]] | None:
        if index not in self.windows:
            self.windows[index] = _window(self.proto.graph.node[index], self)
        return self.windows[index]

    @staticmethod
    def of(proto: onnx.ModelProto) -> _Graph:
        shapes: dict[str, list[int]] = {}
        itemsize: dict[str, int] = {}
        inferred = onnx.shape_inference.infer_shapes(proto)
        for info in [*inferred.graph.input, *inferred.graph.value_info, *inferred.graph.output]:
            tensor = info.type.tensor_type
            if tensor.HasField("shape") and all(dim.HasField("dim_value") for dim in tensor.shape.dim):
                shapes[info.name] = [dim.dim_value for dim in tensor.shape.dim]
                itemsize[info.name] = np.dtype(helper.tensor_dtype_to_np_dtype(tensor.elem_type)).itemsize
        graph = proto.graph
        # Constants: initializers, Constant nodes and what is computed from them alone (a
        # quantized model's weights, dequantized).
        constant_shapes = {tensor.name: list(tensor.dims) for tensor in graph.initializer}
        for node in graph.node:
            if node.op_type == "Constant":
                value = _attribute(node, "value", None)
                constant_shapes[node.output[0]] = list(value.dims) if value is not None else []
            elif node.input and all(not name or name in constant_shapes for name in node.input):
                constant_shapes.update({name: shapes.get(name, []) for name in node.output})
        constants = set(constant_shapes)
        producer = {out: index for index, node in enumerate(graph.node) for out in node.output}
        consumers: dict[str, list[int]] = {}
        for index, node in enumerate(graph.node):
            for name in dict.fromkeys(node.input):
                consumers.setdefault(name, []).append(index)
        inputs = {info.name for info in graph.input} - constants
        return _Graph(proto, shapes, itemsize, constants, constant_shapes, producer, consumers, inputs, {info.name for info in graph.output})

    def bytes(self, name: str) -> int:
        return math.prod(self.shapes[name]) * self.itemsize[name]

    def is_map(self, name: str) -> bool:
        """A feature map the stage can split: a 4-D activation (NCHW) of known shape."""
        return name not in self.constants and len(self.shapes.get(name, ())) == 4


def _attribute(node: onnx.NodeProto, name: str, default):
    for attribute in node.attribute:
        if attribute.name == name:
            return helper.get_attribute_value(attribute)
    return default


def _window(node: onnx.NodeProto, graph: _Graph) -> list[tuple[int, int, int, int]] | None:
    """Per spatial axis (kernel, stride, dilation, pad at the start) of a convolution or pool, or
    None where the stage cannot split it (automatic padding, ceil mode, pool indices)."""
    if _attribute(node, "auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET") or _attribute(node, "ceil_mode", 0) or len(node.output) > 1:
        return None
    if node.op_type == "Conv":
        weight = graph.shapes.get(node.input[1]) or graph.constant_shapes.get(node.input[1])
        kernel = list(_attribute(node, "kernel_shape", weight[2:] if weight else []))
    else:
        kernel = list(_attribute(node, "kernel_shape", []))
    if len(kernel) != 2:
        return None
    strides = list(_attribute(node, "strides", [1, 1]))
    dilations = list(_attribute(node, "dilations", [1, 1]))
    pads = list(_attribute(node, "pads", [0, 0, 0, 0]))
    return [(kernel[axis], strides[axis], dilations[axis], pads[axis]) for axis in (0, 1)]


def _pixelwise_constant(graph: _Graph, node: onnx.NodeProto, name: str) -> bool:
    """Whether a constant input of a pointwise node is the same for every pixel."""
    if node.op_type in ("BatchNormalization", "Clip"):  # per channel, or scalars
        return True
    shape = graph.constant_shapes.get(name)
    if shape is None:
        return False
    if node.op_type in ("QuantizeLinear", "DequantizeLinear"):  # a scale per tensor or per channel
        return math.prod(shape) == 1 or int(_attribute(node, "axis", 1)) in (1, -3) and _attribute(node, "block_size", 0) == 0
    return all(dim == 1 for dim in shape[-2:]) if len(shape) >= 2 else shape in ([], [1])


def _patchable(graph: _Graph, index: int) -> bool:
    node = graph.proto.graph.node[index]
    if node.op_type == "Concat" and int(_attribute(node, "axis", 0)) not in (1, -3):
        return False
    if node.op_type in WINDOW_OPS:
        # Pads only ever fall on the map's own border, so a pool that leaves them out of its
        # average (count_include_pad=0) still does where it should.
        return graph.window(index) is not None and graph.is_map(node.input[0]) and all(name in graph.constants for name in node.input[1:] if name)
    if node.op_type not in POINTWISE or len(node.output) != 1 or not graph.is_map(node.output[0]):
        return False
    spatial = graph.shapes[node.output[0]][2:]
    for name in node.input:
        if not name:
            continue
        if name in graph.constants:
            if not _pixelwise_constant(graph, node, name):
                return False
        elif not graph.is_map(name) or graph.shapes[name][2:] != spatial:
            return False
    return True


def stage_of(graph: _Graph, cut: str) -> list[int] | None:
    """The nodes ``cut`` depends on, in file order, when they form a stage that can run in
    patches: all spatially local, fed only by model inputs and constants, and none of their
    tensors but ``cut`` read by anything else (or a model output)."""
    if cut not in graph.producer:
        return None
    stage: set[int] = set()
    pending = [graph.producer[cut]]
    while pending:
        index = pending.pop()
        if index in stage:
            continue
        if not _patchable(graph, index):
            return None
        stage.add(index)
        for name in graph.proto.graph.node[index].input:
            if name and name not in graph.constants and name not in graph.inputs:
                if name not in graph.producer:
                    return None
                pending.append(graph.producer[name])
    for index in stage:
        for name in graph.proto.graph.node[index].output:
            if name != cut and (name in graph.outputs or any(user not in stage for user in graph.consumers.get(name, []))):
                return None
    return sorted(stage)


def _needed(window: list[tuple[int, int, int, int]], region: Region, rows: int, columns: int) -> tuple[Region, list[int]]:
    """The input region (clamped to the map) a window op needs for output ``region``, and the
    pads [top, left, bottom, right] that stand for the rest (the map's own border)."""
    clamped, pads = [], [0, 0, 0, 0]
    for axis, (start, stop, size) in enumerate(((region[0], region[1], rows), (region[2], region[3], columns))):
        kernel, stride, dilation, pad = window[axis]
        first = start * stride - pad
        last = (stop - 1) * stride - pad + (kernel - 1) * dilation + 1
        clamped += [max(first, 0), min(last, size)]
        pads[axis], pads[axis + 2] = max(0, -first), max(0, last - size)
    return (clamped[0], clamped[1], clamped[2], clamped[3]), pads


def _union(a: Region | None, b: Region) -> Region:
    return b if a is None else (min(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), max(a[3], b[3]))


def _bounds(size: int, parts: int) -> list[tuple[int, int]]:
    edges = [round(part * size / parts) for part in range(parts + 1)]
    return list(zip(edges, edges[1:], strict=False))


def _patch_regions(graph: _Graph, stage: list[int], cut: str, region: Region) -> tuple[dict[str, Region], dict[int, dict[str, tuple[Region, list[int]]]]]:
    """For one patch of ``cut``: the region of every stage tensor (and model input) computed, and
    per node what it needs of each activation input (with the pads of a window op)."""
    nodes = graph.proto.graph.node
    regions: dict[str, Region] = {cut: region}
    needs: dict[int, dict[str, tuple[Region, list[int]]]] = {}
    for index in reversed(stage):
        node = nodes[index]
        out = regions[node.output[0]]
        needs[index] = {}
        for name in node.input:
            if not name or name in graph.constants:
                continue
            if node.op_type in WINDOW_OPS and name == node.input[0]:
                rows, columns = graph.shapes[name][2:]
                window = graph.window(index)
                assert window is not None
                need = _needed(window, out, rows, columns)
            else:
                need = (out, [0, 0, 0, 0])
            needs[index][name] = need
            regions[name] = _union(regions.get(name), need[0])
    return regions, needs


def _macs(graph: _Graph, node: onnx.NodeProto, region: Region) -> int:
    if node.op_type != "Conv":
        return 0
    weight = graph.constant_shapes.get(node.input[1]) or graph.shapes[node.input[1]]
    return (region[1] - region[0]) * (region[3] - region[2]) * weight[0] * math.prod(weight[1:])


@dataclass
class _Rewritten:
    nodes: list[onnx.NodeProto]
    initializers: list[onnx.TensorProto]
    macs: int
    patched_macs: int
    shapes: dict[str, list[int]]  # of every activation of the rewritten graph
    itemsize: dict[str, int]

    def model(self, proto: onnx.ModelProto) -> onnx.ModelProto:
        """``proto`` rewritten."""
        result = onnx.ModelProto()
        result.CopyFrom(proto)
        del result.graph.node[:]
        result.graph.node.extend(self.nodes)
        result.graph.initializer.extend(self.initializers)
        kept = [info for info in result.graph.value_info if info.name in self.shapes]
        del result.graph.value_info[:]
        result.graph.value_info.extend(kept)
        return result


def rewrite(proto: onnx.ModelProto, cut: str, grid: tuple[int, int], graph: _Graph | None = None) -> _Rewritten:
    """``proto`` with the stage that computes ``cut`` run in ``grid`` patches, with the stage's
    multiply-adds unpatched and patched. Raises ValueError when ``cut`` ends no such stage."""
    graph = graph or _Graph.of(proto)
    stage = stage_of(graph, cut)
    if stage is None:
        raise ValueError(f"{cut!r} does not end a stage that can run in patches")
    nodes = proto.graph.node
    rows, columns = graph.shapes[cut][2:]
    new_nodes: list[onnx.NodeProto] = []
    sliced_names: set[str] = set()
    initializers: list[onnx.TensorProto] = []
    macs = sum(_macs(graph, nodes[index], (0, graph.shapes[nodes[index].output[0]][2], 0, graph.shapes[nodes[index].output[0]][3])) for index in stage)
    patched_macs = 0
    shapes, itemsize = dict(graph.shapes), dict(graph.itemsize)

    def made(name: str, like: str, region: tuple[int, int, int, int]) -> None:
        shapes[name] = [*graph.shapes[like][:2], region[1] - region[0], region[3] - region[2]]
        itemsize[name] = graph.itemsize[like]

    row_parts = []
    for row, (r0, r1) in enumerate(_bounds(rows, grid[0])):
        column_parts = []
        for column, (c0, c1) in enumerate(_bounds(columns, grid[1])):
            suffix = f"__patch{row}_{column}"
            regions, needs = _patch_regions(graph, stage, cut, (r0, r1, c0, c1))
            renamed: dict[str, str] = {}
            for index in stage:
                node = nodes[index]
                inputs = []
                for name in node.input:
                    if name not in needs[index]:
                        inputs.append(name)
                        continue
                    want, _ = needs[index][name]
                    have = regions[name] if name not in graph.inputs else (0, graph.shapes[name][2], 0, graph.shapes[name][3])
                    source = renamed.get(name, name)
                    if want != have:
                        sliced = f"{source}__rows{want[0]}_{want[1]}_cols{want[2]}_{want[3]}"
                        if sliced not in sliced_names:
                            sliced_names.add(sliced)
                            starts = f"{sliced}__starts"
                            ends = f"{sliced}__ends"
                            axes = f"{sliced}__axes"
                            initializers += [
                                numpy_helper.from_array(np.array([want[0] - have[0], want[2] - have[2]], np.int64), starts),
                                numpy_helper.from_array(np.array([want[1] - have[0], want[3] - have[2]], np.int64), ends),
                                numpy_helper.from_array(np.array([2, 3], np.int64), axes),
                            ]
                            new_nodes.append(helper.make_node("Slice", [source, starts, ends, axes], [sliced], name=f"{sliced}__slice"))
                            made(sliced, name, want)
                        source = sliced
                    inputs.append(source)
                copy = onnx.NodeProto()
                copy.CopyFrom(node)
                copy.name = f"{node.name or f'{node.op_type}_{index}'}{suffix}"
                del copy.input[:]
                copy.input.extend(inputs)
                out = node.output[0]
                renamed[out] = f"{out}{suffix}"
                del copy.output[:]
                copy.output.append(renamed[out])
                made(renamed[out], out, regions[out])
                if node.op_type in WINDOW_OPS:
                    _, pads = needs[index][node.input[0]]
                    kept = [attribute for attribute in copy.attribute if attribute.name != "pads"]
                    del copy.attribute[:]
                    copy.attribute.extend([*kept, helper.make_attribute("pads", pads)])
                new_nodes.append(copy)
                patched_macs += _macs(graph, node, regions[out])
            column_parts.append(renamed[cut])
        row_name = f"{cut}__patchrow{row}"
        new_nodes.append(helper.make_node("Concat", column_parts, [row_name], axis=3, name=f"{row_name}__concat"))
        made(row_name, cut, (r0, r1, 0, columns))
        row_parts.append(row_name)
    new_nodes.append(helper.make_node("Concat", row_parts, [cut], axis=2, name=f"{cut}__patches_concat"))
    in_stage = set(stage)
    for index in stage:  # the stage's own tensors are gone
        if nodes[index].output[0] != cut:
            del shapes[nodes[index].output[0]]
    rest = [node for index, node in enumerate(nodes) if index not in in_stage]
    # What computes constants first: the stage may read them, and it now runs first.
    made_constant = [all(name in graph.constants for name in node.output) for node in rest]
    ordered = [
        *(node for node, constant in zip(rest, made_constant, strict=True) if constant),
        *new_nodes,
        *(node for node, constant in zip(rest, made_constant, strict=True) if not constant),
    ]
    return _Rewritten(ordered, initializers, macs, patched_macs, shapes, itemsize)


def estimated_peak(nodes: Sequence[onnx.NodeProto], graph: _Graph, shapes: dict[str, list[int]], itemsize: dict[str, int]) -> int:
    """The activation peak of ``nodes`` (the graph of ``graph``'s model, or a rewrite of it whose
    tensors have ``shapes``) in their own order, model inputs included; a pointwise op that is the
    only reader of its input counts as fused into that input's producer (no buffer of its own)."""
    readers: dict[str, int] = {}
    for node in nodes:
        for name in dict.fromkeys(node.input):
            readers[name] = readers.get(name, 0) + 1
    index_of: dict[str, int] = {}
    plan: list[Node] = []
    for node in nodes:
        outputs = [name for name in node.output if name in shapes and name not in graph.constants]
        if not outputs:
            continue
        inputs = tuple(dict.fromkeys(index_of[name] for name in node.input if name in index_of))
        size = sum(math.prod(shapes[name]) * itemsize[name] for name in outputs)
        fused = node.op_type in POINTWISE and node.op_type != "Concat" and len(inputs) == 1 and node.input[0] in index_of and readers[node.input[0]] == 1
        output = any(name in graph.outputs for name in outputs)
        plan.append(Node(size=0 if fused else size, inputs=inputs, alias_of=inputs[0] if fused else None, output=output))
        for name in outputs:
            index_of[name] = len(plan) - 1
    resident = sum(math.prod(shapes[name]) * itemsize[name] for name in graph.inputs if name in shapes)
    return peak_in_order(plan, resident)


def _candidates(graph: _Graph) -> Iterator[tuple[str, list[int]]]:
    """Cut tensors whose stage includes the model's largest activation and is smaller than it."""
    activations = [name for name in graph.producer if graph.is_map(name)]
    if not activations:
        return
    largest = max(activations, key=graph.bytes)
    for name in activations:
        if graph.bytes(name) >= graph.bytes(largest):
            continue
        stage = stage_of(graph, name)
        if stage is not None and graph.producer[largest] in stage:
            yield name, stage


def plan(proto: onnx.ModelProto, limit_bytes: int) -> tuple[onnx.ModelProto, PatchPlan] | None:
    """The patched model and its plan (see the module's docstring), or None when no stage of
    ``proto`` can run in patches or patches lower no estimated peak."""
    graph = _Graph.of(proto)
    baseline = estimated_peak(proto.graph.node, graph, graph.shapes, graph.itemsize)
    best: tuple[tuple, _Rewritten, PatchPlan] | None = None
    budget = SEARCH_NODES
    for cut, stage in _candidates(graph):
        rows, columns = graph.shapes[cut][2:]
        for parts in GRIDS:
            if parts > min(rows, columns):
                continue
            budget -= len(stage) * parts * parts
            if budget < 0:
                return None if best is None else (best[1].model(proto), best[2])
            patched = rewrite(proto, cut, (parts, parts), graph)
            peak = estimated_peak(patched.nodes, graph, patched.shapes, patched.itemsize)
            candidate = PatchPlan(cut, (parts, parts), len(stage), peak, patched.macs, patched.patched_macs)
            key = (0, candidate.recompute, peak) if peak <= limit_bytes else (1, peak, candidate.recompute)
            if peak < baseline and (best is None or key < best[0]):
                best = (key, patched, candidate)
            if peak <= limit_bytes:
                break  # finer grids of this cut only compute more
    return None if best is None else (best[1].model(proto), best[2])
