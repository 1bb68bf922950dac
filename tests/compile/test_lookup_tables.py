"""Elementwise chains over one 8-bit tensor become 256-entry tables (edgesdk.compile.lookup_tables),
max pools and data movement run on the 8-bit tensor, and the results are onnxruntime's."""

from __future__ import annotations

import re

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

tvm = pytest.importorskip("tvm")
ort = pytest.importorskip("onnxruntime")

from tests.compile.test_schedules import HOST  # noqa: E402


def _qdq_model(body, out: str, dtype=TensorProto.UINT8, shape=(1, 8, 13, 11), extra=None) -> onnx.ModelProto:
    """x -> Q -> DQ -> ``body`` nodes -> ``out``, with scalar scales s0..s3 and zero points z0..z3."""
    zero = 128 if dtype == TensorProto.UINT8 else 0
    numpy_dtype = np.uint8 if dtype == TensorProto.UINT8 else np.int8
    inits = [numpy_helper.from_array(np.array(scale, np.float32), f"s{i}") for i, scale in enumerate((0.03, 0.021, 0.05, 0.013))]
    inits += [numpy_helper.from_array(np.array(zero + offset, numpy_dtype), f"z{i}") for i, offset in enumerate((0, -3, 5, 0))]
    inits += [numpy_helper.from_array(value, name) for name, value in (extra or {}).items()]
    nodes = [helper.make_node("QuantizeLinear", ["x", "s0", "z0"], ["q0"]), helper.make_node("DequantizeLinear", ["q0", "s0", "z0"], ["d0"]), *body]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(shape))], [helper.make_tensor_value_info(out, TensorProto.FLOAT, None)], inits
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _q(name: str, out: str, index: int) -> list:
    """Quantize ``name`` by scale/zero point ``index`` and dequantize it again into ``out``."""
    return [
        helper.make_node("QuantizeLinear", [name, f"s{index}", f"z{index}"], [f"{out}_q"]),
        helper.make_node("DequantizeLinear", [f"{out}_q", f"s{index}", f"z{index}"], [out]),
    ]


SILU = [helper.make_node("Sigmoid", ["d0"], ["sig"]), helper.make_node("Mul", ["d0", "sig"], ["silu"]), *_q("silu", "y", 1)]
TANH_SCALED = [helper.make_node("Tanh", ["d0"], ["t"]), helper.make_node("Mul", ["t", "three"], ["t3"]), *_q("t3", "y", 2)]
POOL = [helper.make_node("MaxPool", ["d0"], ["p"], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]), *_q("p", "y", 3)]
SAME_SCALE = [helper.make_node("Reshape", ["d0", "flat"], ["r"]), *_q("r", "y", 0)]
PER_CHANNEL = [helper.make_node("Mul", ["d0", "gain"], ["m"]), *_q("m", "y", 1)]


