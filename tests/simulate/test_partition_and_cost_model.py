import pytest

import edgesdk
from edgesdk.compile.kernels import Kernel, ModelAnalysis, Tensor
from edgesdk.errors import CheckFailed, UserInputError
from edgesdk.simulate.cost_model import simulate
from edgesdk.simulate.partition import partition, preference


def kernel(name, op_classes, flops, inputs, out_shape, dtype="float32"):
    return Kernel(name=name, op_classes=op_classes, flops=flops, inputs=inputs, outputs=[Tensor(shape=out_shape, dtype=dtype)])


def small_model(dtype="float32", side=8):
    x = Tensor(shape=[1, 16, side, side], dtype=dtype, source="input")
    w = Tensor(shape=[16, 16, 3, 3], dtype=dtype, source="weight")
    conv = kernel("fused_conv2d_add_relu", ["conv", "activation"], 2 * 16 * 16 * 9 * side * side, [x, w], [1, 16, side, side], dtype)
    act = Tensor(shape=[1, 16, side, side], dtype=dtype, producer=0)
    topk = kernel("topk", ["sort"], 0, [act], [1, 16, side, side], dtype)
    act2 = Tensor(shape=[1, 16, side, side], dtype=dtype, producer=1)
    conv2 = kernel("fused_conv2d1", ["conv"], 2 * 16 * 16 * 9 * side * side, [act2, w], [1, 16, side, side], dtype)
    return ModelAnalysis(kernels=[conv, topk, conv2])


def test_units_are_tried_npu_first():
    assert preference(edgesdk.get_device("phone")) == ["npu", "gpu", "cpu"]
    assert preference(edgesdk.get_device("mcu")) == ["cpu"]


def test_an_op_no_accelerator_runs_falls_back_to_the_cpu_with_reasons_and_a_transfer():
    phone = edgesdk.get_device("phone")
    placed = partition(small_model("float16"), phone)
    assert placed.units == ["npu", "cpu", "npu"]
    by_unit = {(f.op, f.from_unit, f.to_unit): f.reason for f in placed.fallbacks}
    assert by_unit[("topk", "npu", "cpu")] == "unsupported op class sort"
    assert ("topk", "gpu", "cpu") in by_unit
    estimate = simulate(small_model("float16"), placed, phone)
    layers = estimate.per_layer
    link = phone.interconnect
    one = (16 * 64 * 2 / link.bandwidth_bytes_per_s + link.latency_s) * 1e3  # one [1, 16, 8, 8] fp16 tensor crossing
    # The NPU takes the model input from the application on the CPU, the CPU's top-k result from
    # the NPU, and hands its output back: the last kernel pays two crossings.
    assert [layer.transfer_ms for layer in layers] == pytest.approx([one, one, 2 * one])
    assert placed.info().units == {"npu": 2, "cpu": 1}


def test_fp32_kernels_are_placed_past_an_npu_that_has_no_fp32_and_that_is_no_fallback():
    """The NPU runs convolutions, not in float32: the model's precision places them on the GPU
    (a placement); the top-k, which neither accelerator runs at all, falls back."""
    placed = partition(small_model("float32"), edgesdk.get_device("phone"))
    assert placed.units == ["gpu", "cpu", "gpu"]
    assert [(p.op, p.from_unit, p.to_unit) for p in placed.placements] == [("fused_conv2d_add_relu", "npu", "gpu"), ("fused_conv2d1", "npu", "gpu")]
    assert placed.placements[0].reason.startswith("dtype float32 not supported (computes int8")
    assert {(f.op, f.from_unit) for f in placed.fallbacks} == {("topk", "npu"), ("topk", "gpu")}
    assert placed.info().placements == placed.placements
    # Without the top-k nothing falls back: --no-fallback accepts a float32 model on the phone.
    analysis = small_model("float32")
    analysis.kernels[1] = kernel("relu", ["activation"], 0, analysis.kernels[1].inputs, [1, 16, 8, 8])
    assert partition(analysis, edgesdk.get_device("phone"), fallback=False).fallbacks == []


