"""Group-wise weight quantization and int4 packing (numpy and onnxruntime; no TVM)."""

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgesdk.compile.packed_kernels import extract_blocked_weights
from edgesdk.frontend.model import load_model
from edgesdk.quantization.schemes import weight_bytes
from edgesdk.quantization.weight_only import quantize_rows, quantize_weight_only
from edgesdk.testing.models import tiny_cnn


@pytest.mark.parametrize(("bits", "group"), [(4, 32), (4, 64), (8, None)])
def test_group_wise_quantization_bounds_the_error_by_half_a_step(bits, group):
    weights = np.random.default_rng(0).standard_normal((16, 200)).astype(np.float32)
    quantized = quantize_rows("w", weights, bits, group)
    size = quantized.group
    assert size == (group or 200) and quantized.scales.shape == (16, -(-200 // size)) and quantized.scales.dtype == np.float16
    top = 2 ** (bits - 1) - 1
    assert quantized.values.min() >= -top - 1 and quantized.values.max() <= top
    steps = np.repeat(quantized.scales.astype(np.float32), size, axis=1)[:, :200]
    assert np.all(np.abs(quantized.dequantized() - weights) <= 0.5 * steps + 1e-3 * np.abs(weights) + 1e-6)
    # Each group's largest weight is representable: the scale follows the group, not the row.
    assert np.allclose(np.abs(quantized.values[:, :size]).max(axis=1), top)


def test_int4_packs_two_weights_per_byte_and_unpacks_exactly():
    quantized = quantize_rows("w", np.random.default_rng(1).standard_normal((8, 37)).astype(np.float32), 4, 32)
    blocked = extract_blocked_weights(_blocked_matmul(quantized))[1]["edgesdk_blocked_0"]
    packed = blocked.packed()
    assert packed.dtype == np.uint8 and packed.shape == (8, 19)  # 37 weights -> 19 bytes a row
    low, high = (packed & 15).astype(np.int32) - 8, (packed >> 4).astype(np.int32) - 8
    unpacked = np.stack([low, high], axis=2).reshape(8, 38)[:, :37]
    np.testing.assert_array_equal(unpacked, quantized.values)


def _blocked_matmul(quantized) -> onnx.ModelProto:
    """y = x @ W.T with W (8, 37) as a blocked int4 DequantizeLinear (opset 21)."""
    stored = helper.make_tensor("wq", TensorProto.INT4, list(quantized.values.shape), quantized.values.ravel().tolist())
    nodes = [
        helper.make_node("DequantizeLinear", ["wq", "ws"], ["w16"], axis=1, block_size=quantized.group),
        helper.make_node("Cast", ["w16"], ["w"], to=TensorProto.FLOAT),
        helper.make_node("Gemm", ["x", "w"], ["y"], transB=1),
    ]
    graph = helper.make_graph(
        nodes,
        "blocked",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 37])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8])],
        [stored, numpy_helper.from_array(quantized.scales, "ws")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])
    model.ir_version = 10
    return model


def test_the_lowering_reads_blocked_dequantize_as_float_weights_plus_what_it_packs():
    quantized = quantize_rows("w", np.random.default_rng(2).standard_normal((8, 37)).astype(np.float32), 4, 32)
    model = _blocked_matmul(quantized)
    stripped, table = extract_blocked_weights(model)
    assert [node.op_type for node in stripped.graph.node] == ["Gemm"]  # dequantize and cast folded
    floats = numpy_helper.to_array(next(i for i in stripped.graph.initializer if i.name == "edgesdk_blocked_0"))
    assert floats.dtype == np.float32 and floats.shape == (8, 37)
    x = np.random.default_rng(3).standard_normal((1, 37)).astype(np.float32)
    run = lambda proto: ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]  # noqa: E731
    np.testing.assert_allclose(run(stripped), run(model), rtol=1e-5, atol=1e-5)
    assert table["edgesdk_blocked_0"].axis == 1 and table["edgesdk_blocked_0"].bits == 4


