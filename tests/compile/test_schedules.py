"""The CPU schedule rules (edgesdk.compile.schedules): numerics against onnxruntime on awkward
shapes, and proof that a rule actually scheduled the kernel (a parallel or vectorised loop)."""

from __future__ import annotations

import re

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

tvm = pytest.importorskip("tvm")
ort = pytest.importorskip("onnxruntime")

HOST = {"kind": "llvm", "mtriple": "x86_64-linux-gnu"}


def _model(nodes, shape, output, weights) -> onnx.ModelProto:
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info(output, TensorProto.FLOAT, None)],
        [numpy_helper.from_array(value, name) for name, value in weights.items()],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def conv(shape, out_channels, kernel, stride=1, pads=(0, 0, 0, 0), group=1, epilogue="Relu", residual=False) -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    weights = {
        "w": (rng.standard_normal((out_channels, shape[1] // group, kernel, kernel)) * 0.1).astype(np.float32),
        "b": rng.standard_normal(out_channels).astype(np.float32),
    }
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["y"], kernel_shape=[kernel, kernel], strides=[stride, stride], pads=list(pads), group=group)]
    if epilogue == "Clip":
        weights |= {"lo": np.array(0.0, np.float32), "hi": np.array(6.0, np.float32)}
        nodes.append(helper.make_node("Clip", ["y", "lo", "hi"], ["z"]))
    else:
        nodes.append(helper.make_node(epilogue, ["y"], ["z"]))
    if residual:  # same shape as the output: only with stride 1, same padding, in == out channels
        nodes.append(helper.make_node("Add", ["z", "x"], ["r"]))
    return _model(nodes, shape, "r" if residual else "z", weights)


def matmul(shape, n, transposed=False, epilogue="Relu") -> onnx.ModelProto:
    rng = np.random.default_rng(1)
    k = shape[-1]
    bias = rng.standard_normal(n).astype(np.float32)
    if transposed:  # Gemm with transB: the frontend transposes the weight first
        weights = {"w": (rng.standard_normal((n, k)) * 0.1).astype(np.float32), "b": bias}
        nodes = [helper.make_node("Gemm", ["x", "w", "b"], ["y"], transB=1)]
    else:
        weights = {"w": (rng.standard_normal((k, n)) * 0.1).astype(np.float32), "b": bias}
        nodes = [helper.make_node("MatMul", ["x", "w"], ["m"]), helper.make_node("Add", ["m", "b"], ["y"])]
    nodes.append(helper.make_node(epilogue, ["y"], ["z"]))
    return _model(nodes, shape, "z", weights)


def compile_and_run(proto: onnx.ModelProto, shape, tmp_path, target=HOST):
    """(TVM output, onnxruntime output, the optimized module)."""
    from tvm import relax

    from edgesdk.compile import lowering

    onnx.save(proto, tmp_path / "m.onnx")
    mod, weights, _, _ = lowering.import_onnx(tmp_path / "m.onnx", {"x": list(shape)})
    optimized, tvm_target = lowering.optimize(mod, target)
    vm = relax.VirtualMachine(relax.build(optimized, tvm_target, relax_pipeline=None), tvm.cpu())
    x = np.random.default_rng(2).standard_normal(shape).astype(np.float32)
    out = vm["main"](tvm.runtime.tensor(x), *(tvm.runtime.tensor(w) for w in weights))
    expected = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    return out.numpy(), expected, optimized


def scheduled_kernels(mod) -> dict[str, str]:
    return {
        gvar.name_hint: func.script()
        for gvar, func in mod.functions.items()
        if isinstance(func, tvm.tirx.PrimFunc) and "tir.is_scheduled" in (func.attrs or {})
    }


def assert_contraction_scheduled(mod, parallel=True) -> None:
    kernels = [script for name, script in scheduled_kernels(mod).items() if "conv2d" in name or "matmul" in name]
    assert kernels, "no conv/matmul kernel was scheduled"
    for script in kernels:
        assert "T.vectorized(" in script and 'scope="local"' in script
        assert "T.parallel(" in script or not parallel


# name: (model, input shape, whether the kernel is big enough to run on threads)
CASES = {
    "matmul_prime": (lambda: matmul([37, 53], 97), [37, 53], False),
    "matmul_gemv": (lambda: matmul([1, 64], 1024, epilogue="Sigmoid"), [1, 64], False),
    "gemm_transposed_b": (lambda: matmul([67, 96], 130, transposed=True), [67, 96], True),
    "batch_matmul_tanh": (lambda: matmul([3, 29, 64], 96, epilogue="Tanh"), [3, 29, 64], True),
    "conv3x3_same_residual": (lambda: conv([1, 16, 19, 19], 16, 3, pads=(1, 1, 1, 1), residual=True), [1, 16, 19, 19], True),
    "conv1x1_batch2": (lambda: conv([2, 24, 14, 14], 40, 1), [2, 24, 14, 14], False),
    "conv_stride2_asymmetric": (lambda: conv([2, 5, 23, 17], 7, 3, stride=2, pads=(0, 1, 1, 2), epilogue="Clip"), [2, 5, 23, 17], False),
    "conv_grouped": (lambda: conv([1, 12, 13, 13], 18, 3, pads=(1, 1, 1, 1), group=3), [1, 12, 13, 13], False),
    "conv_depthwise_stride2": (lambda: conv([1, 32, 29, 29], 32, 3, stride=2, pads=(1, 1, 1, 1), group=32, epilogue="Clip"), [1, 32, 29, 29], False),
    "conv_depthwise_batch2_odd_width": (lambda: conv([2, 12, 9, 11], 12, 3, pads=(1, 0, 2, 1), group=12), [2, 12, 9, 11], False),
    "conv_depthwise_stride2_odd_width": (lambda: conv([1, 8, 15, 21], 8, 5, stride=2, pads=(2, 1, 2, 2), group=8), [1, 8, 15, 21], False),
    "conv_1x1_output_width_1": (lambda: conv([1, 64, 1, 1], 96, 1), [1, 64, 1, 1], False),
    # Output-channel vectorised (OC a multiple of the vector): strided, asymmetric, odd widths, batch 2.
    "conv_channels_stride2_asymmetric_batch2": (
        lambda: conv([2, 6, 23, 17], 16, 3, stride=2, pads=(0, 1, 1, 2), epilogue="Clip"),
        [2, 6, 23, 17],
        False,
    ),
    "conv_channels_5x5_width_7": (lambda: conv([1, 20, 7, 7], 24, 5, pads=(2, 2, 2, 2)), [1, 20, 7, 7], False),
    "conv_channels_12_not_a_multiple_of_8": (lambda: conv([1, 8, 15, 15], 12, 3, pads=(1, 1, 1, 1), epilogue="Sigmoid"), [1, 8, 15, 15], False),
    "conv_channels_large_parallel": (lambda: conv([1, 32, 28, 28], 64, 3, pads=(1, 1, 1, 1)), [1, 32, 28, 28], True),
}


@pytest.mark.parametrize("case", list(CASES))
def test_scheduled_kernels_match_onnxruntime(case, tmp_path):
    make, shape, parallel = CASES[case]
    got, expected, optimized = compile_and_run(make(), shape, tmp_path)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)
    assert_contraction_scheduled(optimized, parallel=parallel)


