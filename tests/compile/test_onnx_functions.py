"""Operators TVM's frontend lacks are replaced by the standard's own function bodies."""

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper

from edgesdk.compile.onnx_converters import CONVERTERS, supported_ops
from edgesdk.compile.onnx_functions import expand_functions


def _run(proto: onnx.ModelProto, x: np.ndarray) -> list[np.ndarray]:
    return ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})


def _model(node: onnx.NodeProto, outputs: list[str], opset: int) -> onnx.ModelProto:
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 5])],
        [helper.make_tensor_value_info(name, TensorProto.FLOAT, None) for name in outputs],
    )
    return onnx.shape_inference.infer_shapes(helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)]))


def test_an_operator_tvm_lacks_becomes_its_body_and_computes_the_same():
    model = _model(helper.make_node("Celu", ["x"], ["y"], alpha=0.7), ["y"], 17)
    supported = supported_ops()
    assert "Celu" not in supported and "LSTM" in supported and set(CONVERTERS) <= supported
    expanded, names = expand_functions(onnx.ModelProto.FromString(model.SerializeToString()), supported)
    assert names == ["Celu"] and "Celu" not in {node.op_type for node in expanded.graph.node}
    x = np.random.default_rng(0).standard_normal((2, 5)).astype(np.float32)
    np.testing.assert_allclose(_run(expanded, x)[0], _run(model, x)[0], rtol=1e-6)


def test_layer_norm_is_expanded_only_when_its_statistics_are_used():
    scale = helper.make_tensor("scale", TensorProto.FLOAT, [5], np.ones(5, np.float32))
    for outputs, expected in ((["y"], []), (["y", "mean", "inv"], ["LayerNormalization"])):
        model = _model(helper.make_node("LayerNormalization", ["x", "scale"], outputs), outputs, 17)
        model.graph.initializer.append(scale)
        expanded, names = expand_functions(onnx.ModelProto.FromString(model.SerializeToString()), supported_ops())
        assert names == expected
        x = np.random.default_rng(1).standard_normal((2, 5)).astype(np.float32)
        for ours, theirs in zip(_run(expanded, x), _run(model, x), strict=True):
            np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-6)
