"""Scan and Loop, unrolled over the length the model is compiled for (TVM's ONNX frontend has
neither). A Loop unrolls when its trip count is a constant and its condition stays true (the
body passes it through or makes it a constant true); any other Loop is not lowered.

Each step converts the body graph again with the frontend's own converters (guarded like every
other node, edgesdk.compile.onnx_fallback): the body's state inputs are the previous step's
state outputs, its scan inputs are slices of the scan inputs along their axes (reversed where
their direction says), and each scan output is the steps' values stacked along its axis. A body
reads the scope around it as the standard allows. Imports TVM: only the compile worker loads it.
"""

from __future__ import annotations

import numpy as np
import onnx
import tvm
from onnx import numpy_helper
from tvm import relax
from tvm.relax.frontend.onnx import onnx_frontend as frontend

from edgesdk.compile.relax_values import Expr, shape_of


def run_graph(bb, graph: onnx.GraphProto, scope: dict, opset: int, params) -> list[Expr]:
    """The values of ``graph``'s outputs, its nodes converted into ``bb`` with the names in
    ``scope`` (its inputs and the values around it) bound."""
    scope = dict(scope)
    for tensor in graph.initializer:
        scope[tensor.name] = relax.const(numpy_helper.to_array(tensor))
    table = frontend._get_convert_map()
    for node in graph.node:
        if node.op_type not in table:
            raise NotImplementedError(f"TVM's ONNX frontend has no converter for {node.op_type}")
        attrs = frontend.ONNXGraphImporter._parse_attr(None, node.attribute)  # reads no state
        attrs["tvm_custom"] = {"name": node.name, "num_outputs": len(node.output)}
        inputs = frontend.onnx_input([scope[name] if name else None for name in node.input])
        result = table[node.op_type].get_converter(opset)(bb, inputs, attrs, [scope, params])
        if not isinstance(result, relax.Tuple):
            result = bb.normalize(result)
            if isinstance(result.ty, relax.TupleType):
                result = relax.Tuple([bb.emit(relax.TupleGetItem(result, index)) for index in range(len(result.ty.fields))])
        values = list(result.fields) if isinstance(result, relax.Tuple) and len(node.output) > 1 else [result]
        for name, value in zip(node.output, values, strict=False):
            if name:
                scope[name] = bb.emit(value) if not isinstance(value, relax.Var) else value
    return [scope[value.name] for value in graph.output]


class Scan(frontend.OnnxOpConverter):
    @classmethod
    def get_converter(cls, opset):
        if opset < 9:
            raise NotImplementedError("Scan before opset 9 (with a batch axis)")

        def convert(bb, inputs, attr, graph):
            scope, params = graph
            body: onnx.GraphProto = attr["body"]
            scanned = attr["num_scan_inputs"]
            given = list(inputs)
            count = len(given) - scanned
            states, sequences = given[:count], given[count:]
            in_axes = list(attr.get("scan_input_axes", [0] * scanned))
            in_reversed = list(attr.get("scan_input_directions", [0] * scanned))
            outputs = len(body.output) - count
            out_axes = list(attr.get("scan_output_axes", [0] * outputs))
            out_reversed = list(attr.get("scan_output_directions", [0] * outputs))
            ranks = [len(shape_of(bb, sequence)) for sequence in sequences]
            in_axes = [axis % rank for axis, rank in zip(in_axes, ranks, strict=True)]
            length = shape_of(bb, sequences[0])[in_axes[0]]
            steps: list[list[Expr]] = [[] for _ in range(outputs)]
            for step in range(length):
                bound = dict(scope)
                bound.update({value.name: state for value, state in zip(body.input[:count], states, strict=True)})
                for value, sequence, axis, backwards in zip(body.input[count:], sequences, in_axes, in_reversed, strict=True):
                    index = length - 1 - step if backwards else step
                    bound[value.name] = bb.emit(relax.op.squeeze(relax.op.strided_slice(sequence, [axis], [index], [index + 1]), [axis]))
                produced = run_graph(bb, body, bound, opset, params)
                states = produced[:count]
                for number, value in enumerate(produced[count:]):
                    steps[number].append(value)
            stacked = []
            for values, axis, backwards in zip(steps, out_axes, out_reversed, strict=True):
                rank = len(shape_of(bb, values[0])) + 1
                stacked.append(bb.emit(relax.op.stack(values[::-1] if backwards else values, axis % rank)))
            results = [*states, *stacked]
            return results[0] if len(results) == 1 else relax.Tuple(results)

        return convert


def _passes_condition_through(body: onnx.GraphProto) -> bool:
    """Whether the body's condition output is its condition input, or the constant true."""
    condition_in, condition_out = body.input[1].name, body.output[0].name
    if condition_out == condition_in:
        return True
    for node in body.node:
        if condition_out in node.output:
            if node.op_type == "Identity":
                return node.input[0] == condition_in
            if node.op_type == "Constant":
                value = next((attribute.t for attribute in node.attribute if attribute.name == "value"), None)
                return value is not None and bool(numpy_helper.to_array(value).all())
            return False
    return False


class Loop(frontend.OnnxOpConverter):
    @classmethod
    def get_converter(cls, opset):
        def convert(bb, inputs, attr, graph):
            scope, params = graph
            body: onnx.GraphProto = attr["body"]
            given = list(inputs)
            trips, condition, carried = given[0], given[1], given[2:]
            found = frontend.get_constant(trips, graph) if trips is not None else None
            if not isinstance(found, tvm.ir.GenericConst):
                raise NotImplementedError("a Loop whose trip count is not a constant")
            if condition is not None:
                start = frontend.get_constant(condition, graph)
                if not isinstance(start, tvm.ir.GenericConst) or not bool(start.value.numpy().all()):
                    raise NotImplementedError("a Loop whose condition is not a constant true")
            if not _passes_condition_through(body):
                raise NotImplementedError("a Loop whose body computes its condition")
            count = len(carried)
            steps: list[list[Expr]] = [[] for _ in range(len(body.output) - 1 - count)]
            for step in range(int(found.value.numpy().reshape(-1)[0])):
                bound = dict(scope)
                bound[body.input[0].name] = relax.const(np.asarray(step, "int64"))
                bound[body.input[1].name] = relax.const(np.asarray(True))
                bound.update({value.name: state for value, state in zip(body.input[2:], carried, strict=True)})
                produced = run_graph(bb, body, bound, opset, params)
                carried = produced[1 : 1 + count]
                for number, value in enumerate(produced[1 + count :]):
                    steps[number].append(value)
            if any(not values for values in steps):
                raise NotImplementedError("a Loop of no iterations with scan outputs")
            results = [*carried, *(bb.emit(relax.op.stack(values, 0)) for values in steps)]
            return results[0] if len(results) == 1 else relax.Tuple(results)

        return convert