def test_the_epilogue_is_computed_in_the_write_back(tmp_path):
    """Bias, relu and the residual add land in the register block's write-back: the kernel keeps
    only its padded input, the packed weights and the local accumulator, no full-size conv result."""
    make, shape, _ = CASES["conv3x3_same_residual"]
    _, _, optimized = compile_and_run(make(), shape, tmp_path)
    (script,) = [script for name, script in scheduled_kernels(optimized).items() if "conv2d" in name]
    allocations = [line for line in script.splitlines() if "T.sblock_alloc_buffer(" in line]
    assert len(allocations) == 3 and any("pad_temp" in line for line in allocations) and any('scope="local"' in line for line in allocations)
    # 16 output channels on SSE: [OC/8, IC, KH, KW, 8] weight panels, the channel block vectorised.
    assert any("(T.int64(2), T.int64(16), T.int64(3), T.int64(3), T.int64(8))" in line for line in allocations)
    assert "T.vectorized(T.int64(8))" in script


def test_aarch64_kernels_get_neon_blocks_and_c_kernels_are_only_scheduled_in_place(tmp_path):
    from edgesdk.compile import lowering

    onnx.save(matmul([16, 64], 64), tmp_path / "m.onnx")
    mod, _, _, _ = lowering.import_onnx(tmp_path / "m.onnx", {"x": [16, 64]})
    arm, _ = lowering.optimize(mod, {"kind": "llvm", "mtriple": "aarch64-linux-gnu", "mcpu": "cortex-a78"})
    (script,) = scheduled_kernels(arm).values()
    # NEON's 32 registers: 8 rows unrolled x 2 vectors of 4 lanes (baseline x86-64 has 16: 4 x 2).
    assert "T.unroll(T.int64(8))" in script and "T.vectorized(T.int64(8))" in script
    mcu, _ = lowering.optimize(mod, {"kind": "c", "mcpu": "cortex-m7", "march": "thumbv7em"})
    (script,) = scheduled_kernels(mcu).values()
    assert 'scope="local"' in script and "T.vectorized" not in script and "T.unroll" not in script and "T.parallel" not in script


