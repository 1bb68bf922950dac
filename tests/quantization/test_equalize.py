"""Cross-layer equalization keeps the function and evens out channel ranges (onnxruntime, no TVM)."""

import numpy as np
from onnx import TensorProto, helper, numpy_helper

from edgesdk.frontend.model import load_model
from edgesdk.frontend.reference import reference_outputs
from edgesdk.quantization.equalize import equalize


def imbalanced_net(depthwise: bool = False):
    """conv A (8 channels, their scales spread over 1e-2..1e2) -> Relu -> conv B (B undoes A's scales)."""
    rng = np.random.default_rng(0)
    spread = np.geomspace(1e-2, 1e2, 8)
    w_a = rng.standard_normal((8, 3, 3, 3)) * spread[:, None, None, None]
    b_a = rng.standard_normal(8) * spread
    w_b = rng.standard_normal((8, 1, 3, 3)) / spread[:, None, None, None] if depthwise else rng.standard_normal((4, 8, 1, 1)) / spread[None, :, None, None]
    nodes = [
        helper.make_node("Conv", ["x", "wa", "ba"], ["a"], name="A", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["a"], ["r"], name="relu"),
        helper.make_node("Conv", ["r", "wb"], ["y"], name="B", group=8 if depthwise else 1, pads=[1, 1, 1, 1] if depthwise else [0, 0, 0, 0]),
    ]
    inits = [numpy_helper.from_array(v.astype(np.float32), n) for n, v in (("wa", w_a), ("ba", b_a), ("wb", w_b))]
    out_channels = 8 if depthwise else 4
    graph = helper.make_graph(
        nodes,
        "imbalanced",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, out_channels, 8, 8])],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def ranges(proto, name, axis):
    w = numpy_helper.to_array(next(i for i in proto.graph.initializer if i.name == name))
    return np.abs(np.moveaxis(w, axis, 0).reshape(w.shape[axis], -1)).max(axis=1)


def test_equalization_keeps_the_output_and_evens_the_channel_ranges():
    for depthwise in (False, True):
        model = imbalanced_net(depthwise)
        equalized, pairs = equalize(model)
        assert pairs == [("A", "B")]
        x = {"x": np.random.default_rng(1).standard_normal((1, 3, 8, 8)).astype(np.float32)}
        before, after = reference_outputs(model.SerializeToString(), x)["y"], reference_outputs(equalized.SerializeToString(), x)["y"]
        np.testing.assert_allclose(after, before, rtol=1e-4, atol=1e-4 * np.abs(before).max())
        r_a, r_b = ranges(equalized, "wa", 0), ranges(equalized, "wb", 0 if depthwise else 1)
        np.testing.assert_allclose(r_a, r_b, rtol=1e-5)  # both sides meet at sqrt(r_a * r_b)
        assert r_a.max() / r_a.min() < ranges(model, "wa", 0).max() / ranges(model, "wa", 0).min() / 100


def test_equalization_makes_int8_far_more_accurate_on_imbalanced_channels():
    from edgesdk.quantization.ptq import quantize_int8

    model = load_model(imbalanced_net())
    samples = [{"x": np.random.default_rng(seed).standard_normal((1, 3, 8, 8)).astype(np.float32)} for seed in range(16)]
    test = {"x": np.random.default_rng(99).standard_normal((1, 3, 8, 8)).astype(np.float32)}
    reference = reference_outputs(model.serialized, test)["y"]

    def error(equalize):
        quantized = quantize_int8(model, samples, equalize=equalize)
        return float(np.sqrt(np.mean((reference_outputs(quantized.serialized, test)["y"] - reference) ** 2)))

    assert error(True) < error(False) / 3


def test_a_pair_whose_relu_output_is_also_a_model_output_is_left_alone():
    model = imbalanced_net()
    model.graph.output.append(helper.make_tensor_value_info("r", TensorProto.FLOAT, None))
    assert equalize(model)[1] == []