def _run(proto, tmp_path, shape=(1, 8, 13, 11)):
    """(our output, onnxruntime's without graph optimisations: the model's own arithmetic, the
    imported Relax main as text, the optimized module)."""
    from tvm import relax

    from edgesdk.compile import lowering

    onnx.save(proto, tmp_path / "m.onnx")
    mod, weights, _, _ = lowering.import_onnx(tmp_path / "m.onnx", {"x": list(shape)})
    optimized, target = lowering.optimize(mod, HOST)
    vm = relax.VirtualMachine(relax.build(optimized, target, relax_pipeline=None), tvm.cpu())
    x = (np.random.default_rng(3).standard_normal(shape) * 2).astype(np.float32)
    got = vm["main"](tvm.runtime.tensor(x), *(tvm.runtime.tensor(w) for w in weights)).numpy()
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    expected = ort.InferenceSession(proto.SerializeToString(), options, providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    return got, expected, mod["main"].script(), optimized


@pytest.mark.parametrize("dtype", [TensorProto.UINT8, TensorProto.INT8], ids=["uint8", "int8"])
@pytest.mark.parametrize("body", [SILU, TANH_SCALED], ids=["silu", "tanh_times_3"])
def test_an_elementwise_chain_is_one_table_lookup_with_the_same_results(body, dtype, tmp_path):
    proto = _qdq_model(body, "y", dtype, extra={"three": np.array(3.0, np.float32)})
    got, expected, main, _ = _run(proto, tmp_path)
    assert "lookup_table" in main and "sigmoid" not in main and "tanh" not in main
    np.testing.assert_array_equal(got, expected)


def test_a_max_pool_runs_on_the_8_bit_tensor_then_requantizes_by_table(tmp_path):
    got, expected, main, optimized = _run(_qdq_model(POOL, "y"), tmp_path)
    np.testing.assert_array_equal(got, expected)
    assert re.search(r'dtype="uint8"\) = R\.nn\.max_pool2d', main)  # pooled in 8 bits
    pools = [func.script() for gvar, func in optimized.functions.items() if "max_pool2d" in gvar.name_hint]
    assert pools and all('"uint8"' in script and "lookup_table" in script for script in pools)


def test_a_requantize_to_the_same_scale_and_zero_point_disappears(tmp_path):
    proto = _qdq_model(SAME_SCALE, "y", extra={"flat": np.array([1, -1], np.int64)})
    got, expected, main, _ = _run(proto, tmp_path)
    np.testing.assert_array_equal(got, expected)
    assert "lookup_table" not in main and main.count("R.quantize") == 1 and main.count("R.dequantize") == 1


def test_per_channel_constants_stay_in_float(tmp_path):
    """A table is per tensor: a per-channel gain is left as the model wrote it, still correct."""
    proto = _qdq_model(PER_CHANNEL, "y", extra={"gain": np.linspace(0.5, 2, 8, dtype=np.float32).reshape(1, 8, 1, 1)})
    got, expected, main, _ = _run(proto, tmp_path)
    assert "lookup_table" not in main
    np.testing.assert_allclose(got, expected, atol=0.021 + 1e-6)  # at most one step of the output scale


@pytest.mark.parametrize("dtype", ["float32", "int8", "uint8"])
@pytest.mark.parametrize(
    "shape,kernel,stride,pads",
    [((1, 5, 13, 17), 3, 1, (1, 1, 1, 1)), ((2, 3, 16, 15), 3, 2, (0, 1, 1, 0)), ((1, 4, 9, 7), 2, 2, (0, 0, 0, 0))],
)
def test_pools_accumulate_in_registers_and_match_numpy(dtype, shape, kernel, stride, pads):
    """The window rule (edgesdk.compile.schedules.window): max pools of every dtype, prime widths,
    asymmetric padding, batch 2, against a numpy reference."""
    from tvm import relax

    from edgesdk.compile import lowering

    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType(list(shape), dtype))
    with bb.function("main", [x]):
        with bb.dataflow():
            out = bb.emit_output(relax.op.nn.max_pool2d(x, kernel, stride, pads))
        bb.emit_func_output(out)
    optimized, target = lowering.optimize(bb.get(), HOST)
    (script,) = [func.script() for func in optimized.functions.values() if isinstance(func, tvm.tirx.PrimFunc)]
    assert 'scope="local"' in script and "T.vectorized" in script
    rng = np.random.default_rng(1)
    data = rng.integers(-128, 128, shape).astype(dtype) if dtype != "uint8" else rng.integers(0, 256, shape).astype(dtype)
    vm = relax.VirtualMachine(relax.build(optimized, target, relax_pipeline=None), tvm.cpu())
    got = vm["main"](tvm.runtime.tensor(data)).numpy()
    low = -np.inf if dtype == "float32" else np.iinfo(dtype).min
    top, left, bottom, right = pads
    padded = np.pad(data.astype(np.float64), [(0, 0), (0, 0), (top, bottom), (left, right)], constant_values=low)
    rows = (padded.shape[2] - kernel) // stride + 1
    cols = (padded.shape[3] - kernel) // stride + 1
    windows = np.stack([padded[:, :, i : i + stride * rows : stride, j : j + stride * cols : stride] for i in range(kernel) for j in range(kernel)])
    np.testing.assert_array_equal(got, windows.max(axis=0).astype(dtype))