def _fused_kernels(proto: onnx.ModelProto, shape, tmp_path) -> dict:
    """The fused PrimFuncs of ``proto`` as TVM's fusion leaves them (unscheduled)."""
    from edgesdk.compile import lowering

    onnx.save(proto, tmp_path / "m.onnx")
    mod, _, _, _ = lowering.import_onnx(tmp_path / "m.onnx", {"x": list(shape)})
    target = tvm.target.Target({"kind": "c"})
    with target:
        fused = tvm.transform.Sequential(lowering.fusion_passes(target))(mod)
    return {gvar.name_hint: func for gvar, func in fused.functions.items() if isinstance(func, tvm.tirx.PrimFunc)}


def _run_prim_func(func, arrays: list[np.ndarray]) -> np.ndarray:
    """Run ``func`` (compiled for this host) on ``arrays`` followed by a zeroed output; the output."""
    executable = tvm.compile(tvm.IRModule({"main": func.with_attr("global_symbol", "main")}), target="llvm")
    out = func.params[-1]  # a parameter is its buffer (shape, dtype)
    output = tvm.runtime.tensor(np.zeros([int(dim) for dim in out.shape], str(out.dtype)))
    executable["main"](*(tvm.runtime.tensor(array) for array in arrays), output)
    return output.numpy()


def _scratch_bytes(func) -> int:
    """The workspace ``func`` asks for at once as TVM's C code (buffers compacted by lowering)."""
    from edgesdk.compile.workspace import kernel_workspaces

    executable = tvm.compile(tvm.IRModule({"main": func.with_attr("global_symbol", "main")}), target="c")
    return sum(kernel_workspaces(executable.mod.inspect_source()).values())


@pytest.mark.parametrize("case", [name for name in CASES if name.startswith("conv") or name.startswith("matmul")])
def test_scheduling_in_place_keeps_the_results_and_drops_the_full_size_intermediates(case, tmp_path):
    """The microcontroller rule (C target): the same numbers as the unscheduled kernel, and less
    scratch: no buffer of the whole result, a padded copy of only the rows one output row reads."""
    from edgesdk.compile.schedules import schedule_in_place

    make, shape, _ = CASES[case]
    rng = np.random.default_rng(3)
    for name, func in _fused_kernels(make(), shape, tmp_path).items():
        scheduled = schedule_in_place(func)
        if scheduled is None:
            assert "conv2d" not in name and "matmul" not in name, f"{name} was not scheduled"
            continue
        params = list(func.params)
        arrays = [rng.standard_normal([int(dim) for dim in buffer.shape]).astype(str(buffer.dtype)) for buffer in params[:-1]]
        np.testing.assert_allclose(_run_prim_func(scheduled, arrays), _run_prim_func(func, arrays), rtol=1e-5, atol=1e-5)
        input_bytes, output_bytes = (int(np.prod([int(dim) for dim in param.shape])) * 4 for param in (params[0], params[-1]))
        before, after = _scratch_bytes(func), _scratch_bytes(scheduled)
        # (A kernel TVM gave no scratch at all may gain the accumulator's one aligned block.)
        assert (after < before or after == 64) and after < max(input_bytes, output_bytes), f"{name}: {before} -> {after} bytes of scratch"


