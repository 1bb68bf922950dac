"""A node TVM cannot lower, between nodes it can: on pc it runs on onnxruntime, called from the
compiled code and recorded in the manifest; on other devices it is one line naming it."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

import edgesdk
from edgesdk.errors import CheckFailed, UserInputError
from edgesdk.frontend.reference import reference_runner

pytestmark = pytest.mark.slow


def _mixed() -> onnx.ModelProto:
    """MatMul (TVM) -> Det (no TVM converter) -> Scan whose body also reads a value from outside it
    (unrolled by edgesdk's converter, TVM code) -> Mul (TVM)."""
    rng = np.random.default_rng(0)
    weight = helper.make_tensor("w", TensorProto.FLOAT, [4, 4], rng.standard_normal((4, 4)).astype(np.float32).ravel())
    body = helper.make_graph(
        [helper.make_node("Add", ["total_in", "row"], ["sum"]), helper.make_node("Mul", ["sum", "d"], ["total_out"])],
        "body",
        [helper.make_tensor_value_info("total_in", TensorProto.FLOAT, [4]), helper.make_tensor_value_info("row", TensorProto.FLOAT, [4])],
        [helper.make_tensor_value_info("total_out", TensorProto.FLOAT, [4])],
    )
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["a"]),
        helper.make_node("Reshape", ["a", "rows"], ["a2"]),
        helper.make_node("Det", ["a"], ["d3"]),
        helper.make_node("ReduceMean", ["d3"], ["d"], keepdims=0),
        helper.make_node("Scan", ["init", "a2"], ["total"], body=body, num_scan_inputs=1),
        helper.make_node("Mul", ["total", "d"], ["y"]),
    ]
    initializers = [
        weight,
        helper.make_tensor("init", TensorProto.FLOAT, [4], np.zeros(4, np.float32)),
        helper.make_tensor("rows", TensorProto.INT64, [2], [12, 4]),
    ]
    graph = helper.make_graph(
        nodes,
        "mixed",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3, 4, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])],
        initializers,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_pc_runs_what_tvm_cannot_lower_on_onnxruntime_and_says_so(tmp_path):
    model = _mixed()
    x = np.random.default_rng(1).standard_normal((3, 4, 4)).astype(np.float32)
    artifact = edgesdk.deploy(model, "pc", tmp_path / "pc", inputs={"x": x})

    fallbacks = artifact.manifest.partition.fallbacks
    assert [(f.op, f.to_unit) for f in fallbacks] == [("Det", "onnxruntime")]
    assert "no converter for Det" in fallbacks[0].reason
    assert any("node(s) run on onnxruntime" in note for note in artifact.manifest.build.notes)
    listing = json.loads((tmp_path / "pc" / "onnxruntime" / "segments.json").read_text())
    assert [segment["op"] for segment in listing] == ["Det"]
    assert all(f"onnxruntime/{segment['file']}" in artifact.manifest.files for segment in listing)
    # The TVM parts are kernels of the compiled code; the rest is onnxruntime's, called in between.
    assert artifact.manifest.verification.passed

    expected = reference_runner(model.SerializeToString())({"x": x})["y"]
    for isolated in (False, True):
        np.testing.assert_allclose(artifact.run({"x": x}, isolated=isolated)["y"], expected, rtol=1e-5, atol=1e-5)
    reloaded = edgesdk.load_artifact(tmp_path / "pc")
    assert reloaded.verify().passed


def _loop() -> onnx.ModelProto:
    """Relu (TVM) -> Loop adding a value from outside its body 3 times, its body computing its
    condition (not unrolled; shape inference does not give a Loop's output shape: onnxruntime
    measures it on the deploy's inputs) -> Neg (TVM)."""
    body = helper.make_graph(
        [
            helper.make_node("Add", ["acc_in", "r"], ["acc_out"]),
            helper.make_node("Constant", [], ["last"], value=helper.make_tensor("last", TensorProto.INT64, [], [2])),
            helper.make_node("Less", ["i", "last"], ["cond_out"]),
        ],
        "body",
        [
            helper.make_tensor_value_info("i", TensorProto.INT64, []),
            helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
            helper.make_tensor_value_info("acc_in", TensorProto.FLOAT, None),
        ],
        [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []), helper.make_tensor_value_info("acc_out", TensorProto.FLOAT, None)],
    )
    nodes = [
        helper.make_node("Relu", ["x"], ["r"]),
        helper.make_node("Loop", ["trips", "", "r"], ["summed"], body=body),
        helper.make_node("Neg", ["summed"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "loop",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 5])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 5])],
        [helper.make_tensor("trips", TensorProto.INT64, [], [3])],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_a_loop_whose_shape_inference_cannot_size_runs_on_onnxruntime_at_the_measured_shape(tmp_path):
    x = np.random.default_rng(2).standard_normal((2, 5)).astype(np.float32)
    artifact = edgesdk.deploy(_loop(), "pc", tmp_path / "pc", inputs={"x": x})
    assert [(f.op, f.to_unit) for f in artifact.manifest.partition.fallbacks] == [("Loop", "onnxruntime")]
    np.testing.assert_allclose(artifact.run({"x": x})["y"], -4 * np.maximum(x, 0), rtol=1e-6)


