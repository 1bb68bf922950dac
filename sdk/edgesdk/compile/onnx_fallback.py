"""Every converter of TVM's ONNX frontend, guarded (edgesdk.compile.lowering.import_onnx):

- A converter whose result has a shape TVM left symbolic, where ONNX's shape inference knows it
  (an Expand or Resize of a computed shape), gets that static shape (a checked ``match_cast``), so
  the kernels after it compile.
- A node TVM cannot convert (no converter, an attribute it does not implement, a shape it cannot
  follow) is either one error naming the operator and the reason (``Unsupported``), or, where the
  device allows it, a call of onnxruntime on that node alone (edgesdk.compile.onnxruntime_segments).

This module imports TVM: only the compile worker loads it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import helper
from tvm import relax, tirx

from edgesdk.compile.onnxruntime_segments import FUNCTION_PREFIX, Segment, Unsupported
from edgesdk.frontend.model import ML_DOMAIN
from edgesdk.frontend.shape_folding import subgraphs

Expr = Any  # a relax.Expr: TVM ships no type information


def _attribute(attrs: dict, name: str, default: Any = None) -> Any:
    value = attrs.get(name, default)
    return value.decode() if isinstance(value, bytes) else value


def _resize_gap(attrs: dict, dtypes: list[str | None], shape: list[int] | None) -> str | None:
    if _attribute(attrs, "antialias", 0):
        return "TVM's Resize ignores antialias"
    mode = _attribute(attrs, "coordinate_transformation_mode", "half_pixel")
    return f"TVM's Resize has no coordinate_transformation_mode {mode}" if mode == "half_pixel_symmetric" else None


# What TVM 0.27's converters get wrong without failing: an attribute ignored, or a form that breaks
# only when compiled. Found by the ONNX node suite (benchmarks/conformance.py), each read in the
# converter's source. A gap makes the node fail its conversion here, where it is one node's.
def _extreme_gap(attrs: dict, dtypes: list[str | None], shape: list[int] | None) -> str | None:
    return "over an empty set TVM gives the dtype's finite extreme, not an infinity" if shape is not None and 0 in shape else None


GAPS: dict[str, Callable[[dict, list[str | None], list[int] | None], str | None]] = {
    "Resize": _resize_gap,
    "ConvTranspose": lambda attrs, dtypes, shape: (
        "TVM's ConvTranspose ignores output_shape" if "output_shape" in attrs and _attribute(attrs, "auto_pad", "NOTSET") == "NOTSET" else None
    ),
    # Their output's size depends on the values: TVM builds them with shapes that only dynamic code takes.
    "Compress": lambda attrs, dtypes, shape: "its output size depends on the values, which TVM compiles only as dynamic code",
    "NonMaxSuppression": lambda attrs, dtypes, shape: "its output size depends on the values, which TVM compiles only as dynamic code",
    "ReduceMax": _extreme_gap,
    "ReduceMin": _extreme_gap,
}


def _gap(op: str, bb, inputs: list, attrs: dict) -> str | None:
    check = GAPS.get(op)
    if check is None:
        return None
    types = [bb.normalize(value).ty if isinstance(value, relax.Expr) else None for value in inputs]
    dtypes = [str(ty.dtype) if isinstance(ty, relax.TensorType) else None for ty in types]
    return check(attrs, dtypes, _static(types[0]) if types else None)


class Diverging(Exception):
    """A node TVM converts, whose result differs from onnxruntime's (edgesdk.compile.divergence)."""


def _one_line(error: BaseException) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return (lines[-1] if lines else type(error).__name__)[:300]


def _outer_reads(node: onnx.NodeProto) -> list[str]:
    """The names a node's branches or body read from the scope around the node."""
    names: list[str] = []
    for graph in subgraphs(node):
        defined = {value.name for value in graph.input} | {tensor.name for tensor in graph.initializer}
        for inner in graph.node:
            for name in [*inner.input, *_outer_reads(inner)]:
                if name and name not in defined and name not in names:
                    names.append(name)
            defined |= set(inner.output)
    return names


