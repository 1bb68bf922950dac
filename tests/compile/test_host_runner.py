"""Running a host build in this process: inputs in, outputs out, no copy that can be avoided."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

import edgesdk


def _passthrough_model() -> onnx.ModelProto:
    """x passed through as-is, x > 0 (bool) and the sum of x (a 0-d output)."""
    graph = helper.make_graph(
        [
            helper.make_node("Identity", ["x"], ["same"]),
            helper.make_node("Greater", ["x", "zero"], ["positive"]),
            helper.make_node("ReduceSum", ["x"], ["total"], keepdims=0),
        ],
        "passthrough",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3, 5])],
        [
            helper.make_tensor_value_info("same", TensorProto.FLOAT, [3, 5]),
            helper.make_tensor_value_info("positive", TensorProto.BOOL, [3, 5]),
            helper.make_tensor_value_info("total", TensorProto.FLOAT, []),
        ],
        [helper.make_tensor("zero", TensorProto.FLOAT, [], [0.0])],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def _placed(values: np.ndarray, offset: int) -> np.ndarray:
    """``values`` copied to ``offset`` bytes past a 64-byte aligned address (0: TVM can share it)."""
    raw = np.zeros(values.nbytes + 64 + offset, np.uint8)
    start = (-raw.ctypes.data) % 64 + offset
    array = raw[start : start + values.nbytes].view(values.dtype).reshape(values.shape)
    array[...] = values
    return array


@pytest.mark.slow
def test_outputs_are_fresh_arrays_whether_or_not_the_input_was_shared(tmp_path):
    artifact = edgesdk.deploy(_passthrough_model(), "pc", tmp_path / "a")
    rng = np.random.default_rng(0)
    first, second = (rng.standard_normal((3, 5)).astype(np.float32) for _ in range(2))
    for offset in (0, 4):
        x1, x2 = _placed(first, offset), _placed(second, offset)
        out1 = artifact.run({"x": x1})
        out2 = artifact.run({"x": x2})
        # The first call's outputs survive the second call (no buffer reused under them)...
        np.testing.assert_array_equal(out1["same"], first)
        np.testing.assert_array_equal(out2["same"], second)
        # ...and are not the caller's input memory either.
        assert not np.shares_memory(out1["same"], x1) and not np.shares_memory(out2["same"], x2)
        assert out1["positive"].dtype == np.bool_ and (out1["positive"] == (first > 0)).all()
        assert out1["total"].shape == () and out1["total"] == pytest.approx(first.sum(), rel=1e-5)
        x2[...] = 0  # the caller reusing its input does not change what it got back
        np.testing.assert_array_equal(out2["same"], second)
