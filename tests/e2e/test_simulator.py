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


def test_calibrate_fits_this_host_and_later_estimates_use_it(run_cli, tmp_path, monkeypatch):
    import json

    from edgesdk.calibration import micro_benchmarks
    from edgesdk.testing.models import mlp

    monkeypatch.setenv("EDGESDK_CACHE_DIR", str(tmp_path / "cache"))
    code, out, err = run_cli("calibrate", "--device", "pc", "--repeat", "5", "--json")
    assert code == 0, err
    fitted = json.loads(out)
    assert {sample["benchmark"] for sample in fitted["samples"]} == set(micro_benchmarks())
    assert all(0 < value <= 1 for value in fitted["efficiency"].values())
    assert 0 < fitted["launch_overhead_s"] < 1e-3
    onnx.save(mlp(), tmp_path / "mlp.onnx")
    code, out, _ = run_cli("profile", str(tmp_path / "mlp.onnx"), "--device", "pc", "--input-shape", "features=1,64", "--json")
    assert json.loads(out)["estimate"]["calibrated_utc"] == fitted["created_utc"]
    code, _, err = run_cli("calibrate", "--device", "phone")
    assert code == 2 and err.startswith("error: calibrate: code for 'phone' does not run on this host")