def _name_nodes(graph: onnx.GraphProto, used: set[str]) -> None:
    """Give every node (in subgraphs too) a unique name: the frontend tells a converter only that."""
    for index, node in enumerate(graph.node):
        if not node.name or node.name in used:
            base = node.name or f"{node.op_type}_{index}"
            name, suffix = base, 0
            while name in used:
                suffix += 1
                name = f"{base}_{suffix}"
            node.name = name
        used.add(node.name)
        for inner in subgraphs(node):
            _name_nodes(inner, used)


def _value_types(graph: onnx.GraphProto, types: dict[str, tuple[str, list[int] | None]]) -> None:
    """Each value's (numpy dtype, static shape or None) that shape inference found, in subgraphs too."""
    for value in [*graph.input, *graph.value_info, *graph.output]:
        tensor_type = value.type.tensor_type if value.type.HasField("tensor_type") else None
        if tensor_type is None or not tensor_type.elem_type:
            continue
        dims = tensor_type.shape.dim if tensor_type.HasField("shape") else None
        static = dims is not None and all(dim.HasField("dim_value") for dim in dims)
        types[value.name] = (np.dtype(helper.tensor_dtype_to_np_dtype(tensor_type.elem_type)).name, [dim.dim_value for dim in dims] if static else None)  # type: ignore[union-attr]
    for tensor in graph.initializer:
        types[tensor.name] = (np.dtype(helper.tensor_dtype_to_np_dtype(tensor.data_type)).name, list(tensor.dims))
    for node in graph.node:
        for inner in subgraphs(node):
            _value_types(inner, types)


def _static(ty) -> list[int] | None:
    if not isinstance(ty, relax.TensorType) or ty.shape is None:
        return None
    dims = list(ty.shape.values) if hasattr(ty.shape, "values") else None
    if dims is None or not all(isinstance(dim, tirx.IntImm) for dim in dims):
        return None
    return [int(dim) for dim in dims]


