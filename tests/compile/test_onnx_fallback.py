"""The guard around TVM's converters: node names it can find nodes by, the outer values a
subgraph reads, and the converter gaps it turns into per-node failures."""

from __future__ import annotations

import onnx
from onnx import TensorProto, helper

from edgesdk.compile.onnx_fallback import GAPS, _name_nodes, _outer_reads


def _loop() -> onnx.NodeProto:
    body = helper.make_graph(
        [helper.make_node("Add", ["acc_in", "outer"], ["sum"]), helper.make_node("Mul", ["sum", "acc_in"], ["acc_out"])],
        "body",
        [helper.make_tensor_value_info(name, TensorProto.FLOAT, [2]) for name in ("i", "cond_in", "acc_in")],
        [helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []), helper.make_tensor_value_info("acc_out", TensorProto.FLOAT, [2])],
    )
    return helper.make_node("Loop", ["trips", "", "start"], ["y"], body=body)


def test_a_subgraph_reads_the_values_it_does_not_define_from_the_scope_around_it():
    assert _outer_reads(_loop()) == ["outer"]
    assert _outer_reads(helper.make_node("Relu", ["x"], ["y"])) == []


def test_every_node_gets_a_unique_name_subgraphs_included():
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["a"]), helper.make_node("Relu", ["a"], ["b"], name="Relu_0"), _loop()], "g", [], [])
    _name_nodes(graph, set())
    names = [node.name for node in graph.node] + [node.name for node in graph.node[2].attribute[0].g.node]
    assert len(set(names)) == len(names) == 5 and all(names)


def test_gaps_name_what_tvm_would_get_wrong_and_nothing_else():
    assert GAPS["Resize"]({"antialias": 1}, ["float32"], [1, 3, 8, 8]) == "TVM's Resize ignores antialias"
    assert GAPS["Resize"]({"mode": b"linear"}, ["float32"], [1, 3, 8, 8]) is None
    assert "empty set" in GAPS["ReduceMax"]({}, ["float32"], [2, 0, 4])
    assert GAPS["ReduceMax"]({}, ["float32"], [2, 3, 4]) is None
    assert GAPS["ReduceMin"]({}, ["bool"], [2, 3]) is None  # edgesdk's converter takes booleans
    assert GAPS["ConvTranspose"]({"output_shape": (4, 4)}, ["float32"], [1, 1, 2, 2]) is not None
    assert GAPS["ConvTranspose"]({"output_shape": (4, 4), "auto_pad": b"SAME_UPPER"}, ["float32"], [1, 1, 2, 2]) is None