def test_w4a16_model_runs_in_onnxruntime_with_packed_int4_weights():
    model = load_model(tiny_cnn(), {"image": [1, 3, 32, 32]})
    w4 = quantize_weight_only(model, 4, 32)
    types = {init.data_type for init in w4.proto.graph.initializer}
    assert TensorProto.INT4 in types and TensorProto.FLOAT not in types  # float16 scales and biases
    assert weight_bytes(w4.proto) < 0.2 * weight_bytes(model.proto)
    x = np.random.default_rng(4).standard_normal((1, 3, 32, 32)).astype(np.float32)
    run = lambda proto: ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"image": x})[0]  # noqa: E731
    reference, quantized = run(model.proto), run(w4.proto)
    assert quantized.dtype == np.float32  # inputs and outputs keep their types
    cosine = float(np.sum(reference * quantized) / np.linalg.norm(reference) / np.linalg.norm(quantized))
    assert cosine > 0.99
    # A layer kept in float keeps float (16-bit) weights.
    first_conv = next(node.name for node in w4.proto.graph.node if node.op_type == "Conv")
    partial = quantize_weight_only(model, 4, 32, keep_float=[first_conv])
    assert (
        sum(i.data_type == TensorProto.INT4 for i in partial.proto.graph.initializer)
        == sum(i.data_type == TensorProto.INT4 for i in w4.proto.graph.initializer) - 1
    )


def test_bias_correction_removes_the_mean_shift_of_rounding_every_weight_the_same_way():
    """Weights k + 0.4 (k integer) with a step of 1 all round down by 0.4: on positive inputs each
    output drops by 0.4 x sum(x) on average, which bias correction measures and puts back."""
    from edgesdk.quantization.recipe import recipe
    from edgesdk.quantization.schemes import quantized_model

    rng = np.random.default_rng(5)
    weights = rng.integers(-6, 6, (8, 64)).astype(np.float32) + 0.4
    weights[:, [0, 32]] = 7.0  # each group of 32's largest weight: a scale of exactly 1
    graph = helper.make_graph(
        [helper.make_node("Gemm", ["x", "w", "b"], ["y"], transB=1, name="dense")], "biased",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 64])], [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8])],
        [numpy_helper.from_array(weights, "w"), numpy_helper.from_array(np.zeros(8, np.float32), "b")],
    )  # fmt: skip
    model = load_model(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))
    calibration = [{"x": rng.uniform(0, 1, (1, 64)).astype(np.float32)} for _ in range(64)]
    heldout = [{"x": rng.uniform(0, 1, (1, 64)).astype(np.float32)} for _ in range(64)]

    def mean_error(proto):
        session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
        return float(np.mean([session.run(None, s)[0] - s["x"] @ weights.T for s in heldout]))

    plain = quantized_model(model, recipe("w4a16", calibration, None), calibration)
    corrected = quantized_model(model, recipe("w4a16", calibration, None, bias_correction=True), calibration)
    assert mean_error(plain.proto) == pytest.approx(-0.4 * 62 * 0.5, rel=0.1)
    assert abs(mean_error(corrected.proto)) < 0.3
    assert corrected.notes[-1] == "biases of 1 layers corrected on 64 calibration samples"


def test_kmeans_codebooks_are_exact_for_few_distinct_vectors_and_beat_uniform_grids():
    from edgesdk.quantization.vector import kmeans
    from edgesdk.quantization.vector import quantize_rows as vq_rows

    few = np.repeat(np.array([[0.5, -1.0], [2.0, 0.25], [0.0, 0.0]]), 20, axis=0)
    codebook, assignment = kmeans(few, 16)
    np.testing.assert_array_equal(codebook[assignment], few)
    weights = np.random.default_rng(6).laplace(size=(32, 128)).astype(np.float32)  # heavy-tailed, like trained weights
    vq = vq_rows("w", weights, 1, 4)  # 16 scalar levels per layer
    assert vq.indices.max() < 16 and vq.codebook.shape == (16, 1)
    uniform = quantize_rows("w", weights, 4, None)  # 16 evenly spaced levels per row
    assert np.mean((vq.dequantized() - weights) ** 2) < np.mean((uniform.dequantized() - weights) ** 2)