class NodeGuard:
    """Guards the conversion of ``proto``'s nodes (``table`` wraps the frontend's converter map).

    With a ``directory``, a node TVM cannot convert runs on onnxruntime: its one-node model is
    written there and listed in ``segments``; without one, it raises ``Unsupported``. So do the
    ``diverging`` nodes (keyed by their first output), whose TVM results differ from onnxruntime's.
    """

    def __init__(
        self,
        proto: onnx.ModelProto,
        directory: Path | None,
        examples: Mapping[str, np.ndarray] | None = None,
        diverging: Mapping[str, str] | None = None,
    ):
        self.proto = onnx.ModelProto()
        self.proto.CopyFrom(proto)
        _name_nodes(self.proto.graph, set())
        self.nodes: dict[str, onnx.NodeProto] = {}
        self._index(self.proto.graph)
        self.types: dict[str, tuple[str, list[int] | None]] = {}
        try:
            _value_types(onnx.shape_inference.infer_shapes(self.proto, data_prop=True).graph, self.types)
        except Exception:  # noqa: BLE001 - without inferred types, only the fallback is lost
            self.types = {}
        self.directory = directory
        self.diverging = dict(diverging or {}) if directory is not None else {}
        self.segments: list[Segment] = []
        self.observed: dict[str, tuple[str, list[int]]] = {}  # shapes onnxruntime measured (_observe)
        unknown = [name for node in self.proto.graph.node for name in node.output if name and (self.types.get(name) or ("", None))[1] is None]
        if directory is not None and unknown:
            self._observe(unknown, examples)

    def _observe(self, names: list[str], examples: Mapping[str, np.ndarray] | None) -> None:
        """The shapes shape inference left unknown (a Loop's, a Pad's of computed pads), as
        onnxruntime computes them on ``examples`` (the deploy's inputs; random ones without): the
        model is compiled for them, and an onnxruntime node whose output shape then changes with
        the values of its inputs fails at run time, saying so."""
        import onnxruntime

        probe = onnx.ModelProto()
        probe.CopyFrom(self.proto)
        probe.graph.output.extend(helper.make_empty_tensor_value_info(name) for name in names)
        rng = np.random.default_rng(0)
        feeds = dict(examples or {})
        for value in probe.graph.input:
            known = self.types.get(value.name)
            if value.name not in feeds and known is not None and known[1] is not None:
                feeds[value.name] = rng.standard_normal(known[1]).astype(known[0])
        try:
            session = onnxruntime.InferenceSession(probe.SerializeToString(), providers=["CPUExecutionProvider"])
            results = session.run(names, feeds)
        except Exception:  # noqa: BLE001 - then those shapes stay unknown, and their nodes unsupported
            return
        for name, result in zip(names, results, strict=True):
            self.observed[name] = (np.asarray(result).dtype.name, list(np.shape(result)))

    def _index(self, graph: onnx.GraphProto) -> None:
        for node in graph.node:
            self.nodes[node.name] = node
            for inner in subgraphs(node):
                self._index(inner)

    def _type(self, name: str) -> tuple[str, list[int] | None] | None:
        """A value's (dtype, shape) from shape inference, or else as onnxruntime measured it."""
        known = self.types.get(name)
        return known if known is not None and known[1] is not None else self.observed.get(name, known)

    def table(self, converters: dict) -> dict:
        return _GuardedTable(converters, self)

    # -- after a converter ----------------------------------------------------------------

    def settle(self, bb, node: onnx.NodeProto, result: Expr) -> Expr:
        """``result`` with the static shapes ONNX knows where TVM left them symbolic."""
        if isinstance(result, relax.Tuple):
            if len(result.fields) != len(node.output):
                return result
            return relax.Tuple([self._with_static_shape(bb, field, name) for field, name in zip(result.fields, node.output, strict=True)])
        if len(node.output) == 1 and isinstance(result, relax.Expr):
            return self._with_static_shape(bb, result, node.output[0])
        return result

    def _with_static_shape(self, bb, expr: Expr, name: str) -> Expr:
        ty = bb.normalize(expr).ty
        if not isinstance(ty, relax.TensorType) or _static(ty) is not None:
            return expr
        known = self.types.get(name)
        if known is None or known[1] is None:
            if name in self.observed:
                # Only measured, so it may change with the values: onnxruntime checks it at run time.
                raise NotImplementedError(f"TVM's result '{name}' has a shape known only at run time")
            return expr
        if str(ty.dtype) != known[0] or ty.ndim not in (-1, len(known[1])):
            return expr
        return bb.match_cast(bb.emit(expr), relax.TensorType(known[1], known[0]))

    # -- instead of a converter -----------------------------------------------------------

    def replace(self, bb, node: onnx.NodeProto, inputs: list, graph: list, error: BaseException) -> Expr:
        """The node as a call of onnxruntime, or ``Unsupported`` when this device cannot."""
        reason = _one_line(error)
        if self.directory is None:
            raise Unsupported(node.op_type, reason) from error
        outputs = [name for name in node.output if name]
        known = [self._type(name) for name in outputs]
        if any(value is None or value[1] is None for value in known):
            raise Unsupported(node.op_type, f"{reason}; its output shape is known only at run time, so onnxruntime cannot take it either") from error
        names, args = self._arguments(bb, node, inputs, graph[0])
        model = self._segment_model(node, names, args, outputs, known)
        data = model.SerializeToString(deterministic=True)
        digest = hashlib.sha256(data).hexdigest()[:20]
        self.directory.mkdir(parents=True, exist_ok=True)
        (self.directory / f"{digest}.onnx").write_bytes(data)
        function = FUNCTION_PREFIX + digest
        if all(segment.function != function for segment in self.segments):  # a Scan body's node, once per step
            why = reason if isinstance(error, Diverging) else f"TVM cannot lower it: {reason}"
            self.segments.append(Segment(function=function, file=f"{digest}.onnx", op=node.op_type, node=node.name, reason=why))
        types = [relax.TensorType(shape, dtype) for dtype, shape in known]  # type: ignore[misc]
        call = bb.emit(relax.call_dps_packed(function, relax.Tuple(args), types if len(types) > 1 else types[0]))
        if len(node.output) == 1:
            return call
        produced = iter(range(len(outputs)))
        # An output the node skips ("") still takes its place in the frontend's numbering.
        return relax.Tuple([relax.TupleGetItem(call, next(produced)) if name else relax.const(0) for name in node.output])

    def _arguments(self, bb, node: onnx.NodeProto, inputs: list, values: dict) -> tuple[list[str], list[Expr]]:
        """The node's inputs and the outer values its subgraphs read, as tensors, by name."""
        names: list[str] = []
        args: list[Expr] = []
        found = [(name, expr) for name, expr in zip(node.input, inputs, strict=False) if name]
        found += [(name, values[name]) for name in _outer_reads(node) if name in values]
        for name, expr in found:
            if name in names or expr is None:
                continue
            if isinstance(expr, relax.ShapeExpr) or isinstance(bb.normalize(expr).ty, relax.ShapeType):
                expr = relax.op.shape_to_tensor(expr)
            expr = bb.normalize(expr)
            if not isinstance(expr.ty, relax.TensorType):
                raise Unsupported(node.op_type, f"input '{name}' is not a tensor in TVM")
            expected = self.types.get(name)
            if expected is not None and str(expr.ty.dtype) != expected[0]:
                expr = bb.normalize(relax.op.astype(expr, expected[0]))
            names.append(name)
            args.append(expr)
        return names, args

    def _segment_model(self, node: onnx.NodeProto, names: list[str], args: list[Expr], outputs: list[str], types: list) -> onnx.ModelProto:
        def info(name: str, dtype: str, shape) -> onnx.ValueInfoProto:
            return helper.make_tensor_value_info(name, helper.np_dtype_to_tensor_dtype(np.dtype(dtype)), shape)

        graph_inputs = []
        for name, expr in zip(names, args, strict=True):
            shape = _static(expr.ty)
            if shape is None:
                raise Unsupported(node.op_type, f"input '{name}' has a shape TVM knows only at run time")
            graph_inputs.append(info(name, str(expr.ty.dtype), shape))
        graph_outputs = [info(name, dtype, shape) for name, (dtype, shape) in zip(outputs, types, strict=True)]
        graph = helper.make_graph([node], f"{node.op_type}_segment", graph_inputs, graph_outputs)
        return helper.make_model(graph, opset_imports=self.proto.opset_import, functions=self.proto.functions, ir_version=self.proto.ir_version)


