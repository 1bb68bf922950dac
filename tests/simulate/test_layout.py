import pytest

import edgesdk
from edgesdk.compile.kernels import ModelAnalysis, Tensor
from edgesdk.simulate.cost_model import simulate
from edgesdk.simulate.layout import padded_ops, padding, streamed_bytes
from edgesdk.simulate.partition import partition
from tests.simulate.test_partition_and_cost_model import kernel


def test_channels_are_padded_to_the_tile_on_the_channel_axis():
    assert padding([1, 3, 224, 224], 32) == pytest.approx(32 / 3)  # NCHW: axis 1
    assert padding([1, 64, 56, 56], 32) == 1.0
    assert padding([1, 197, 40], 32) == pytest.approx(64 / 40)  # features: the innermost axis
    assert padding([1, 3, 224, 224], None) == 1.0
    assert padding([], 32) == 1.0


def image_conv(channels_in: int, dtype: str = "float16", op_class: str = "conv"):
    image = Tensor(shape=[1, channels_in, 64, 64], dtype=dtype, source="input")
    groups = channels_in if op_class == "depthwise_conv" else 1
    out = channels_in if op_class == "depthwise_conv" else 16
    weight = Tensor(shape=[out, channels_in // groups, 3, 3], dtype=dtype, source="weight")
    return kernel("fused_conv2d", [op_class], 2 * out * (channels_in // groups) * 9 * 64 * 64, [image, weight], [1, out, 64, 64], dtype)


def test_a_convolution_computes_its_padded_output_channels_and_packed_reduction():
    stem = image_conv(3)  # 16 output channels: 32 lanes; 3 x 3 x 3 = 27 products reduced: 32
    assert padded_ops(stem, 32) == pytest.approx(stem.ops * 2 * 32 / 27)
    assert padded_ops(stem, None) == stem.ops
    depthwise = image_conv(24, op_class="depthwise_conv")  # reduces over no channel: padded once
    assert padded_ops(depthwise, 32) == pytest.approx(depthwise.ops * 32 / 24)


def test_the_application_hands_inputs_over_flat_and_the_unit_writes_its_layout():
    stem = image_conv(3)
    image, weight = stem.inputs
    assert streamed_bytes(stem, 32) == pytest.approx(image.bytes + weight.bytes + stem.outputs[0].bytes * 2)
    follower = kernel("fused_conv2d1", ["conv"], 1, [Tensor(shape=[1, 3, 8, 8], dtype="int8", producer=0)], [1, 3, 8, 8], "int8")
    assert streamed_bytes(follower, 32) == pytest.approx(2 * 32 * 64)


def test_on_the_phone_a_narrow_convolution_computes_its_padding():
    phone = edgesdk.get_device("phone")
    assert phone.compute_units["npu"].channel_tile == 32
    three, thirty_two = (ModelAnalysis(kernels=[image_conv(c)]) for c in (3, 32))
    compute = [simulate(a, partition(a, phone), phone).per_layer[0].compute_ms for a in (three, thirty_two)]
    # Both pad 16 output channels to 32; 27 products reduce in 32 lanes, 288 in 288.
    assert compute[0] / compute[1] == pytest.approx(three.kernels[0].ops * 32 / 27 / thirty_two.kernels[0].ops)
    pc = edgesdk.get_device("pc")  # a CPU computes what it is given
    compute = [simulate(a, partition(a, pc), pc).per_layer[0].compute_ms for a in (three, thirty_two)]
    assert compute[0] == pytest.approx(compute[1] * 3 / 32)
