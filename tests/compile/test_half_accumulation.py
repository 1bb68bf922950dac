"""float16 convolutions and matmuls sum in float32 and round once (edgesdk.compile.half_accumulation)."""

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

tvm = pytest.importorskip("tvm")


def _half_model(op: str) -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    if op == "GlobalAveragePool":  # 6,400 values of ~100: their float16 sum would be inf
        graph = helper.make_graph(
            [helper.make_node("GlobalAveragePool", ["x"], ["y"])],
            "half",
            [helper.make_tensor_value_info("x", TensorProto.FLOAT16, [1, 2, 80, 80])],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT16, [1, 2, 1, 1])],
        )
        return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    if op == "MatMul":  # a long dot product: 4096 terms
        weight = rng.standard_normal((4096, 8)).astype(np.float16)
        node, shape, out = helper.make_node("MatMul", ["x", "w"], ["y"]), [1, 4096], [1, 8]
    else:  # the float16 ConvTranspose TVM could not legalize with an implicit output dtype
        weight = rng.standard_normal((4, 2, 2, 2)).astype(np.float16)
        node, shape, out = helper.make_node("ConvTranspose", ["x", "w"], ["y"], strides=[2, 2]), [1, 4, 8, 8], [1, 2, 16, 16]
    graph = helper.make_graph(
        [node],
        "half",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT16, shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT16, out)],
        [onnx.numpy_helper.from_array(weight, "w")],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.mark.parametrize("op", ["MatMul", "ConvTranspose", "GlobalAveragePool"])
def test_float16_layers_sum_in_float32_and_round_once(op, tmp_path):
    from edgesdk.compile import lowering

    model = _half_model(op)
    onnx.save(model, tmp_path / "m.onnx")
    shape = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    mod, weights, _, _ = lowering.import_onnx(tmp_path / "m.onnx", {"x": shape})
    text = mod["main"].script()
    assert ('out_dtype="float32"' in text or op == "GlobalAveragePool") and "R.astype(" in text
    optimized, target = lowering.optimize(mod, {"kind": "llvm", "mtriple": "x86_64-linux-gnu"})
    executable = tvm.compile(optimized, target)
    x = np.random.default_rng(1).standard_normal(shape).astype(np.float16)
    if op == "GlobalAveragePool":
        x = (100 + x).astype(np.float16)
    vm = tvm.relax.VirtualMachine(executable, tvm.cpu())
    got = vm["main"](tvm.runtime.tensor(x), *(tvm.runtime.tensor(w) for w in weights)).numpy().astype(np.float64)
    if op == "GlobalAveragePool":
        np.testing.assert_allclose(got.ravel(), x.astype(np.float64).mean(axis=(2, 3)).ravel(), rtol=2**-10)
    if op == "MatMul":  # the float32 sum rounded once to float16, not 4096 float16 roundings
        exact = x.astype(np.float64) @ np.asarray(onnx.numpy_helper.to_array(model.graph.initializer[0]), np.float64)
        assert np.abs(got - exact).max() <= np.abs(exact).max() * 2**-10
    assert got.shape == tuple(d.dim_value for d in model.graph.output[0].type.tensor_type.shape.dim)
