"""edgesdk.compile.patches: a model's first stage run patch by patch computes what the model
computes (onnxruntime on both), and the plan lowers the activation peak where the first stage
sets it."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from edgesdk.compile import patches
from edgesdk.frontend.model import load_model
from edgesdk.testing import models
from edgesdk.testing.models import GraphBuilder


def run(proto: onnx.ModelProto, image: np.ndarray) -> list[np.ndarray]:
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"image": image})


def windows_net() -> onnx.ModelProto:
    """Every window and pixelwise op the stage takes: a dilated conv, an asymmetric-stride conv
    with uneven pads, a MaxPool with pads, an AveragePool leaving pads out of its average, a
    concat of channels, BatchNormalization, PRelu, per-channel Mul; then a global pool ends it."""
    g = GraphBuilder(11)

    def const(values) -> str:
        return g.const(np.asarray(values, np.float32))

    x = g.op("Conv", ["image", g.weight((8, 3, 3, 3), 27), const(np.zeros(8))], pads=[2, 2, 2, 2], dilations=[2, 2])
    x = g.op("PRelu", [x, const(np.full((8, 1, 1), 0.1))])
    x = g.op("Conv", [x, g.weight((8, 8, 3, 5), 120), const(np.zeros(8))], pads=[1, 2, 0, 1], strides=[2, 1])
    pooled = g.op("MaxPool", [x], kernel_shape=[3, 3], pads=[1, 1, 1, 1], strides=[1, 1])
    averaged = g.op("AveragePool", [x], kernel_shape=[3, 3], pads=[1, 1, 1, 1], count_include_pad=0)
    x = g.op("Concat", [pooled, averaged], axis=1)
    rng = np.random.default_rng(3)
    x = g.op("BatchNormalization", [x, const(rng.uniform(0.5, 2, 16)), const(rng.normal(size=16)), const(rng.normal(size=16)), const(rng.uniform(0.5, 2, 16))])
    x = g.op("Mul", [x, const(rng.normal(size=(16, 1, 1)))])
    x = g.op("Relu", [g.op("Conv", [x, g.weight((16, 16, 3, 3), 144), const(np.zeros(16))], pads=[1, 1, 1, 1], strides=[2, 2])])
    out = g.op("GlobalAveragePool", [x], "pooled")
    return g.model(
        "windows_net",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, 40, 36])],
        [helper.make_tensor_value_info(out, TensorProto.FLOAT, [1, 16, 1, 1])],
    )


def stage_cuts(proto: onnx.ModelProto) -> list[str]:
    graph = patches._Graph.of(proto)
    return [cut for cut, _ in patches._candidates(graph)]


@pytest.mark.parametrize("grid", [(2, 2), (3, 5), (4, 3)])
def test_patches_compute_what_the_model_computes(grid):
    image = np.random.default_rng(0).standard_normal((1, 3, 40, 36)).astype(np.float32)
    proto = load_model(windows_net()).proto
    expected = run(proto, image)
    cuts = stage_cuts(proto)
    assert cuts, "the stage should end after the strided convolutions"
    for cut in cuts:
        patched = patches.rewrite(proto, cut, grid).model(proto)
        onnx.checker.check_model(patched)
        assert sum(node.op_type == "Slice" for node in patched.graph.node) >= grid[0] * grid[1]
        np.testing.assert_allclose(run(patched, image)[0], expected[0], rtol=1e-5, atol=1e-5)


def test_residual_blocks_and_quantized_models_keep_their_numbers(tmp_path):
    """The inverted-residual stem of mcu_stem_net in patches, as float and as int8 QDQ (the
    slices land before QuantizeLinear, so each conv keeps its DequantizeLinear -> Conv pattern)."""
    import edgesdk

    image = np.random.default_rng(1).standard_normal((1, 3, 128, 128)).astype(np.float32)
    float_model = load_model(models.mcu_stem_net(), input_shapes={"image": [1, 3, 128, 128]})
    samples = {"image": np.random.default_rng(2).standard_normal((4, 3, 128, 128)).astype(np.float32)}
    edgesdk.quantize(float_model.proto, samples, tmp_path / "int8.onnx", scheme="int8")
    quantized = load_model(tmp_path / "int8.onnx", input_shapes={"image": [1, 3, 128, 128]}).proto
    assert any(node.op_type == "QuantizeLinear" for node in quantized.graph.node)
    for proto in (float_model.proto, quantized):
        found = patches.plan(proto, limit_bytes=1 << 20)
        assert found is not None
        patched, plan = found
        np.testing.assert_allclose(run(patched, image)[0], run(proto, image)[0], rtol=1e-4, atol=1e-4)
        assert plan.recompute > 0 and plan.grid[0] >= 2


def test_the_plan_lowers_the_peak_set_by_the_first_stage():
    """mcu_stem_net needs ~1.2 MB at once, at its 64x64x48 layer; in patches under 1 MiB, for a
    few percent more multiply-adds."""
    proto = load_model(models.mcu_stem_net(), input_shapes={"image": [1, 3, 128, 128]}).proto
    graph = patches._Graph.of(proto)
    before = patches.estimated_peak(proto.graph.node, graph, graph.shapes, graph.itemsize)
    found = patches.plan(proto, limit_bytes=1 << 20)
    assert found is not None
    _, plan = found
    assert before > 1 << 20 >= plan.estimated_peak_bytes
    assert 0 < plan.recompute < 0.2


def test_no_plan_where_no_stage_can_run_in_patches():
    """A U-Net reads its high-resolution maps again at the end (skip connections): no stage
    closes before them; a model without spatial maps has none."""
    assert patches.plan(load_model(models.unet_like(), input_shapes={"image": [1, 3, 64, 64]}).proto, 1) is None
    assert patches.plan(load_model(models.mlp(), input_shapes={"features": [1, 64]}).proto, 1) is None