def _checked(bb, node: onnx.NodeProto, result: Expr) -> Expr:
    """``result`` normalized (which is where the frontend meets many of its errors: inside the
    guard, they are this node's), with as many outputs as the node has."""
    if not isinstance(result, relax.Expr):
        return result
    result = bb.normalize(result)
    count = len(result.fields) if isinstance(result, relax.Tuple) else len(result.ty.fields) if isinstance(result.ty, relax.TupleType) else 1
    if len(node.output) > 1 and count < len(node.output):
        raise NotImplementedError(f"TVM's converter gives {count} of its {len(node.output)} outputs")
    return result


class _GuardedTable(dict):
    """The frontend's converter map, where every operator has a (guarded) converter."""

    def __init__(self, converters: dict, guard: NodeGuard):
        super().__init__(converters)
        self.guard = guard

    def __contains__(self, op: object) -> bool:
        return True

    def __getitem__(self, op: str):
        return _Guarded(op, dict.get(self, op), self.guard)


class _Guarded:
    def __init__(self, op: str, converter, guard: NodeGuard):
        self.op, self.converter, self.guard = op, converter, guard

    def get_converter(self, opset: int):
        def convert(bb, inputs, attrs, graph):
            node = self.guard.nodes.get(attrs.get("tvm_custom", {}).get("name", ""))
            try:
                if node is not None and node.output and node.output[0] in self.guard.diverging:
                    raise Diverging(self.guard.diverging[node.output[0]])
                if node is not None and node.domain == ML_DOMAIN:  # TVM would take it for a standard op of that name
                    raise NotImplementedError(f"TVM's ONNX frontend has no converter for the {ML_DOMAIN} domain")
                if self.converter is None:
                    raise NotImplementedError(f"TVM's ONNX frontend has no converter for {self.op}")
                gap = _gap(self.op, bb, list(inputs), attrs)
                if gap is not None:
                    raise NotImplementedError(gap)
                result = self.converter.get_converter(opset)(bb, inputs, attrs, graph)
                if node is not None:
                    result = self.guard.settle(bb, node, _checked(bb, node, result))
            except Unsupported:
                raise
            except Exception as error:  # noqa: BLE001 - any converter failure is this node's
                if node is None:
                    raise
                return self.guard.replace(bb, node, list(inputs), graph, error)
            return result

        return convert
