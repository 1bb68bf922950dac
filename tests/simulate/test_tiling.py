"""edgesdk.simulate.tiling: a kernel that does not fit on chip runs in tiles that do, and pays
for its halos and re-read operands; one that no tile fits spills."""

from __future__ import annotations

import math

import pytest

from edgesdk.compile.kernels import AxisAccess, Kernel, Operand, Tensor, TileSpace
from edgesdk.simulate.tiling import plan


def conv3x3(channels: int = 16, side: int = 64, space: bool = True) -> Kernel:
    """A float32 3x3 convolution, padding 1, channels -> channels, over side x side: its main
    block reads the padded input along rows (yy) and columns (xx), the weights along ff."""
    padded = side + 2
    input_bytes, weight_bytes = channels * padded * padded * 4, channels * channels * 9 * 4
    tiles = TileSpace(
        axes=["ff", "yy", "xx"],
        extents=[channels, side, side],
        operands=[
            Operand(bytes=input_bytes, access=[AxisAccess(axis=1, stride=1, window=3, extent=padded), AxisAccess(axis=2, stride=1, window=3, extent=padded)]),
            Operand(bytes=weight_bytes, access=[AxisAccess(axis=0, stride=1, window=1, extent=channels)]),
        ],
    )
    return Kernel(
        name="fused_conv2d_add",
        op_classes=["conv"],
        flops=2 * channels * channels * 9 * side * side,
        inputs=[
            Tensor(shape=[1, channels, side, side], dtype="float32", source="kernel", producer=0),
            Tensor(shape=[channels, channels, 3, 3], dtype="float32", source="weight"),
        ],
        outputs=[Tensor(shape=[1, channels, side, side], dtype="float32")],
        tile_space=tiles if space else None,
    )


def test_a_kernel_that_fits_moves_nothing_extra():
    kernel = conv3x3()
    assert plan(kernel, kernel.bytes_read + kernel.bytes_written).describe() == "fits"
    assert plan(kernel, 10**9).traffic == 0


def test_rows_split_so_a_tile_fits_pays_for_the_halo():
    kernel = conv3x3(channels=16, side=64)
    output = kernel.bytes_written  # 256 KiB
    tiling = plan(kernel, 200 * 1024)
    assert not tiling.spilled and tiling.tiles > 1
    # Whatever the split, the output is written once and the weights and input read at least once;
    # the halo is what more than once costs, and it is below one extra input.
    input_bytes, weight_bytes = 16 * 66 * 66 * 4, 16 * 16 * 9 * 4
    assert output + input_bytes + weight_bytes <= tiling.traffic < output + 2 * input_bytes + weight_bytes
    # Rows and columns split in two: each of the 4 tiles reads 32 + 2 of the 66 padded rows and
    # columns; the weights follow neither and are read once.
    assert tiling.splits == (("yy", 2), ("xx", 2))
    assert tiling.traffic == output + 4 * math.ceil(input_bytes * (34 / 66) ** 2) + weight_bytes


def test_less_on_chip_memory_never_costs_less():
    kernel = conv3x3(channels=32, side=56)
    traffic = [plan(kernel, size).traffic for size in (10**8, 2**20, 2**18, 2**16, 2**14, 2**12, 2**10, 0)]
    assert traffic == sorted(traffic)
    assert plan(kernel, 0).spilled
    # Untiled, a kernel that does not fit streams its input again for each output row its 3x3
    # window covers (about 3x); tiles that fit cost less.
    streaming = plan(kernel, 2**18, tiling=False)
    assert streaming.spilled and streaming.traffic > 2.5 * 32 * 58 * 58 * 4
    for size in (2**18, 2**16):
        assert plan(kernel, size).tiles > 1 and plan(kernel, size).traffic < streaming.traffic


def test_a_kernel_without_a_tile_space_spills_whole():
    kernel = conv3x3(space=False)
    tiling = plan(kernel, 1024)
    assert tiling.spilled and tiling.traffic == kernel.bytes_read + kernel.bytes_written


@pytest.mark.parametrize("side", [8, 16])
def test_tile_spaces_read_off_lowered_kernels(tmp_path, side):
    """The analysis reads stride and window off TVM's TIR: a stride-2 3x3 convolution reads
    2 input rows per output row and 3 for one output row; a matmul's weights follow its columns."""
    pytest.importorskip("tvm")
    import onnx

    from edgesdk.compile.lowering import analyze_kernels, import_onnx
    from edgesdk.verbs.calibrate import MicroOp, suite_model

    ops = [
        MicroOp("strided", "Conv", (1, 4, side, side), ((8, 4, 3, 3),), (("pads", (1, 1, 1, 1)), ("strides", (2, 2)))),
        MicroOp("matmul", "MatMul", (side, 32), ((32, 24),)),
    ]
    onnx.save(suite_model(ops), tmp_path / "m.onnx")
    mod, _, _, _ = import_onnx(tmp_path / "m.onnx", {f"x{i}": list(op.x_shape) for i, op in enumerate(ops)})
    conv = next(k for k in analyze_kernels(mod).kernels if k.op_class == "conv")
    matmul = next(k for k in analyze_kernels(mod).kernels if k.op_class == "matmul")
    space = conv.tile_space
    assert space is not None and space.extents == [8, side // 2, side // 2]
    rows = [access for operand in space.operands for access in operand.access if access.axis == 1]
    assert [(a.stride, a.window, a.extent) for a in rows] == [(2, 3, side + 2)]
    weights = [operand for operand in space.operands if operand.bytes == 8 * 4 * 9 * 4]
    assert [[a.axis for a in w.access] for w in weights] == [[0]]
    assert matmul.tile_space is not None and matmul.tile_space.extents == [side, 24]
    followed = sorted(tuple(a.axis for a in operand.access) for operand in matmul.tile_space.operands)
    assert followed == [(0,), (1,)]  # the activation follows the rows, the weights the columns