def test_other_devices_name_the_node_they_cannot_lower(tmp_path):
    with pytest.raises(UserInputError, match=r"^unsupported on phone: Det \(TVM's ONNX frontend has no converter for Det\)$"):
        edgesdk.deploy(_mixed(), "phone", tmp_path / "phone")
    assert not (tmp_path / "phone").exists()


def test_profile_on_pc_lists_the_onnxruntime_nodes_as_deploy_does(tmp_path):
    report = edgesdk.profile(_mixed(), "pc")
    assert [(f.op, f.to_unit) for f in report.partition.fallbacks] == [("Det", "onnxruntime")]
    with pytest.raises(UserInputError, match=r"^unsupported on phone: Det \("):
        edgesdk.profile(_mixed(), "phone")


def _python_mod() -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    """Mod (Python's, fmod=0) -> Add, on the divisors where TVM's result is not onnxruntime's
    (infinite ones), with the inputs that show it."""
    nodes = [helper.make_node("Mod", ["x", "y"], ["m"], fmod=0), helper.make_node("Add", ["m", "one"], ["z"])]
    graph = helper.make_graph(
        nodes,
        "mod",
        [helper.make_tensor_value_info(name, TensorProto.FLOAT, [8]) for name in ("x", "y")],
        [helper.make_tensor_value_info("z", TensorProto.FLOAT, [8])],
        [helper.make_tensor("one", TensorProto.FLOAT, [], [1.0])],
    )
    inputs = {
        "x": np.array([-3, 3, -1, 1, 5, -5, 7.5, 2], np.float32),
        "y": np.array([np.inf, np.inf, -np.inf, -np.inf, 3, 3, -2, 2], np.float32),
    }
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 28)]), inputs  # Python's float Mod: opset 28


def test_pc_moves_a_node_whose_numbers_differ_to_onnxruntime_and_says_why(tmp_path):
    model, inputs = _python_mod()
    artifact = edgesdk.deploy(model, "pc", tmp_path / "pc", inputs=inputs)

    assert artifact.manifest.verification.passed
    (fallback,) = artifact.manifest.partition.fallbacks
    assert (fallback.op, fallback.to_unit) == ("Mod", "onnxruntime")
    assert "TVM's result differs from onnxruntime's on the deploy's inputs ('m': max abs err inf" in fallback.reason
    assert artifact.manifest.build.kernels == 1  # the Add stays TVM code
    expected = reference_runner(model.SerializeToString())(inputs)["z"]
    np.testing.assert_array_equal(artifact.run(inputs)["z"], expected)


def test_where_onnxruntime_cannot_run_a_differing_node_verification_fails(tmp_path):
    model, inputs = _python_mod()
    with pytest.raises(CheckFailed, match="numerics differ from onnxruntime"):
        edgesdk.deploy(model, "xr-headset", tmp_path / "xr", inputs=inputs)


def test_onnx_ml_operators_run_on_onnxruntime_on_pc_and_are_one_line_elsewhere(tmp_path):
    graph = helper.make_graph(
        [helper.make_node("Binarizer", ["x"], ["y"], domain="ai.onnx.ml", threshold=0.5)],
        "ml",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("ai.onnx.ml", 3)])  # no standard opset at all
    x = np.array([[0.1, 0.6, 0.5], [0.9, -1.0, 0.51]], np.float32)
    artifact = edgesdk.deploy(model, "pc", tmp_path / "pc", inputs={"x": x})
    assert [(f.op, f.to_unit) for f in artifact.manifest.partition.fallbacks] == [("Binarizer", "onnxruntime")]
    np.testing.assert_array_equal(artifact.run({"x": x})["y"], (x > 0.5).astype(np.float32))
    with pytest.raises(UserInputError, match=r"^unsupported on phone: Binarizer \(TVM's ONNX frontend has no converter for the ai.onnx.ml domain\)$"):
        edgesdk.deploy(model, "phone", tmp_path / "phone")


def test_compare_analyses_pc_with_its_onnxruntime_nodes_and_names_a_device_that_cannot(tmp_path):
    report = edgesdk.compare(_mixed(), "pc")
    assert [(row.device, row.fallbacks) for row in report.rows] == [("pc", 1)]
    with pytest.raises(UserInputError, match=r"^unsupported on phone: Det \("):
        edgesdk.compare(_mixed(), "pc,phone")


def test_an_output_sized_by_the_values_runs_at_the_deployed_shape_and_says_so_otherwise(tmp_path):
    graph = helper.make_graph(
        [helper.make_node("Unique", ["x"], ["y"], sorted=1)],
        "unique",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n"])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    x = np.array([3, 1, 3, 2, 1, 3], np.float32)
    artifact = edgesdk.deploy(model, "pc", tmp_path / "pc", inputs={"x": x})
    assert any("compiled for [3]" in note for note in artifact.manifest.build.notes)
    np.testing.assert_array_equal(artifact.run({"x": x})["y"], [1, 2, 3])
    np.testing.assert_array_equal(artifact.run({"x": x[::-1].copy()})["y"], [1, 2, 3])  # the same shape
    with pytest.raises(UserInputError, match="its shape depends on the input values"):
        artifact.run({"x": np.zeros(6, np.float32)})