@pytest.mark.parametrize(
    ("target", "lanes"),
    [
        ({"kind": "llvm", "mtriple": "x86_64-linux-gnu"}, 4),
        ({"kind": "llvm", "mtriple": "x86_64-linux-gnu", "mattr": ["+avx2", "+fma"]}, 8),
        ({"kind": "llvm", "mtriple": "x86_64-linux-gnu", "mcpu": "znver4"}, 16),
        ({"kind": "llvm", "mtriple": "aarch64-linux-gnu", "mcpu": "cortex-a78"}, 4),
        ({"kind": "c", "mcpu": "cortex-m7", "march": "thumbv7em"}, None),
    ],
)
def test_vector_width_comes_from_the_target(target, lanes):
    from edgesdk.compile.schedules import cpu_spec

    spec = cpu_spec(tvm.target.Target(target))
    assert (spec.lanes if spec else None) == lanes


def test_functions_without_a_contraction_only_get_parallel_loops(tmp_path):
    """Softmax is no contraction: its row loop goes parallel, its arithmetic is untouched."""
    proto = _model([helper.make_node("Softmax", ["x"], ["y"], axis=-1)], [256, 512], "y", {})
    got, expected, optimized = compile_and_run(proto, [256, 512], tmp_path)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    (script,) = scheduled_kernels(optimized).values()
    assert "T.parallel(" in script and "T.vectorized(" not in script


def test_int8_matmul_accumulates_exactly_in_int32():
    """int8 x int8 -> int32 (edgesdk.compile.integer_ops' kernels): scheduled, and bit-exact."""
    from tvm import relax

    from edgesdk.compile import lowering

    builder = relax.BlockBuilder()
    x, w = relax.Var("x", relax.TensorType([45, 70], "int8")), relax.Var("w", relax.TensorType([70, 131], "int8"))
    with builder.function("main", [x, w]):
        with builder.dataflow():
            out = builder.emit_output(relax.op.matmul(x, w, out_dtype="int32"))
        builder.emit_func_output(out)
    optimized, target = lowering.optimize(builder.get(), HOST)
    assert_contraction_scheduled(optimized, parallel=False)  # 0.4M multiply-adds: below the threading threshold
    rng = np.random.default_rng(3)
    a, b = rng.integers(-128, 128, (45, 70), dtype=np.int8), rng.integers(-128, 128, (70, 131), dtype=np.int8)
    vm = relax.VirtualMachine(relax.build(optimized, target, relax_pipeline=None), tvm.cpu())
    got = vm["main"](tvm.runtime.tensor(a), tvm.runtime.tensor(b)).numpy()
    np.testing.assert_array_equal(got, a.astype(np.int32) @ b.astype(np.int32))


def _int8_conv(batch, channels, out_channels, size, kernel, stride, activation):
    from tvm import relax

    builder = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType([batch, channels, *size], activation))
    w = relax.Var("w", relax.TensorType([out_channels, channels, kernel, kernel], "int8"))
    with builder.function("main", [x, w]):
        with builder.dataflow():
            out = builder.emit_output(relax.op.nn.conv2d(x, w, strides=stride, out_dtype="int32"))
        builder.emit_func_output(out)
    return builder.get()


def _reference_conv(x, w, stride):
    kernel = w.shape[2]
    rows, cols = (x.shape[2] - kernel) // stride + 1, (x.shape[3] - kernel) // stride + 1
    out = np.zeros((x.shape[0], w.shape[0], rows, cols), np.int64)
    for dy in range(kernel):
        for dx in range(kernel):
            window = x[:, :, dy : dy + stride * rows : stride, dx : dx + stride * cols : stride].astype(np.int64)
            out += np.einsum("oc,nchw->nohw", w[:, :, dy, dx].astype(np.int64), window)
    return out


