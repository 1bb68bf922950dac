"""Partitioning and simulation of real compiled models (the kernel analysis comes from TVM)."""

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import edgesdk

pytestmark = pytest.mark.slow


def topk_head() -> onnx.ModelProto:
    """Scores -> ReLU -> TopK(5): TopK is a sort, which no phone NPU or GPU profile runs."""
    weight = numpy_helper.from_array(np.random.default_rng(0).standard_normal((64, 100)).astype(np.float32), "w")
    k = numpy_helper.from_array(np.array([5], np.int64), "k")
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["scores"]),
        helper.make_node("Relu", ["scores"], ["relu"]),
        helper.make_node("TopK", ["relu", "k"], ["values", "indices"], axis=-1),
    ]
    graph = helper.make_graph(
        nodes,
        "topk_head",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 64])],
        [helper.make_tensor_value_info("values", TensorProto.FLOAT, [1, 5]), helper.make_tensor_value_info("indices", TensorProto.INT64, [1, 5])],
        [weight, k],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_topk_on_the_phone_falls_back_to_the_cpu_and_pays_a_transfer(tmp_path):
    artifact = edgesdk.deploy(topk_head(), "phone", tmp_path / "a")
    assert artifact.manifest.verification.passed  # int64 indices match exactly
    fallbacks = {(f.op, f.from_unit, f.to_unit): f.reason for f in artifact.manifest.partition.fallbacks}
    assert fallbacks[("topk", "npu", "cpu")] == "unsupported op class sort"
    assert fallbacks[("topk", "gpu", "cpu")] == "unsupported op class sort"
    layers = {layer.name: layer for layer in artifact.manifest.estimate.per_layer}
    assert layers["topk"].unit == "cpu" and layers["fused_matmul_relu"].unit == "gpu"
    link = edgesdk.get_device("phone").interconnect
    assert layers["topk"].transfer_ms == pytest.approx((100 * 4 / link.bandwidth_bytes_per_s + link.latency_s) * 1e3)
    assert layers["fused_matmul_relu"].transfer_ms == 0