def test_vq_lookup_chain_is_read_back_as_indices_and_codebook():
    from edgesdk.quantization.vector import quantize_vq

    model = load_model(tiny_cnn(), {"image": [1, 3, 32, 32]})
    vq = quantize_vq(model, 3, 4)
    stripped, table = extract_blocked_weights(vq.proto)
    assert table and all(w.codebook and w.bits == 4 and w.scales.shape == (16, 3) for w in table.values())
    gathers = lambda proto: sum(node.op_type == "Gather" for node in proto.graph.node)  # noqa: E731
    assert gathers(vq.proto) == len(table) and gathers(stripped) == 0
    x = np.random.default_rng(7).standard_normal((1, 3, 32, 32)).astype(np.float32)
    run = lambda proto: ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"image": x})[0]  # noqa: E731
    np.testing.assert_allclose(run(stripped), run(vq.proto), rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize("scheme", ["w4a16", "int8"])
def test_adaround_lowers_each_layers_output_error_within_its_time_budget(scheme):
    import time

    from edgesdk.quantization.adaround import adaround
    from edgesdk.quantization.recipe import recipe
    from edgesdk.quantization.schemes import quantized_model

    model = load_model(tiny_cnn(), {"image": [1, 3, 32, 32]})
    rng = np.random.default_rng(8)
    samples = [{"image": rng.standard_normal((1, 3, 32, 32)).astype(np.float32)} for _ in range(16)]
    nearest = quantized_model(model, recipe(scheme, samples, None), samples)
    started = time.monotonic()
    rounded, layers = adaround(nearest.proto, model.proto, samples, seconds=2.0)
    assert time.monotonic() - started < 2.0 + 3.0  # the budget, plus reading inputs and covariances
    assert len(layers) == 4 and all(layer.error <= layer.nearest_error for layer in layers)
    assert sum(layer.learned for layer in layers) >= 2 and min(layer.error / layer.nearest_error for layer in layers) < 0.9
    # Still a valid model of the same integers' range, which onnxruntime runs.
    x = samples[0]
    out = ort.InferenceSession(rounded.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, x)[0]
    reference = ort.InferenceSession(model.proto.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, x)[0]
    assert np.corrcoef(out.ravel(), reference.ravel())[0, 1] > 0.95


def test_quantize_tool_writes_a_w4a16_model_with_per_group_int4_encodings(tmp_path):
    import json

    import edgesdk

    model = load_model(tiny_cnn(), {"image": [1, 3, 32, 32]})
    onnx.save(model.proto, tmp_path / "m.onnx")
    samples = {"image": np.random.default_rng(9).standard_normal((8, 3, 32, 32)).astype(np.float32)}
    report = edgesdk.quantize(tmp_path / "m.onnx", samples, tmp_path / "w4.onnx", scheme="w4a16", group_size=32)
    assert (report.scheme, report.group_size, report.range_method) == ("w4a16", 32, None) and report.drop_pt <= 100
    encodings = json.loads((tmp_path / "w4.encodings.json").read_text())["param_encodings"]
    written = onnx.load(tmp_path / "w4.onnx")
    scales = {init.name.removesuffix("_scale"): init for init in written.graph.initializer if init.name.endswith("_scale")}
    assert len(encodings) == len(scales) == 4
    for name, entries in encodings.items():
        assert all(entry["bitwidth"] == 4 and entry["is_symmetric"] == "True" for entry in entries)
        assert len(entries) == int(np.prod(scales[name].dims))  # one per group
    ort.InferenceSession(written.SerializeToString(), providers=["CPUExecutionProvider"])


def test_vq_covers_matmul_weights_stored_input_major():
    from edgesdk.quantization.vector import quantize_vq
    from edgesdk.testing.models import mlp

    model = load_model(mlp(), {"features": [1, 64]})  # Gemm without transB: weights (in, out)
    vq = quantize_vq(model, 2, 8)
    stripped, table = extract_blocked_weights(vq.proto)
    assert len(table) == 3 and all(weight.axis == 0 for weight in table.values())
    x = {"features": np.random.default_rng(10).standard_normal((1, 64)).astype(np.float32)}
    run = lambda proto: ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, x)[0]  # noqa: E731
    np.testing.assert_allclose(run(stripped), run(vq.proto), rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize(("scheme", "options", "dtype"), [("w4a8", {"group_size": 32}, "int"), ("vq", {"vq_dim": 3, "vq_bits": 4}, "vq")])
def test_quantize_tool_names_weight_encodings_after_the_float_weights(tmp_path, scheme, options, dtype):
    import json

    import edgesdk

    model = load_model(tiny_cnn(), {"image": [1, 3, 32, 32]})
    samples = {"image": np.random.default_rng(11).standard_normal((8, 3, 32, 32)).astype(np.float32)}
    edgesdk.quantize(model.proto, samples, tmp_path / "q.onnx", scheme=scheme, **options)
    params = json.loads((tmp_path / "q.encodings.json").read_text())["param_encodings"]
    float_weights = {node.input[1] for node in model.proto.graph.node if node.op_type in ("Conv", "Gemm")}
    assert set(params) <= float_weights and len(params) >= 2  # vq: layers whose depth is a multiple of 3
    assert all(entry["bitwidth"] == 4 and entry["dtype"] == dtype for entries in params.values() for entry in entries)