@pytest.mark.parametrize(
    ("batch", "channels", "out_channels", "size", "kernel", "stride", "activation"),
    [
        (1, 64, 32, (14, 14), 3, 1, "uint8"),
        (2, 6, 16, (13, 17), 3, 2, "int8"),  # batch 2, stride 2, prime widths: one-column blocks
        (1, 32, 24, (7, 7), 1, 1, "int8"),  # 1x1, 24 channels: three vectors of 8 (SSE: 6 of 4)
        (1, 3, 16, (11, 11), 3, 1, "uint8"),  # odd input channels: no pairs, the channel path
        (1, 16, 20, (9, 9), 5, 1, "int8"),  # 20 channels: 5 SSE vectors, but no whole AVX2 vectors
    ],
)
@pytest.mark.parametrize("mattr", [[], ["+avx2", "+fma"]])
def test_int8_conv_multiplies_in_16_bit_pairs_exactly(batch, channels, out_channels, size, kernel, stride, activation, mattr):
    """8-bit convs take the pairwise multiply-add (edgesdk.compile.schedules.integer) where the input
    channels pair up and the output channels fill vectors: bit-exact, and the intrinsic is there."""
    from tvm import relax

    from edgesdk.compile import lowering
    from edgesdk.compile.targets import runs_here

    target_json = {**HOST, "mattr": mattr} if mattr else HOST
    if not runs_here(target_json):
        pytest.skip("this CPU lacks " + ",".join(mattr))
    optimized, target = lowering.optimize(_int8_conv(batch, channels, out_channels, size, kernel, stride, activation), target_json)
    (script,) = scheduled_kernels(optimized).values()
    lanes = 8 if mattr else 4
    assert ("pmadd" in script) == (channels % 2 == 0 and out_channels % lanes == 0)
    rng = np.random.default_rng(5)
    low = 0 if activation == "uint8" else -128
    x = rng.integers(low, low + 256, (batch, channels, *size)).astype(activation)
    w = rng.integers(-128, 128, (out_channels, channels, kernel, kernel)).astype(np.int8)
    vm = relax.VirtualMachine(relax.build(optimized, target, relax_pipeline=None), tvm.cpu())
    got = vm["main"](tvm.runtime.tensor(x), tvm.runtime.tensor(w)).numpy()
    np.testing.assert_array_equal(got, _reference_conv(x, w, stride))


@pytest.mark.parametrize("group", [1, 8], ids=["conv", "depthwise"])
def test_padding_stages_copy_their_interior_without_a_branch(group, tmp_path):
    """spatial.partition_padding: the pad stage's loops are split at the input's edges (asymmetric
    padding here: rows 1 + 13 + 0, columns 2 + 11 + 1), so the interior is a plain copy once TVM
    simplifies its condition within the loop's range; the results stay onnxruntime's."""
    shape = [1, 8, 13, 11]
    got, expected, optimized = compile_and_run(conv(shape, 8, 3, pads=(1, 2, 0, 1), group=group), shape, tmp_path)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)
    (script,) = [s for name, s in scheduled_kernels(optimized).items() if "conv2d" in name]
    assert re.search(r"for \w+ in range\(T\.int64\(1\), T\.int64\(14\)\)", script)  # interior rows
    assert re.search(r"for \w+ in range\(T\.int64\(2\), T\.int64\(13\)\)", script)  # interior columns


def test_a_strided_depthwise_input_is_deinterleaved_phase_by_phase(tmp_path):
    """spatial._copy_by_phase: the padded input of a stride-2 depthwise conv is stored
    [.., x % 2, x // 2]; it is copied phase by phase (the columns innermost: contiguous stores)."""
    shape = [1, 8, 13, 20]
    got, expected, optimized = compile_and_run(conv(shape, 8, 3, stride=2, pads=(1, 1, 1, 1), group=8), shape, tmp_path)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)
    (script,) = [s for name, s in scheduled_kernels(optimized).items() if "conv2d" in name]
    phase = re.search(r"for (\w+), (\w+) in T\.grid\(T\.int64\(2\), T\.int64\(11\)\):", script)  # phases outside columns
    assert phase, script
    assert f"T.int64(22), {phase[2]} * T.int64(2) + {phase[1]})" in script  # column = 2 x c + phase


