import pytest

from edgesdk.compile.kernels import Kernel, ModelAnalysis, Tensor, classify


@pytest.mark.parametrize(
    ("name", "blocks", "weight", "expected"),
    [
        ("fused_conv2d_add_relu", ["conv2d_nchw", "T_add", "compute"], [16, 3, 3, 3], ["conv", "activation", "elementwise"]),
        ("fused_conv2d1_add_relu", ["group_conv2d_nchw"], [16, 1, 3, 3], ["depthwise_conv", "activation", "elementwise"]),
        ("fused_conv2d3", ["group_conv2d_nchw"], [16, 4, 3, 3], ["conv"]),  # grouped, not depthwise
        ("fused_matmul2_add2", [], None, ["matmul", "elementwise"]),
        ("layer_norm", [], None, ["normalization"]),
        ("fused_reshape4_divide1_erf_multiply_add3", [], None, ["activation", "elementwise", "data_movement"]),
        ("max_pool2d", [], None, ["pool"]),
        ("topk", [], None, ["sort"]),
        ("something_new", [], None, ["other"]),
    ],
)
def test_kernel_names_map_to_op_classes(name, blocks, weight, expected):
    assert classify(name, blocks, weight) == expected


def test_kernel_byte_counts_and_totals():
    kernel = Kernel(
        name="fused_matmul_add",
        op_classes=["matmul", "elementwise"],
        flops=1000,
        inputs=[Tensor(shape=[1, 64], dtype="float32", source="input"), Tensor(shape=[64, 64], dtype="int8", source="weight")],
        outputs=[Tensor(shape=[1, 64], dtype="float32")],
    )
    assert kernel.op_class == "matmul"
    assert (kernel.bytes_read, kernel.bytes_written) == (64 * 4 + 64 * 64, 64 * 4)
    assert kernel.dtypes == {"float32", "int8"} and kernel.max_rank == 2
    # A channel shuffle's [1, 2, 24, 28, 28] has rank 4 once its unit batch is squeezed.
    shuffle = Kernel(
        name="transpose",
        op_classes=["data_movement"],
        flops=0,
        inputs=[Tensor(shape=[1, 2, 24, 28, 28], dtype="int8")],
        outputs=[Tensor(shape=[1, 24, 2, 28, 28], dtype="int8")],
    )
    assert shuffle.max_rank == 4
    analysis = ModelAnalysis(kernels=[kernel, kernel])
    assert analysis.flops == 2000
    assert ModelAnalysis.model_validate_json(analysis.model_dump_json()) == analysis


def test_loop_nest_features_of_lowered_kernels(tmp_path):
    """The main block's loops, read off TVM's TIR: a 1x1 convolution over 32x32 planes strides by
    4 KiB along its channel reduction; a depthwise 3x3 reduces over 9 taps; GELU's erf is the
    polynomial the build computes (edgesdk.compile.fast_math): arithmetic, not a library call."""
    import onnx

    from edgesdk.compile.lowering import analyze_kernels, import_onnx
    from edgesdk.verbs.calibrate import MicroOp, suite_model

    ops = [
        MicroOp("pointwise", "Conv", (1, 32, 32, 32), ((16, 32, 1, 1),)),
        MicroOp("depthwise", "Conv", (1, 8, 20, 20), ((8, 1, 3, 3),), (("group", 8), ("pads", (1, 1, 1, 1)), ("strides", (2, 2)))),
        MicroOp("erf", "Erf", (4, 64)),
    ]
    onnx.save(suite_model(ops), tmp_path / "m.onnx")
    mod, _, _, _ = import_onnx(tmp_path / "m.onnx", {f"x{i}": list(op.x_shape) for i, op in enumerate(ops)})
    pointwise, _, depthwise, _, erf, _ = analyze_kernels(mod).kernels
    assert pointwise.nest.reduction == 32 and pointwise.nest.inner_extent == 32
    assert pointwise.nest.reduction_strides_bytes == [32 * 32 * 4] and pointwise.nest.reduction_extents == [32]
    assert pointwise.nest.inner_stride_bytes == 4
    assert depthwise.op_class == "depthwise_conv" and depthwise.nest.reduction == 9
    assert depthwise.nest.inner_extent == 10 and depthwise.nest.inner_stride_bytes == 2 * 4  # stride 2
    assert erf.nest.transcendentals == 0 and erf.nest.reduction == 1 and erf.flops >= 10 * 4 * 64
