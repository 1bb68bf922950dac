import pytest

from edgesdk.kernels import Kernel, ModelAnalysis, Tensor, classify


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
    analysis = ModelAnalysis(kernels=[kernel, kernel])
    assert analysis.flops == 2000
    assert ModelAnalysis.model_validate_json(analysis.model_dump_json()) == analysis