@pytest.mark.parametrize("stride", [1, 2])
def test_int8_depthwise_convs_are_scheduled_and_exact(stride):
    """An int8 depthwise conv takes the depthwise rule (stride 2: its input deinterleaved, padded
    with an int8 filler; a float filler made TVM refuse the layout and left the conv unscheduled),
    and computes exactly what the int32 reference does, padding included."""
    from tvm import relax

    from edgesdk.compile import lowering

    channels, size = 24, (17, 20)
    builder = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType([1, channels, *size], "int8"))
    w = relax.Var("w", relax.TensorType([channels, 1, 3, 3], "int8"))
    with builder.function("main", [x, w]):
        with builder.dataflow():
            out = builder.emit_output(relax.op.nn.conv2d(x, w, strides=stride, padding=1, groups=channels, out_dtype="int32"))
        builder.emit_func_output(out)
    optimized, target = lowering.optimize(builder.get(), HOST)
    assert len(scheduled_kernels(optimized)) == 1
    rng = np.random.default_rng(9)
    xs = rng.integers(-128, 128, (1, channels, *size)).astype(np.int8)
    ws = rng.integers(-128, 128, (channels, 1, 3, 3)).astype(np.int8)
    vm = relax.VirtualMachine(relax.build(optimized, target, relax_pipeline=None), tvm.cpu())
    got = vm["main"](tvm.runtime.tensor(xs), tvm.runtime.tensor(ws)).numpy()
    padded = np.pad(xs, ((0, 0), (0, 0), (1, 1), (1, 1)))
    expected = np.stack([_reference_conv(padded[:, c : c + 1], ws[c : c + 1], stride)[:, 0] for c in range(channels)], axis=1)
    np.testing.assert_array_equal(got, expected)


def test_an_odd_channel_count_pairs_up_without_a_channel_branch_in_the_copy():
    """integer_ops._padded_conv: an RGB-like input (3 channels) meets weights with a 4th, zero
    channel so the channels pair; the extra channel repeats the last real one instead of testing
    the channel in the padding condition, so the copy's interior is unconditional. Exact against
    the int32 reference with the zero point as the spatial padding."""
    from tvm import relax

    from edgesdk.compile import lowering
    from edgesdk.compile.integer_ops import _padded_conv
    from edgesdk.compile.targets import runs_here

    target_json = {**HOST, "mattr": ["+avx2", "+fma"]}
    if not runs_here(target_json):
        pytest.skip("this CPU lacks AVX2")
    rng = np.random.default_rng(11)
    zero, size = -3, (13, 11)
    xs = rng.integers(-128, 128, (1, 3, *size)).astype(np.int8)
    ws = rng.integers(-128, 128, (16, 3, 3, 3)).astype(np.int8)
    padded_weights = np.concatenate([ws, np.zeros_like(ws[:, :1])], axis=1)
    builder = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType([1, 3, *size], "int8"))
    with builder.function("main", [x]):
        with builder.dataflow():
            out = builder.emit_output(builder.emit_te(_padded_conv, x, relax.const(padded_weights), [1, 1, 1, 1, 1], zero, (2, 2), (1, 1), 1))
        builder.emit_func_output(out)
    optimized, target = lowering.optimize(builder.get(), target_json)
    (script,) = scheduled_kernels(optimized).values()
    assert "pmadd" in script
    assert "T.min(v1, T.int64(2))" in script  # the extra channel reads the last real one
    assert not re.search(r"\bv1 < T\.int64\(3\)", script)  # and no condition tests the channel
    vm = relax.VirtualMachine(relax.build(optimized, target, relax_pipeline=None), tvm.cpu())
    got = vm["main"](tvm.runtime.tensor(xs)).numpy()
    expected = _reference_conv(np.pad(xs, ((0, 0), (0, 0), (1, 1), (1, 1)), constant_values=zero), ws, 2)
    np.testing.assert_array_equal(got, expected)
