"""Float32 exp, sigmoid, tanh, erf and softmax become arithmetic LLVM vectorises (edgesdk.compile.fast_math),
not one C library call per element, and stay within a few ulps of onnxruntime."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import helper

tvm = pytest.importorskip("tvm")
pytest.importorskip("onnxruntime")

from tests.compile.test_schedules import _model, compile_and_run  # noqa: E402

LIBRARY_CALLS = ("T.exp(", "T.sigmoid(", "T.tanh(", "T.erf(")


@pytest.mark.parametrize(
    "nodes",
    [
        [helper.make_node("Sigmoid", ["x"], ["s"]), helper.make_node("Mul", ["x", "s"], ["y"])],  # SiLU
        [helper.make_node("Tanh", ["x"], ["y"])],
        [helper.make_node("Erf", ["x"], ["y"])],
        [helper.make_node("Exp", ["x"], ["y"])],
        [helper.make_node("Softmax", ["x"], ["y"], axis=-1)],
    ],
    ids=["silu", "tanh", "erf", "exp", "softmax"],
)
def test_transcendentals_are_inline_arithmetic_and_match_onnxruntime(nodes, tmp_path):
    shape = [3, 37, 64]
    got, expected, optimized = compile_and_run(_model(nodes, shape, "y", {}), shape, tmp_path)
    np.testing.assert_allclose(got, expected, rtol=2e-6, atol=1e-7)
    scripts = [func.script() for _, func in optimized.functions.items() if isinstance(func, tvm.tirx.PrimFunc)]
    assert scripts and not any(call in script for script in scripts for call in LIBRARY_CALLS)


def test_extreme_inputs_saturate_like_the_library(tmp_path):
    """Sigmoid of large magnitudes: 0 and 1, never NaN (the fast exp clamps its argument)."""
    from tvm import relax

    from edgesdk.compile import lowering

    proto = _model([helper.make_node("Sigmoid", ["x"], ["y"])], [8], "y", {})
    (tmp_path / "m.onnx").write_bytes(proto.SerializeToString())
    mod, _, _, _ = lowering.import_onnx(tmp_path / "m.onnx", {"x": [8]})
    optimized, target = lowering.optimize(mod, {"kind": "llvm"})
    vm = relax.VirtualMachine(relax.build(optimized, target, relax_pipeline=None), tvm.cpu())
    x = np.array([-1e4, -100, -20, 0, 20, 100, 1e4, 0.5], np.float32)
    got = vm["main"](tvm.runtime.tensor(x)).numpy()
    np.testing.assert_allclose(got, 0.5 * (1 + np.tanh(x.astype(np.float64) / 2)), rtol=1e-6, atol=1e-30)