def test_forced_unit_and_no_fallback():
    phone = edgesdk.get_device("phone")
    assert partition(small_model(), phone, unit="cpu").units == ["cpu"] * 3
    with pytest.raises(UserInputError, match="--unit tpu: device 'phone' has units npu, gpu, cpu"):
        partition(small_model(), phone, unit="tpu")
    with pytest.raises(CheckFailed, match=r"kernel\(s\) would fall back from their preferred unit: .*topk"):
        partition(small_model("float16"), phone, fallback=False)


def test_roofline_terms():
    pc = edgesdk.get_device("pc")
    model = small_model()
    estimate = simulate(model, partition(model, pc), pc)
    first = estimate.per_layer[0]
    unit = pc.compute_units["cpu"]
    efficiency = unit.efficiency.get("conv", unit.efficiency["default"])
    assert first.compute_ms == pytest.approx(model.kernels[0].flops / (unit.peak_ops_per_s["float32"] * efficiency) * 1e3)
    assert first.latency_ms == pytest.approx(max(first.compute_ms, first.memory_ms) + unit.launch_overhead_s * 1e3)
    assert estimate.latency_ms == pytest.approx(sum(layer.latency_ms for layer in estimate.per_layer))
    assert estimate.utilisation == {"cpu": pytest.approx(1.0)}
    assert estimate.weight_bytes == 2 * 16 * 16 * 9 * 4  # the shared weight is read by two kernels


def test_a_working_set_over_on_chip_memory_spills_to_dram():
    mcu = edgesdk.get_device("mcu")
    small, large = small_model(side=4), small_model(side=128)
    assert not simulate(small, partition(small, mcu), mcu).per_layer[2].spilled
    spilled = simulate(large, partition(large, mcu), mcu).per_layer[2]
    assert spilled.spilled and spilled.bytes > large.kernels[2].inputs[1].bytes


def test_the_mcu_is_the_slowest_device():
    model = small_model()
    latency = {d.id: simulate(model, partition(model, d), d).latency_ms for d in edgesdk.devices()}
    assert max(latency, key=latency.get) == "mcu"


def test_a_dtype_no_unit_computes_runs_on_the_cpu_widened_to_float32():
    mcu = edgesdk.get_device("mcu")
    assert "float16" not in mcu.compute_units["cpu"].dtypes
    placed = partition(small_model("float16"), mcu)
    assert placed.units == ["cpu", "cpu", "cpu"] and placed.fallbacks == []
    fp16, fp32 = simulate(small_model("float16"), placed, mcu), simulate(small_model("float32"), placed, mcu)
    assert fp16.per_layer[0].compute_ms == pytest.approx(fp32.per_layer[0].compute_ms)  # at the float32 rate


@pytest.mark.parametrize(
    ("packed_dtype", "dtype", "units", "reason"),
    [
        ("int4", "float16", ["npu"], None),  # w4a16: native on the NPU
        ("int4", "int8", ["npu"], None),  # w4a8
        ("vq8", "float16", ["cpu"], "vq weights not native (runs int8, w8a16, w4a8, w4a16, fp16)"),
        (None, "float16", ["npu"], None),  # plain fp16 weights, whatever the kernel is called
    ],
)
def test_packed_weight_kernels_go_where_the_profile_says_their_scheme_is_native(packed_dtype, dtype, units, reason):
    x = Tensor(shape=[1, 16, 8, 8], dtype=dtype, source="input")
    packed = Tensor(shape=[16, 72], dtype="uint8", source="weight", packed_dtype=packed_dtype)
    analysis = ModelAnalysis(kernels=[kernel("fused_conv2d_packed_vq8", ["conv"], 2 * 16 * 144 * 64, [x, packed], [1, 16, 8, 8], dtype)])
    placed = partition(analysis, edgesdk.get_device("phone"))
    assert placed.units == units
    # A weight format the NPU does not run natively is the precision's choice: a placement.
    assert placed.fallbacks == [] and {p.reason for p in placed.placements if p.from_unit == "npu"} == ({reason} if reason else set())


