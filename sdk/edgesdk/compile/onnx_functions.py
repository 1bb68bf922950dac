"""Operators expanded into their ONNX function bodies before TVM imports the model.

Many ONNX operators are defined by the standard itself as a function of simpler operators (Celu,
Swish, HardSwish, LayerNormalization, Attention and RotaryEmbedding since opset 23, ...). Where
TVM's frontend has no converter for such an operator (or one for another version of it, see
``EXPAND``), the node is replaced by the body the standard gives for the model's opset, with its
attributes and input types bound, and inlined, so that every operator TVM sees is one it converts.
The result computes what the standard says the operator computes; onnxruntime runs the original.
"""

from __future__ import annotations

from collections.abc import Collection

import onnx
import onnx.inliner
from onnx import defs, helper

# Operators TVM converts, but not as the newer standard defines them: opset-23 Attention is not
# the com.microsoft Attention (num_heads attribute) TVM's converter reads.
EXPAND = {"Attention": 23}
# Operators whose TVM converter computes the first output only: expanded when a node uses more.
FIRST_OUTPUT_ONLY = {"LayerNormalization"}
DOMAINS = ("", "ai.onnx", "ai.onnx.preview")
LOCAL_DOMAIN = "edgesdk.expanded"
MAX_ROUNDS = 8  # a body may use operators that have bodies themselves


def _types(proto: onnx.ModelProto) -> dict[str, onnx.TypeProto]:
    graph = proto.graph
    types = {value.name: value.type for value in [*graph.input, *graph.value_info, *graph.output]}
    for tensor in graph.initializer:
        types.setdefault(tensor.name, helper.make_tensor_type_proto(tensor.data_type, list(tensor.dims)))
    return types


def _body(node: onnx.NodeProto, opset: int, types: dict[str, onnx.TypeProto]) -> onnx.FunctionProto | None:
    """The standard's function body of ``node`` at ``opset``, or None when it has none."""
    try:
        schema = defs.get_schema(node.op_type, opset, node.domain)
    except defs.SchemaError:
        return None
    plain = [version for version in schema.function_opset_versions if version <= opset]  # type: ignore[attr-defined]
    if plain:
        return onnx.FunctionProto.FromString(schema.get_function_with_opset_version(max(plain)))  # type: ignore[attr-defined]
    dependent = [version for version in schema.context_dependent_function_opset_versions if version <= opset]  # type: ignore[attr-defined]
    if not dependent or any(name and name not in types for name in node.input):
        return None
    input_types = [types[name].SerializeToString() if name else onnx.TypeProto().SerializeToString() for name in node.input]
    try:
        body = schema.get_context_dependent_function_with_opset_version(max(dependent), node.SerializeToString(), input_types)  # type: ignore[attr-defined]
    except Exception:  # noqa: BLE001 - onnx refuses a context it cannot build for: leave the node to the frontend
        return None
    return onnx.FunctionProto.FromString(body) if body else None


def expand_functions(proto: onnx.ModelProto, supported: set[str], kept: Collection[str] = ()) -> tuple[onnx.ModelProto, list[str]]:
    """``proto`` with every node TVM's frontend does not convert (not in ``supported``, or in
    ``EXPAND`` from that opset on) replaced by its function body, except those whose first output
    is in ``kept`` (they run on onnxruntime whole); the operators expanded."""
    expanded: list[str] = []
    for _ in range(MAX_ROUNDS):
        opsets = {entry.domain or "": entry.version for entry in proto.opset_import}
        types = _types(proto)
        functions = []
        for number, node in enumerate(proto.graph.node):
            domain = "" if node.domain == "ai.onnx" else node.domain
            opset = opsets.get(domain)
            wanted = (
                node.op_type not in supported
                or (opset is not None and opset >= EXPAND.get(node.op_type, 10**6))
                or (node.op_type in FIRST_OUTPUT_ONLY and any(node.output[1:]))
            )
            if domain not in DOMAINS or opset is None or not wanted or node.output[:1] and node.output[0] in kept:
                continue
            body = _body(node, opset, types)
            if body is None:
                continue
            # A local function of our own domain, called by the node; the inliner then expands it.
            body.name, body.domain = f"{node.op_type}_{number}", LOCAL_DOMAIN
            if not any(entry.domain == domain for entry in body.opset_import):
                body.opset_import.append(helper.make_opsetid(domain, opset))
            functions.append(body)
            node.op_type, node.domain = body.name, LOCAL_DOMAIN
            expanded.append(f"{domain + '.' if domain else ''}{body.name.rsplit('_', 1)[0]}")
        if not functions:
            break
        proto.functions.extend(functions)
        proto.opset_import.append(helper.make_opsetid(LOCAL_DOMAIN, 1))
        proto = onnx.inliner.inline_local_functions(proto, convert_version=True)
        # The model's imports, and those the bodies brought (a preview op's body uses standard ops).
        imports = {**{entry.domain or "": entry.version for entry in proto.opset_import}, **opsets}
        del proto.opset_import[:]
        proto.opset_import.extend(helper.make_opsetid(domain, version) for domain, version in imports.items() if domain != LOCAL_DOMAIN)
        proto = onnx.shape_inference.infer_shapes(proto, data_prop=True)
    return proto, sorted(set(expanded))