def test_hard_swish_as_the_frontend_writes_it_is_a_table(tmp_path):
    """HardSwish imports as multiply, add, isnan/where (NaN-propagating min and max), divide..."""
    proto = _qdq_model([helper.make_node("HardSwish", ["d0"], ["h"]), *_q("h", "y", 2)], "y")
    got, expected, main, _ = _run(proto, tmp_path)
    assert "lookup_table" in main and "R.where" not in main
    np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("channels", [8, 3], ids=["8_channels", "3_channels_paired_with_a_zero_one"])
def test_a_padded_int8_conv_packs_its_zero_point_and_fuses_the_table(channels, tmp_path):
    """Conv (zero point 128 + 5 in its padding) -> SiLU: one kernel, pairwise multiply-adds (an
    odd input channel count gets one more, of zero weights), the activation as a table in its
    epilogue, and onnxruntime's integers but for rounding ties."""
    rng = np.random.default_rng(4)
    weights = {"wq": rng.integers(-127, 128, (16, channels, 3, 3)).astype(np.int8), "ws": np.full(16, 0.004, np.float32), "wz": np.zeros(16, np.int8)}
    body = [
        helper.make_node("DequantizeLinear", ["wq", "ws", "wz"], ["wd"], axis=0),
        helper.make_node("Conv", ["d0", "wd"], ["c"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        *_q("c", "cd", 2),
        helper.make_node("Sigmoid", ["cd"], ["sig"]),
        helper.make_node("Mul", ["cd", "sig"], ["silu"]),
        *_q("silu", "y", 1),
    ]
    shape = (1, channels, 13, 16)
    got, expected, main, optimized = _run(_qdq_model(body, "y", extra=weights, shape=shape), tmp_path, shape=shape)
    # The conv's requantize multiplies by 1/scale (integer_ops): at an exact tie it may round the
    # other way, one step (0.05) of the SiLU's input, at most ~1.1 steps of its output after it.
    assert np.mean(got != expected) <= 0.01 and np.abs(got - expected).max() <= 0.05 * 1.1 + 0.021 + 1e-6
    convs = [func.script() for gvar, func in optimized.functions.items() if gvar.name_hint.startswith("fused_conv2d")]
    assert len(convs) == 1 and "lookup_table" in convs[0] and "pmadd" in convs[0]
    assert not any(gvar.name_hint.startswith(("pad", "lookup_table")) for gvar in optimized.get_global_vars())


def test_two_slices_of_one_tensor_are_two_sources_not_one_table(tmp_path):
    """A gated unit, first half x sigmoid(second half): the same 8-bit tensor, the same shapes, but
    different values; it must stay a float chain (a table has one input)."""
    extra = {"starts0": np.array([0], np.int64), "ends0": np.array([4], np.int64), "starts1": np.array([4], np.int64), "ends1": np.array([8], np.int64)}
    extra |= {"axes": np.array([1], np.int64)}
    body = [
        helper.make_node("Slice", ["d0", "starts0", "ends0", "axes"], ["a"]),
        helper.make_node("Slice", ["d0", "starts1", "ends1", "axes"], ["b"]),
        helper.make_node("Sigmoid", ["b"], ["gate"]),
        helper.make_node("Mul", ["a", "gate"], ["glu"]),
        *_q("glu", "y", 1),
    ]
    got, expected, main, _ = _run(_qdq_model(body, "y", extra=extra), tmp_path)
    assert "lookup_table" not in main
    np.testing.assert_allclose(got, expected, atol=0.021 + 1e-6)  # float chain: at most a rounding tie apart