def quantized_chain():
    """conv (int8 multiplies, float out, as a QDQ lowering leaves it) -> mean (float) -> quantize -> matmul."""
    from edgesdk.compile.kernels import LoopNest

    int8_operands = LoopNest(
        iterations=64, reduction=16, inner_extent=8, inner_stride_bytes=1, reduction_extents=[16], reduction_strides_bytes=[64], operand_dtype="int8"
    )
    x = Tensor(shape=[1, 16, 8, 8], dtype="int8", source="input")
    w = Tensor(shape=[16, 16, 1, 1], dtype="int8", source="weight")
    conv = kernel("fused_conv2d_dequantize", ["conv"], 2 * 16 * 16 * 64, [x, w], [1, 16, 8, 8])
    mean = kernel("mean", ["reduce"], 16 * 64, [Tensor(shape=[1, 16, 8, 8], dtype="float32", producer=0)], [1, 16])
    quant = kernel("fused_reshape_quantize", ["elementwise"], 16, [Tensor(shape=[1, 16], dtype="float32", producer=1)], [1, 16], "int8")
    fc = kernel("fused_matmul_dequantize", ["matmul"], 2 * 16 * 10, [Tensor(shape=[1, 16], dtype="int8", producer=2)], [1, 10])
    conv.nest = fc.nest = int8_operands
    return ModelAnalysis(kernels=[conv, mean, quant, fc])


def test_a_float_op_enclosed_by_quantized_kernels_runs_quantized_on_the_npu():
    """A quantized runtime keeps dequantize -> mean -> quantize as one int8 op: no trip to the GPU."""
    analysis = quantized_chain()
    placed = partition(analysis, edgesdk.get_device("phone"))
    assert placed.dtypes == ["int8", "int8", "int8", "int8"]
    assert placed.units == ["npu"] * 4 and placed.placements == [] and placed.fallbacks == []
    # At the model's output too: the runtime dequantizes once, at the boundary.
    assert partition(ModelAnalysis(kernels=analysis.kernels[:2]), edgesdk.get_device("phone")).dtypes == ["int8", "int8"]
    # Next to a layer kept in float32 on purpose (float32 weights), the region is float32 too.
    float_fc = analysis.kernels[3].model_copy(
        update={"nest": None, "inputs": [Tensor(shape=[1, 16], dtype="float32", producer=1), Tensor(shape=[16, 10], dtype="float32", source="weight")]}
    )
    placed = partition(ModelAnalysis(kernels=[*analysis.kernels[:2], float_fc]), edgesdk.get_device("phone"))
    assert placed.dtypes == ["int8", "float32", "float32"] and placed.units == ["npu", "gpu", "gpu"]


def test_rank_counts_dimensions_larger_than_one():
    """A channel shuffle through [1, 2, 24, 28, 28] stays on the rank-4 NPU; a true rank-5 tensor does not."""
    phone = edgesdk.get_device("phone")
    shuffle = kernel("transpose", ["data_movement"], 0, [Tensor(shape=[1, 2, 24, 28, 28], dtype="int8", source="input")], [1, 24, 2, 28, 28], "int8")
    volume = kernel("transpose1", ["data_movement"], 0, [Tensor(shape=[2, 2, 24, 28, 28], dtype="int8", source="input")], [2, 24, 2, 28, 28], "int8")
    placed = partition(ModelAnalysis(kernels=[shuffle, volume]), phone)
    assert placed.units == ["npu", "gpu"]
    assert placed.fallbacks[0].reason == "rank 5 tensors exceed max rank 4"
