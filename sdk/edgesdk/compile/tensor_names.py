"""Initializer names the C code generator can print.

TVM names a kernel's tensor parameters after the Relax variables they come from, and those after
the ONNX initializers. A name such as ``/3/Relu_output_0_zero_point`` (onnxruntime's quantizer
names its scales and zero points after the tensors, and exporters name tensors by module path)
then becomes a C variable in the mcu's source, which does not compile. Initializers are renamed
to C identifiers before import; graph inputs and outputs keep the user's names.
"""

from __future__ import annotations

import onnx

from edgesdk.compile.standalone import identifier


def _is_identifier(name: str) -> bool:
    return name.isidentifier() and name.isascii()


def _rename(graph: onnx.GraphProto, renamed: dict[str, str]) -> None:
    for node in graph.node:
        for index, name in enumerate(node.input):
            if name in renamed:
                node.input[index] = renamed[name]
        for attribute in node.attribute:
            for subgraph in [attribute.g, *attribute.graphs]:
                _rename(subgraph, renamed)


def c_safe_initializers(proto: onnx.ModelProto) -> onnx.ModelProto:
    """``proto`` with every initializer whose name is not a C identifier renamed to one (unique)."""
    graph = proto.graph
    taken = {init.name for init in graph.initializer} | {value.name for value in graph.input} | {out for node in graph.node for out in node.output}
    renamed: dict[str, str] = {}
    for init in graph.initializer:
        if _is_identifier(init.name):
            continue
        new, number = identifier(init.name), 0
        while new in taken:
            number += 1
            new = f"{identifier(init.name)}_{number}"
        taken.add(new)
        renamed[init.name] = new
    if not renamed:
        return proto
    copy = onnx.ModelProto()
    copy.CopyFrom(proto)
    for init in copy.graph.initializer:
        init.name = renamed.get(init.name, init.name)
    for value in copy.graph.value_info:
        value.name = renamed.get(value.name, value.name)
    _rename(copy.graph, renamed)
    return copy
